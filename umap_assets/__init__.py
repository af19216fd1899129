"""umap-assets: one consistent UMAP map of a huge, growing table of vectors, as Dagster assets."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``type: umap_assets.UmapMap`` in a defs.yaml; imported on first use, so ``import umap_assets`` stays light.
    if name == "UmapMap":
        from .component import UmapMap

        return UmapMap
    raise AttributeError(f"module 'umap_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    # dg's registry lists a module's components by dir(): the entry point names this package.
    return sorted([*globals(), "UmapMap"])
