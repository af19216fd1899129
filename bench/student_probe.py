"""Probe student recipes on a cached teacher, outside Dagster (the experiments in bench/RESULTS.md).

    .venv/bin/python bench/student_probe.py prep fashion-mnist --density-fraction 0.7
    .venv/bin/python bench/student_probe.py train fashion-mnist --density-fraction 0.7 steps=12000 noise=0.3
    .venv/bin/python bench/student_probe.py teacher fashion-mnist --density-fraction 0.7

`prep` fits the teacher on a coreset of the training rows (Fashion-MNIST: its 60k training rows; digits
and synthetic: a seeded split) and caches it with `teacher.transform` of the test rows and of the
other training rows, and a fuzzy kNN graph over all training rows (`graph=full`). `train` trains one
student recipe (key=value overrides of the defaults below) and prints its scores on the test rows,
which no model saw: trustworthiness at k=5 and 15, 5-NN and 10-NN accuracy, and the kNN overlap with
the teacher's map. `teacher` prints the teacher's own scores.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from umap_assets.numerics import metrics  # noqa: E402
from umap_assets.numerics.coreset import density_coverage_coreset, fit_pca_projection  # noqa: E402

DEFAULTS = dict(graph="teacher", steps=12000, batch=1024, ebatch=1024, neg=5, coord=1.0, gw=0.5, mix=0.5, noise=0.4,
                lr=2e-3, hidden="160,160,160,160,160", pca=64, threads=2, seed=0, a=1.577, b=0.895, rep=1.0, hardneg=0.0, act="relu")


def split(name):
    if name == "synthetic":
        from umap_assets.demo_data import synthetic_blobs
        X, y = synthetic_blobs(30000, seed=3)
        return X, y, np.arange(25000), np.arange(25000, 30000)
    from umap_assets.demo_data import load_dataset
    d = load_dataset(name, None, allow_download=False, say=lambda _: None)
    if name == "fashion-mnist":
        return d.X, d.y, np.arange(60000), np.arange(60000, 70000)
    p = np.random.default_rng(0).permutation(len(d.X))
    return d.X, d.y, p[:1400], p[1400:]


def prep(name, frac, budget, out: Path):
    import umap
    import scipy.sparse as sp
    from umap.umap_ import fuzzy_simplicial_set
    X, y, tr, te = split(name)
    budget = min(budget, int(0.66 * len(tr)))
    Z = fit_pca_projection(X[tr], 32).transform(X[tr]).astype(np.float32)
    core = tr[density_coverage_coreset(Z, budget, density_fraction=frac).indices]
    extra = np.setdiff1d(tr, core)
    teacher = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=0, n_jobs=1).fit(X[core])
    G = sp.coo_matrix(fuzzy_simplicial_set(X[np.concatenate([core, extra])], 15, 0, "euclidean")[0])
    g = sp.coo_matrix(teacher.graph_)
    np.savez(out, X=X, y=y, tr=tr, te=te, core=core, extra=extra, emb=teacher.embedding_,
             Ete=teacher.transform(X[te]), Eex=teacher.transform(X[extra]) if len(extra) else np.empty((0, 2)),
             g_row=g.row, g_col=g.col, g_data=g.data, G_row=G.row, G_col=G.col, G_data=G.data)


def train(D, c):
    torch.manual_seed(c["seed"]); torch.set_num_threads(c["threads"]); rng = np.random.default_rng(c["seed"])
    gen = torch.Generator().manual_seed(c["seed"])
    X = D["X"].astype(np.float32); idx = np.concatenate([D["core"], D["extra"]]); Xd = X[idx]
    Y = np.concatenate([D["emb"], D["Eex"]]).astype(np.float32)
    mean = Xd.mean(0)
    comps = fit_pca_projection(Xd, c["pca"], seed=0).components_.astype(np.float32)
    Zn = (Xd - mean) @ comps.T; sc = float(Zn.std())
    ym = Y.mean(0); ys = float((Y - ym).std())
    Z = torch.from_numpy((Zn / sc).astype(np.float32)); T = torch.from_numpy(((Y - ym) / ys).astype(np.float32))
    key = "g" if c["graph"] == "teacher" else "G"
    r, cc, w = D[f"{key}_row"], D[f"{key}_col"], D[f"{key}_data"]
    cdf = np.cumsum(w.astype(np.float64)); cdf /= cdf[-1]
    layers, prev = [], Z.shape[1]
    for h in (int(h) for h in c["hidden"].split(",")):
        layers += [nn.Linear(prev, h), {"relu": nn.ReLU, "silu": nn.SiLU}[c["act"]]()]; prev = h
    model = nn.Sequential(*layers, nn.Linear(prev, 2))
    n = len(Z); spe = math.ceil(n / c["batch"]); total = c["steps"]
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=c["lr"], total_steps=total, pct_start=0.1, anneal_strategy="cos")
    a, b = c["a"], c["b"]; t0 = time.time(); step = 0
    while step < total:
        perm = torch.from_numpy(rng.permutation(n))
        for s in range(spe):
            if step >= total:
                break
            rows = perm[s * c["batch"]:(s + 1) * c["batch"]]
            e = np.minimum(np.searchsorted(cdf, rng.random(c["ebatch"])), len(cdf) - 1)
            h, t_ = torch.from_numpy(r[e].astype(np.int64)), torch.from_numpy(cc[e].astype(np.int64))
            tt = torch.rand((len(e), 1), generator=gen)
            batch = torch.cat([Z[rows], Z[h], Z[t_], (1 - tt) * Z[h] + tt * Z[t_]])
            if c["noise"] > 0:
                batch = batch + c["noise"] * torch.randn(batch.shape, generator=gen)
            out = model(batch); nr = len(rows); ne = len(e)
            loss = c["coord"] * (out[:nr] - T[rows]).pow(2).sum(1).mean()
            ef, et = out[nr:nr + ne] * ys, out[nr + ne:nr + 2 * ne] * ys
            nf = ef.repeat(c["neg"], 1); nt = et.repeat(c["neg"], 1)[torch.randperm(ne * c["neg"], generator=gen)]
            qp = 1 / (1 + a * (ef - et).pow(2).sum(1).clamp_min(1e-12).pow(b))
            qn = 1 / (1 + a * (nf - nt).pow(2).sum(1).clamp_min(1e-12).pow(b))
            ce = (-torch.log(qp.clamp(1e-4, 1)).sum() - c["rep"] * torch.log((1 - qn).clamp(1e-4, 1)).sum()) / ne
            loss = loss + c["gw"] * ce
            if c["hardneg"] > 0:  # hard negatives: each head's nearest other tail in the map
                with torch.no_grad():
                    d = torch.cdist(ef, et)
                    d.fill_diagonal_(float("inf"))
                    j = d.argmin(1)
                qh = 1 / (1 + a * (ef - et[j]).pow(2).sum(1).clamp_min(1e-12).pow(b))
                loss = loss + c["hardneg"] * (-torch.log((1 - qh).clamp(1e-4, 1))).mean()
            if c["mix"] > 0:
                loss = loss + c["mix"] * (out[nr + 2 * ne:] - ((1 - tt) * T[h] + tt * T[t_])).pow(2).sum(1).mean()
            opt.zero_grad(); loss.backward(); opt.step(); sched.step(); step += 1
    model.eval()

    def f(A):
        with torch.no_grad():
            return model(torch.from_numpy((((A - mean) @ comps.T) / sc).astype(np.float32))).numpy() * ys + ym
    return f, time.time() - t0


def parse_overrides(overrides: list[str]) -> dict:
    """``key=value`` strings as :class:`StudentConfig` keyword arguments, typed like its defaults."""
    import dataclasses

    from umap_assets.numerics.distill import StudentConfig

    fields = {f.name: f for f in dataclasses.fields(StudentConfig)}
    kw = {}
    for kv in overrides:
        k, v = kv.split("=", 1)
        default = fields[k].default
        if isinstance(default, tuple):
            kw[k] = tuple(int(h) for h in v.split(","))
        elif isinstance(default, bool):
            kw[k] = v.lower() in ("1", "true", "yes")
        else:
            kw[k] = type(default)(v) if default is not None else int(v)
    return kw


def product(D, dataset, overrides):
    """Train the product's own student (``distill.train_student``, ``StudentConfig`` plus overrides)."""
    import scipy.sparse as sp
    from umap_assets.numerics.distill import FuzzyGraph, StudentConfig, train_student

    key = "G" if "graph=full" in overrides else "g"  # the fuzzy kNN graph of every training row, not the teacher's
    kw = parse_overrides([kv for kv in overrides if not kv.startswith("graph=")])
    cfg = StudentConfig(**kw)
    idx = np.concatenate([D["core"], D["extra"]])
    X = D["X"].astype(np.float32)
    Y = np.concatenate([D["emb"], D["Eex"]]).astype(np.float32)
    n = len(D["core"]) if key == "g" else len(idx)
    graph = sp.coo_matrix((D[f"{key}_data"], (D[f"{key}_row"], D[f"{key}_col"])), shape=(n, n))
    t0 = time.time()
    result = train_student(X[idx], Y, FuzzyGraph(graph, DEFAULTS["a"], DEFAULTS["b"]), cfg)
    secs = time.time() - t0
    E = result.transform(X[D["te"]])
    print(json.dumps({"dataset": dataset, "mode": "product", "graph": "full" if key == "G" else "teacher", **kw, "seconds": round(secs),
                      **evaluate(D, E, result.transform(X[idx])),
                      "overlap_with_teacher": round(metrics.knn_overlap(E, D["Ete"], 15), 4)}), flush=True)


