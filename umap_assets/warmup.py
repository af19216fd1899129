"""Compile umap-learn's and pynndescent's numba kernels into their on-disk caches, once, at install.

numba compiles a kernel the first time it runs; the kernels marked ``cache=True`` keep the compiled
code next to their package (in the virtualenv), for every later process. Without this step the
first ``teacher`` fit and the first ``teacher.transform`` of a fresh install pay about 70 s and
100 s of compilation on 2 cores (bench/RESULTS.md). ``make setup`` runs it after the install:

    .venv/bin/python -m umap_assets.warmup

The data are small and random, but of the types the pipeline uses (C-ordered float32 rows, more
than pynndescent's 4,096-row threshold, so the approximate kNN path is the one compiled).
"""

from __future__ import annotations

import time

import numpy as np


def warm_up(n_rows: int = 5_000, n_features: int = 16, seed: int = 0) -> float:
    """Fit a seeded ``umap.UMAP`` and transform rows with it; return the seconds it took."""
    import umap

    started = time.perf_counter()
    X = np.random.default_rng(seed).normal(size=(n_rows, n_features)).astype(np.float32)
    model = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=seed, n_jobs=1, n_epochs=20).fit(X)
    model.transform(X[:256])
    return time.perf_counter() - started


def main() -> None:
    print(f"umap-learn's numba kernels compiled and cached in {warm_up():.0f} s")


if __name__ == "__main__":
    main()
