"""Probe: does the student gain from teacher-labelled augmentation rows? (bench/RESULTS.md, session 6)

    .venv/bin/python bench/student_probe.py prep fashion-mnist --density-fraction 0.8 --budget 40000   # once
    .venv/bin/python bench/mixup_probe.py label 40000          # refit the cached teacher, label 40k new rows
    .venv/bin/python bench/mixup_probe.py train mix mix_weight=0 threads=1
    .venv/bin/python bench/mixup_probe.py --dataset digits label 20000   # any cached data set

`label` refits the probe's teacher (the same seed gives the same `embedding_`), then makes two kinds of
new rows and labels them with `teacher.transform`, as umap-learn places any unseen row:
``mix``, ``(1 - t) x_i + t x_j`` for random edges (i, j) of the full-sample kNN graph, t ~ U(0, 0.5);
``noise``, a training row plus Gaussian noise of 0.3 of each feature's standard deviation.
`train KIND[+KIND] key=value...` trains the product's `train_student` on the probe's rows plus those
rows (``none`` for none) and prints the scores on the test rows.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import student_probe  # noqa: E402
from umap_assets.numerics import metrics  # noqa: E402

DATASET = "fashion-mnist"
if sys.argv[1:2] == ["--dataset"]:
    DATASET = sys.argv[2]
    del sys.argv[1:3]
CACHE = ROOT / "bench" / "out" / f"probe_{DATASET}_b40000_r0.8.npz"
AUG = ROOT / "bench" / "out" / f"mixup_{DATASET}.npz"


def label(n: int) -> None:
    import umap

    D = dict(np.load(CACHE))
    X, idx = D["X"].astype(np.float32), np.concatenate([D["core"], D["extra"]])
    teacher = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=0, n_jobs=1).fit(X[D["core"]])
    rng = np.random.default_rng(1)
    e = rng.integers(0, len(D["G_row"]), n)
    t = rng.uniform(0, 0.5, (n, 1)).astype(np.float32)
    Xm = (1 - t) * X[idx[D["G_row"][e]]] + t * X[idx[D["G_col"][e]]]
    Xn = X[idx[rng.integers(0, len(idx), n)]] + 0.3 * X[idx].std(0) * rng.standard_normal((n, X.shape[1])).astype(np.float32)
    started = time.time()
    np.savez(AUG, X_mix=Xm, Y_mix=teacher.transform(Xm), X_noise=Xn, Y_noise=teacher.transform(Xn))
    print(f"labelled {2 * n:,} rows in {time.time() - started:.0f}s")


def train(kinds: str, overrides: list[str]) -> None:
    from umap_assets.numerics.distill import FuzzyGraph, StudentConfig, train_student

    D = dict(np.load(CACHE))
    X, idx = D["X"].astype(np.float32), np.concatenate([D["core"], D["extra"]])
    Xd, Y = X[idx], np.concatenate([D["emb"], D["Eex"]]).astype(np.float32)
    if kinds != "none":
        A = np.load(AUG)
        for kind in kinds.split("+"):
            Xd, Y = np.concatenate([Xd, A[f"X_{kind}"]]), np.concatenate([Y, A[f"Y_{kind}"]]).astype(np.float32)
    kw = student_probe.parse_overrides(overrides)
    n = len(D["core"])
    graph = sp.coo_matrix((D["g_data"], (D["g_row"], D["g_col"])), shape=(n, n))
    started = time.time()
    result = train_student(Xd, Y, FuzzyGraph(graph, student_probe.DEFAULTS["a"], student_probe.DEFAULTS["b"]),
                           StudentConfig(**kw))
    E = result.transform(X[D["te"]])
    print(json.dumps({"dataset": DATASET, "augment": kinds, **kw, "seconds": round(time.time() - started),
                      **student_probe.evaluate(D, E, result.transform(X[idx])),
                      "overlap_with_teacher": round(metrics.knn_overlap(E, D["Ete"], 15), 4)}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "label":
        label(int(sys.argv[2]))
    else:
        train(sys.argv[2], sys.argv[3:])
