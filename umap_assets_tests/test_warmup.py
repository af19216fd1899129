"""umap-learn's kernels get numba's on-disk cache (umap_assets.warmup)."""

from numba.core.caching import NullCache

from umap_assets.warmup import UMAP_KERNEL_MODULES, cache_umap_kernels


def test_every_umap_kernel_gets_an_on_disk_cache_once():
    import umap.umap_
    import umap.utils

    cache_umap_kernels()
    for kernel in (umap.umap_.smooth_knn_dist, umap.umap_.compute_membership_strengths, umap.utils.fast_knn_indices,
                   umap.utils.submatrix):
        assert not isinstance(kernel._cache, NullCache), kernel
    assert cache_umap_kernels() == 0  # idempotent: nothing left to turn on
    assert "umap.layouts" in UMAP_KERNEL_MODULES
