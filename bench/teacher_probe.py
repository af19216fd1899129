"""How the teacher's quality depends on its coreset (the table in bench/RESULTS.md).

    .venv/bin/python bench/teacher_probe.py n=40000 frac=0.8 [epochs=500] [md=0.1] [nn=15]

Fits umap-learn (seeded, one thread) on a coreset of Fashion-MNIST's 60k training rows: ``n`` rows,
``frac`` of them drawn at random and the rest by k-center, as the ``coreset`` asset does. Scores the
10k test rows no model saw: trustworthiness@5 of ``transform``, and 10-NN accuracy against every
training row (the coreset's ``embedding_`` plus ``transform`` of the others). Appends a JSON line to
bench/out/teacher_probe.jsonl.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from umap_assets.demo_data import load_dataset  # noqa: E402
from umap_assets.numerics import metrics  # noqa: E402
from umap_assets.numerics.coreset import density_coverage_coreset, fit_pca_projection  # noqa: E402


def main() -> None:
    import umap

    kw = dict(a.split("=") for a in sys.argv[1:])
    n = int(kw.get("n", 20000)); frac = float(kw.get("frac", 0.7)); ep = kw.get("epochs"); md = float(kw.get("md", 0.1))
    nn_ = int(kw.get("nn", 15))
    d = load_dataset("fashion-mnist", None, allow_download=False, say=lambda _: None)
    X, y = d.X.astype(np.float32), d.y
    tr, te = np.arange(60000), np.arange(60000, 70000)
    Z = fit_pca_projection(X[tr], 32).transform(X[tr]).astype(np.float32)
    core = tr[density_coverage_coreset(Z, n, density_fraction=frac).indices] if n < 60000 else tr
    rest = np.setdiff1d(tr, core)
    t0 = time.time()
    m = umap.UMAP(n_neighbors=nn_, min_dist=md, random_state=0, n_jobs=1, n_epochs=int(ep) if ep else None).fit(X[core])
    fit = time.time() - t0
    t0 = time.time()
    Er = m.transform(X[rest]) if len(rest) else np.empty((0, 2)); Ete = m.transform(X[te]); tt = time.time() - t0
    Etr = np.concatenate([m.embedding_, Er]); ytr = np.concatenate([y[core], y[rest]])
    out = dict(kw, fit=round(fit, 1), transform=round(tt, 1), t5=round(metrics.trustworthiness(X[te], Ete, 5), 4),
               acc10=round(metrics.knn_accuracy(Etr, ytr, Ete, y[te], 10), 4), acc10_core=round(metrics.knn_accuracy(m.embedding_, y[core], Ete, y[te], 10), 4))
    print(json.dumps(out)); (ROOT / "bench/out").mkdir(exist_ok=True); open(ROOT / "bench/out/teacher_probe.jsonl", "a").write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
