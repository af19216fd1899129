"""Quality on rows no model saw: teacher, float student, artifact, and umap-learn's own transform.

    .venv/bin/python bench/quality.py [--datasets fashion-mnist,digits,synthetic] [--work DIR]

For each data set, the training rows are written as Parquet slices into a fresh home and the
product's own training chain runs on them with its default configuration (`umap-assets run
--until train`: ingest, samples, coreset, teacher, student, artifact, quality_report, model). The
test rows never enter the home. On the test rows the benchmark then scores:

- teacher: umap-learn fitted on the coreset, its `transform`;
- student: the float torch student;
- artifact: the int8 numpy artifact that the pipeline built (promoted or not);
- umap-learn: `UMAP` fitted on every training row, its `transform` (the reference a user would
  otherwise run, and the size and speed the artifact replaces).

Metrics: trustworthiness at k=5 and k=15, continuity at k=15, 5-NN and 10-NN accuracy (a
classifier fitted on the training rows' maps). One table per data set; `--json` writes all figures.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from umap_assets.cli import run_pipeline  # noqa: E402
from umap_assets.demo_data import load_dataset, synthetic_blobs, write_slice  # noqa: E402
from umap_assets.home import Layout  # noqa: E402
from umap_assets.model_store import ModelStore  # noqa: E402
from umap_assets.numerics import metrics  # noqa: E402
from umap_assets.runtime import Projector  # noqa: E402

MAX_TEST_ROWS = 10_000
MAX_KNN_TRAIN_ROWS = 20_000


def split(name: str):
    """(X_train, y_train, X_test, y_test): Fashion-MNIST's own split, else a seeded 80/20 split.

    ``debian-text``: sentence embeddings of Debian's package descriptions (bench/text_embeddings.py);
    every row of its held-out sections joins the test rows, which so include topics never trained on.
    """
    if name == "debian-text":
        return text_split()
    if name == "synthetic":
        X, y = synthetic_blobs(30_000, dim=64, seed=3)
    else:
        data = load_dataset(name, None, allow_download=False, say=lambda _: None)
        if data.name != name:  # load_dataset falls back to digits for the demo; a benchmark must not
            raise SystemExit(f"{name} is not installed here (apt-get install dataset-fashion-mnist)")
        X, y = data.X, data.y
    if name == "fashion-mnist":
        return X[:60_000], y[:60_000], X[60_000:], y[60_000:]
    order = np.random.default_rng(0).permutation(len(X))
    cut = int(0.8 * len(X))
    return X[order[:cut]], y[order[:cut]], X[order[cut:]], y[order[cut:]]


def text_split():
    from text_embeddings import DEFAULT_OUT

    if not DEFAULT_OUT.exists():
        raise SystemExit(f"{DEFAULT_OUT} is missing: run bench/text_embeddings.py first")
    with np.load(DEFAULT_OUT, allow_pickle=False) as f:
        X, y, held_out = f["X"], f["section"], f["held_out"]
    seen = np.flatnonzero(~held_out)
    order = np.random.default_rng(0).permutation(seen)
    cut = int(0.8 * len(order))
    test = np.sort(np.concatenate([order[cut:], np.flatnonzero(held_out)]))
    return X[np.sort(order[:cut])], y[np.sort(order[:cut])], X[test], y[test]


def train_home(home: Path, X: np.ndarray, y: np.ndarray, n_slices: int) -> dict:
    """Write the training rows as slices and run the product's training chain; seconds per stage."""
    layout = Layout.at(str(home)).ensure()
    for i, rows in enumerate(np.array_split(np.arange(len(X)), n_slices)):
        write_slice(layout.incoming / f"train_{i:03d}.parquet", rows, X[rows], y[rows])
    started = time.perf_counter()
    summary = run_pipeline(str(home), until="train", say=lambda line: print("   ", line))
    return {"train_seconds": time.perf_counter() - started, "failed": summary.failed}


def score(E_test, X_test, y_test, E_train, y_train) -> dict:
    out = {f"trust@{k}": metrics.trustworthiness(X_test, E_test, k) for k in (5, 15)}
    out["continuity@15"] = metrics.continuity(X_test, E_test, 15)
    for k in (5, 10):
        out[f"{k}-NN acc"] = metrics.knn_accuracy(E_train, y_train, E_test, y_test, k)
    return out


def timed(fn, X):
    fn(X[:256])
    started = time.perf_counter()
    E = fn(X)
    return E, len(X) / (time.perf_counter() - started)