def evaluate(D, E, Etr):
    Xte = D["X"][D["te"]].astype(np.float32); yte = D["y"][D["te"]]
    out = {f"t{k}": round(metrics.trustworthiness(Xte, E, k), 4) for k in (5, 15)}
    idx = np.concatenate([D["core"], D["extra"]])
    for k in (5, 10):
        out[f"acc{k}"] = round(metrics.knn_accuracy(Etr, D["y"][idx], E, yte, k=k), 4)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["prep", "train", "product", "teacher"])
    p.add_argument("dataset", choices=["fashion-mnist", "digits", "synthetic"])
    p.add_argument("--density-fraction", type=float, default=0.7)
    p.add_argument("--budget", type=int, default=40_000, help="coreset rows (at most 2/3 of the training rows)")
    p.add_argument("--cache", default="bench/out")
    p.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    args = p.parse_intermixed_args()
    path = Path(args.cache) / f"probe_{args.dataset}_b{args.budget}_r{args.density_fraction}.npz"
    if args.command == "prep":
        path.parent.mkdir(parents=True, exist_ok=True)
        return prep(args.dataset, args.density_fraction, args.budget, path)
    D = dict(np.load(path))
    idx = np.concatenate([D["core"], D["extra"]])
    if args.command == "teacher":
        print(json.dumps({"dataset": args.dataset, "model": "teacher", **evaluate(D, D["Ete"], np.concatenate([D["emb"], D["Eex"]]))}))
        return
    if args.command == "product":
        return product(D, args.dataset, args.overrides)
    c = dict(DEFAULTS)
    for kv in args.overrides:
        k, v = kv.split("=", 1)
        c[k] = type(DEFAULTS[k])(v)
    f, secs = train(D, c)
    E = f(D["X"][D["te"]].astype(np.float32))
    print(json.dumps({"dataset": args.dataset, **c, "seconds": round(secs), **evaluate(D, E, f(D["X"][idx].astype(np.float32))),
                      "overlap_with_teacher": round(metrics.knn_overlap(E, D["Ete"], 15), 4)}), flush=True)


if __name__ == "__main__":
    main()
