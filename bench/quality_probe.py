"""Probe: run the model chain's numerics on Fashion-MNIST outside Dagster and print the metrics.

    .venv/bin/python bench/quality_probe.py [--epochs N] [--graph-weight W] ...
"""
import argparse, pickle, sys, time
from pathlib import Path
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from umap_assets.demo_data import load_fashion_mnist
from umap_assets.numerics.sampling import stratified_sample
from umap_assets.numerics.coreset import fit_pca_projection, k_center_greedy
from umap_assets.numerics.distill import StudentConfig, train_student
from umap_assets.numerics import compress, metrics
from umap_assets.runtime import Projector

p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=40)
p.add_argument("--graph-weight", type=float, default=0.2)
p.add_argument("--coord-weight", type=float, default=1.0)
p.add_argument("--pca", type=int, default=128)
p.add_argument("--hidden", default="256,256")
p.add_argument("--budget", type=int, default=20000)
p.add_argument("--extra", type=int, default=40000)
p.add_argument("--rate", type=float, default=0.5)
p.add_argument("--noise", type=float, default=0.05)
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--batch", type=int, default=1024)
p.add_argument("--sparsity", type=float, default=0.5)
p.add_argument("--cache", default="/tmp/probe_cache")
args = p.parse_args()

t0 = time.time()
d = load_fashion_mnist(None, allow_download=False)
X, y = d.X, d.y
s = stratified_sample(y, rate=args.rate, floor=50, validation_fraction=0.1, seed=0)
tr = s.indices[~s.validation]; va = s.indices[s.validation]
cache = Path(args.cache); cache.mkdir(exist_ok=True)
tag = f"{args.rate}_{args.budget}"
if (cache / f"teacher_{tag}.pkl").exists():
    teacher, core = pickle.loads((cache / f"teacher_{tag}.pkl").read_bytes())
    print("teacher from cache")
else:
    t = time.time()
    pca = fit_pca_projection(X[tr], 32)
    kc = k_center_greedy(pca.transform(X[tr]).astype(np.float32), args.budget)
    core = tr[kc.indices]
    print(f"coreset {len(core)} in {time.time()-t:.1f}s radius {kc.radius:.2f}")
    import umap
    t = time.time()
    teacher = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=0).fit(X[core])
    print(f"teacher fit {time.time()-t:.1f}s")
    (cache / f"teacher_{tag}.pkl").write_bytes(pickle.dumps((teacher, core)))
print("teacher pickle MB", len(pickle.dumps(teacher)) / 1e6)
rest = np.setdiff1d(tr, core)
extra = rest[: args.extra]
t = time.time()
key = cache / f"extra_{tag}_{len(extra)}.npy"
if key.exists():
    Ye = np.load(key)
else:
    Ye = teacher.transform(X[extra]); np.save(key, Ye)
print(f"teacher transform extra {len(extra)} {time.time()-t:.1f}s")
Xd = np.concatenate([X[core], X[extra]]); Yd = np.concatenate([teacher.embedding_, Ye]).astype(np.float32)
from umap.umap_ import find_ab_params
a, b = find_ab_params(1.0, 0.1)
cfg = StudentConfig(hidden=tuple(int(h) for h in args.hidden.split(",")), input_pca_dim=args.pca, epochs=args.epochs,
                    graph_weight=args.graph_weight, coord_weight=args.coord_weight, noise_std=args.noise,
                    learning_rate=args.lr, batch_size=args.batch)
t = time.time()
res = train_student(Xd, Yd, teacher.graph_, a, b, cfg, log=lambda r: print({k: round(v, 4) for k, v in r.items()}))
print(f"student {time.time()-t:.1f}s best epoch {res.best_epoch}")
t = time.time()
masks = compress.magnitude_masks(res.model, args.sparsity)
ft = train_student(Xd, Yd, teacher.graph_, a, b, StudentConfig(**{**res.config, "epochs": 4, "learning_rate": args.lr / 4, "patience": 10}), init=res, masks=masks)
print(f"finetune {time.time()-t:.1f}s sparsity {compress.sparsity_of(ft.model)}")
blob = compress.build_artifact(compress.fold_layers(ft))
Path("/tmp/probe.uart").write_bytes(blob)
proj = Projector.from_bytes(blob)
print("artifact KB", len(blob) / 1e3)
if (cache / f"val_{tag}.npy").exists():
    Et = np.load(cache / f"val_{tag}.npy")
else:
    Et = teacher.transform(X[va]); np.save(cache / f"val_{tag}.npy", Et)
Es = res.transform(X[va]); Ea = proj.transform(X[va])
Etr_t = Yd; ytr = np.concatenate([y[core], y[extra]])
for name, E, Etr in (("teacher", Et, Etr_t), ("student", Es, res.transform(Xd)), ("artifact", Ea, proj.transform(Xd))):
    m = metrics.embedding_quality(X[va], E, labels=y[va], train_embedding=Etr, train_labels=ytr)
    print(name, {k: round(v, 4) for k, v in m.items()})
print("overlap artifact/teacher", metrics.knn_overlap(Ea, Et), "artifact/student", metrics.knn_overlap(Ea, Es))
print("total", time.time() - t0)