def evaluate(name: str, work: Path, n_slices: int) -> dict:
    import umap

    from umap_assets.history import newest_versions

    X_tr, y_tr, X_te, y_te = split(name)
    te = metrics.subsample(len(X_te), MAX_TEST_ROWS, 0)
    X_te, y_te = X_te[te], y_te[te]
    knn = metrics.subsample(len(X_tr), MAX_KNN_TRAIN_ROWS, 1)
    print(f"== {name}: {len(X_tr):,} training rows (never the test rows), {len(X_te):,} test rows")
    home = work / name
    run = train_home(home, X_tr, y_tr, n_slices)
    store = ModelStore(Layout.at(str(home)))
    versions = newest_versions(store.layout.dagster_home)
    teacher, student = store.teacher(versions["teacher"]), store.student(versions["student"])
    candidate = store.versioned_artifact_path(versions["artifact"])
    projector = Projector.load(candidate)
    started = time.perf_counter()
    reference = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=0, n_jobs=1).fit(X_tr)
    reference_fit = time.perf_counter() - started
    models = {"teacher": teacher.transform, "student": student.result().transform,
              "artifact": projector.transform, "umap-learn": reference.transform}
    extrap = projector.coverage(X_te) > projector.extrapolation_threshold if projector.has_coverage else None
    rows = {}
    for model, fn in models.items():
        E, rate = timed(fn, X_te)
        E_train = reference.embedding_[knn] if model == "umap-learn" else fn(X_tr[knn])
        rows[model] = {**score(E, X_te, y_te, E_train, y_tr[knn]), "rows/s": rate}
        if extrap is not None and extrap.sum() > 15:  # the rows the artifact's coverage figure calls extrapolated
            rows[model]["extrapolated"] = score(E[extrap], X_te[extrap], y_te[extrap], E_train, y_tr[knn])
    rows["artifact"]["bytes"] = candidate.stat().st_size
    rows["teacher"]["bytes"] = store.teacher_path(teacher.version).stat().st_size
    return {"dataset": name, "train_rows": len(X_tr), "test_rows": len(X_te), "models": rows,
            "extrapolated_rows": int(extrap.sum()) if extrap is not None else 0,
            "pipeline_seconds": run["train_seconds"], "failed": run["failed"],
            "umap_learn_fit_seconds": reference_fit, "artifact_version": projector.version}


def table(result: dict) -> str:
    names = ("trust@5", "trust@15", "continuity@15", "5-NN acc", "10-NN acc", "rows/s")
    models = result["models"]
    lines = [f"{result['dataset']}: {result['train_rows']:,} training rows, {result['test_rows']:,} test rows; "
             f"pipeline {result['pipeline_seconds']:.0f} s, umap-learn fit {result['umap_learn_fit_seconds']:.0f} s",
             "| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for model, m in models.items():
        cells = [f"{m[n]:,.0f}" if n == "rows/s" else f"{m[n]:.4f}" for n in names]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    if result.get("extrapolated_rows"):
        lines.append(f"on the {result['extrapolated_rows']:,} test rows the artifact's coverage figure calls extrapolated:")
        for model, m in models.items():
            if "extrapolated" in m:
                lines.append(f"| {model} (extrapolated) | " + " | ".join(f"{m['extrapolated'][n]:.4f}" for n in names[:-1]) + " | |")
    gap = models["artifact"]["trust@15"] - models["teacher"]["trust@15"]
    lines.append(f"artifact - teacher: trust@15 {gap:+.4f}, trust@5 "
                 f"{models['artifact']['trust@5'] - models['teacher']['trust@5']:+.4f}, 10-NN acc "
                 f"{models['artifact']['10-NN acc'] - models['teacher']['10-NN acc']:+.4f}; artifact "
                 f"{models['artifact']['bytes']:,} bytes; gates failed: {result['failed'] or 'none'}")
    art, ref = models["artifact"], models["umap-learn"]
    versus = (f"artifact - umap-learn's transform: trust@5 {art['trust@5'] - ref['trust@5']:+.4f} (target >= -0.005), "
              f"5-NN acc {art['5-NN acc'] - ref['5-NN acc']:+.4f} (target >= -0.01)")
    if "extrapolated" in art and "extrapolated" in ref:
        versus += f", extrapolated trust@5 {art['extrapolated']['trust@5'] - ref['extrapolated']['trust@5']:+.4f} (target >= -0.02)"
    lines.append(versus)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="fashion-mnist,digits,synthetic")
    parser.add_argument("--slices", type=int, default=6)
    parser.add_argument("--work", default=None, help="where the homes go (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="write every figure to this file")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="umap-quality-"))
    results = []
    for name in args.datasets.split(","):
        results.append(evaluate(name, work, args.slices))
        print(table(results[-1]) + "\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
