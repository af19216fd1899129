"""Throughput: the numpy artifact vs umap-learn's transform, same teacher, same rows, same run.

    .venv/bin/python bench/bench_transform.py [--home data] [--teacher-rows 5000] [--artifact-rows 500000]

Needs a trained home (`make demo` first). umap-learn is timed on `--teacher-rows` rows (it is slow);
the artifact on the same rows, then on `--artifact-rows` rows (the same rows tiled) for a stable rate.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rate(fn, X, repeats=1):
    fn(X[:512])
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(X)
        best = min(best, time.perf_counter() - t)
    return len(X) / best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--home", default=os.environ.get("UMAP_ASSETS_HOME", str(ROOT / "data")))
    p.add_argument("--teacher-rows", type=int, default=5000)
    p.add_argument("--artifact-rows", type=int, default=500_000)
    p.add_argument("--batch-rows", type=int, nargs="+", default=[1024, 2048, 4096, 16384])
    args = p.parse_args()

    from umap_assets.home import Layout
    from umap_assets.model_store import ModelStore
    from umap_assets.sample_rows import feature_rows, read_sample_rows
    from umap_assets.runtime import Projector
    from umap_assets.warehouse import Warehouse

    layout = Layout.at(args.home)
    store = ModelStore(layout)
    from umap_assets.history import newest_versions

    teacher = store.teacher(newest_versions(layout.dagster_home)["teacher"])
    proj = Projector.load(store.artifact_path)
    table = read_sample_rows(Warehouse(layout.warehouse, layout.duckdb_path), "validation", fill_to=None).table
    X = feature_rows(table)
    X = np.resize(X, (max(args.teacher_rows, 1), X.shape[1])).astype(np.float32)
    print(f"input: {X.shape[1]}-d rows from {layout.home}; threads: {os.cpu_count()} cores")

    t_umap = rate(teacher.transform, X[: args.teacher_rows])
    t_art_same = rate(proj.transform, X[: args.teacher_rows], repeats=3)
    big = np.resize(X, (args.artifact_rows, X.shape[1])).astype(np.float32)
    best = (0.0, None)
    for b in args.batch_rows:
        r = rate(lambda A: proj.transform(A, batch_rows=b), big, repeats=3)
        print(f"artifact, batch_rows={b:>6}: {r:>12,.0f} rows/s on {len(big):,} rows")
        best = max(best, (r, b))
    print(f"umap-learn transform: {t_umap:>12,.0f} rows/s on {args.teacher_rows:,} rows")
    print(f"artifact (same rows): {t_art_same:>12,.0f} rows/s")
    print(f"artifact (best, batch_rows={best[1]}): {best[0]:,.0f} rows/s")
    print(f"ratio artifact/umap-learn: {t_art_same / t_umap:,.0f}x (same rows), {best[0] / t_umap:,.0f}x (large batch)")


if __name__ == "__main__":
    main()
