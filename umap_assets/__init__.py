"""umap-assets: one consistent UMAP map of a huge, growing table of vectors, as Dagster assets."""

__version__ = "0.1.0"
