"""Framework-free numerics: sampling, coreset, distillation, compression, metrics.

Nothing in this package imports Dagster; the assets in :mod:`umap_assets.defs` are a thin layer on top.
"""
