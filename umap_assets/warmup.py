"""umap-learn's numba kernels: cached on disk, and compiled once at install.

numba compiles a kernel the first time a process runs it. Kernels declared ``cache=True`` keep the
compiled code next to their package (in the virtualenv) for every later process; umap-learn
declares none of its own that way, so every process that fits or transforms paid about 24 s of
compilation (``fast_knn_indices``, ``smooth_knn_dist``, ``submatrix``,
``compute_membership_strengths``: bench/RESULTS.md). :func:`cache_umap_kernels` turns numba's own
on-disk cache on for them (``Dispatcher.enable_caching``, what ``cache=True`` does), before any is
compiled; the ``teacher`` asset and a teacher record's rebuilt estimator (:mod:`umap_assets.records.teacher`) call it before they touch umap-learn.
pynndescent's ``nn_descent`` takes its distance function as an argument, which numba cannot cache:
it still compiles in each process that builds a kNN index on more than 4,096 rows.

``make setup`` compiles everything once after the install:

    .venv/bin/python -m umap_assets.warmup

The data are small and random, but of the types the pipeline uses (C-ordered float32 rows, more
than pynndescent's 4,096-row threshold for the approximate kNN path, and fewer for the exact one).
"""

from __future__ import annotations

import importlib
import time

import numpy as np

#: umap-learn's modules whose numba kernels get an on-disk cache.
UMAP_KERNEL_MODULES = ("umap.umap_", "umap.utils", "umap.layouts", "umap.spectral", "umap.distances", "umap.sparse")


def cache_umap_kernels() -> int:
    """Turn on numba's on-disk cache for umap-learn's kernels that lack it; return how many.

    Idempotent: a kernel that already has a cache (umap-learn's own ``cache=True`` ones, or one
    turned on by an earlier call) is left alone. The cache is keyed by the kernel's source file and
    numba's version, as for any ``cache=True`` kernel, so an upgrade recompiles.
    """
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    enabled = 0
    for name in UMAP_KERNEL_MODULES:
        module = importlib.import_module(name)
        for kernel in vars(module).values():
            if (isinstance(kernel, Dispatcher) and kernel.__module__ == name
                    and isinstance(kernel._cache, NullCache)):
                kernel.enable_caching()
                enabled += 1
    return enabled


def warm_up(n_rows: int = 5_000, n_features: int = 16, seed: int = 0) -> float:
    """Fit a seeded ``umap.UMAP`` and transform rows with it, on ``n_rows`` rows and on fewer than
    4,096 (umap-learn's exact kNN path for small data); return the seconds it took."""
    cache_umap_kernels()
    import umap

    started = time.perf_counter()
    X = np.random.default_rng(seed).normal(size=(n_rows, n_features)).astype(np.float32)
    for rows in (X, X[:1_000]):
        model = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=seed, n_jobs=1, n_epochs=20).fit(rows)
        model.transform(rows[:256])
    return time.perf_counter() - started


def main() -> None:
    print(f"umap-learn's numba kernels compiled and cached in {warm_up():.0f} s")


if __name__ == "__main__":
    main()
