"""An artifact's bytes from a folded student: :mod:`umap_assets.numerics.compress` quantizes, the
runtime's container (:func:`umap_assets.runtime.write_container`) holds the result.

The numerics know nothing of the file format; the runtime knows nothing of torch. This is where they meet.
"""

from __future__ import annotations

from .numerics.compress import FloatLayer, artifact_contents
from .runtime import write_container


def build_artifact(layers: list[FloatLayer], *, key: bytes | None = None, **options) -> bytes:
    """Quantize ``layers`` (``options``: :func:`~umap_assets.numerics.compress.artifact_contents`'s) and
    serialise them, signed with ``key`` or ``$UMAP_ASSETS_ARTIFACT_KEY`` when set."""
    return write_container(*artifact_contents(layers, **options), key=key)
