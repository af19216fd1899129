"""Pictures of maps, as PNG bytes for Dagster metadata and the quality report.

:func:`scatter_png` draws a few maps side by side, one point per row, coloured by label: for the
thousands of validation rows of a quality report. :func:`density_png` draws one slice's map from
its Parquet file at any size: it streams the coordinates a row group at a time into a fixed 2-D
histogram, so its memory does not grow with the slice, and shows every row as density.
"""

from __future__ import annotations

import base64
import io

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    return buf.getvalue()


def scatter_png(maps: dict[str, np.ndarray], labels: np.ndarray | None) -> bytes:
    """The maps side by side, a point per row, coloured by ``labels`` (tab10) when given; a row
    whose label is ``None`` is coloured as the label ``unlabelled``."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps), 5), dpi=80)
    names = None if labels is None else np.array(["unlabelled" if v is None else str(v) for v in labels])
    codes = np.unique(names, return_inverse=True)[1] if names is not None else None
    for ax, (name, E) in zip(np.atleast_1d(axes), maps.items()):
        ax.scatter(E[:, 0], E[:, 1], c=codes, s=2, cmap="tab10" if codes is not None else None, alpha=0.7)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return _png(fig)


def map_columns(names: list[str]) -> tuple[str, str]:
    """The two coordinate columns drawn: ``x`` and ``y``, or the first two of ``x0..xk``."""
    return ("x", "y") if {"x", "y"} <= set(names) else ("x0", "x1")


def png_markdown(png: bytes, alt: str) -> str:
    """A PNG as a Markdown image with a data URI, for ``dg.MetadataValue.md`` (the asset page shows it)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def map_extent(path, columns: tuple[str, str] | None = None) -> tuple[float, float, float, float] | None:
    """``(xmin, xmax, ymin, ymax)`` of a Parquet file's two coordinate columns (:func:`map_columns`
    by default), from its row-group statistics when every group has them (no data read), else from
    one streamed pass. None for a file without rows."""
    from .contract import parquet_reader

    return _extent(parquet_reader(path), columns)


def _extent(pf, columns: tuple[str, str] | None) -> tuple[float, float, float, float] | None:
    names = pf.schema_arrow.names
    columns = columns or map_columns(names)
    index = [names.index(c) for c in columns]
    lows, highs = [np.inf, np.inf], [-np.inf, -np.inf]
    for g in range(pf.metadata.num_row_groups):
        group = pf.metadata.row_group(g)
        for axis, i in enumerate(index):
            stats = group.column(i).statistics
            if stats is None or not stats.has_min_max:
                return _streamed_extent(pf, columns)
            lows[axis], highs[axis] = min(lows[axis], stats.min), max(highs[axis], stats.max)
    if not np.isfinite(lows).all():
        return None
    return lows[0], highs[0], lows[1], highs[1]


def _streamed_extent(pf, columns) -> tuple[float, float, float, float] | None:
    lows, highs = np.full(2, np.inf), np.full(2, -np.inf)
    for batch in pf.iter_batches(columns=list(columns), batch_size=1 << 20):
        xy = np.column_stack([batch.column(i).to_numpy() for i in range(2)])
        if len(xy):
            lows, highs = np.minimum(lows, np.nanmin(xy, 0)), np.maximum(highs, np.nanmax(xy, 0))
    return None if not np.isfinite(lows).all() else (lows[0], highs[0], lows[1], highs[1])


def density_grid(path, bins: int = 200) -> tuple[np.ndarray, tuple] | None:
    """Rows per cell of a ``bins`` x ``bins`` grid over a Parquet file's map, streamed a million
    rows at a time; with its extent. None for a file without rows."""
    from .contract import parquet_reader

    pf = parquet_reader(path)
    columns = map_columns(pf.schema_arrow.names)
    extent = _extent(pf, columns)
    if extent is None:
        return None
    xmin, xmax, ymin, ymax = extent
    edges = (np.linspace(xmin, xmax if xmax > xmin else xmin + 1, bins + 1),
             np.linspace(ymin, ymax if ymax > ymin else ymin + 1, bins + 1))
    counts = np.zeros((bins, bins), dtype=np.int64)
    for batch in pf.iter_batches(columns=list(columns), batch_size=1 << 20):
        counts += np.histogram2d(batch.column(0).to_numpy(), batch.column(1).to_numpy(), bins=edges)[0].astype(np.int64)
    return counts, extent


def density_png(path, title: str = "", bins: int = 200) -> bytes | None:
    """Every row of a Parquet file's map as density (log scale), in a small PNG; None without rows."""
    grid = density_grid(path, bins)
    if grid is None:
        return None
    counts, extent = grid
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.2, 3.2), dpi=80)
    ax.imshow(np.log1p(counts.T), origin="lower", extent=extent, cmap="magma", aspect="auto",
              interpolation="nearest")
    ax.set_title(f"{title} ({int(counts.sum()):,} rows)" if title else f"{int(counts.sum()):,} rows", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return _png(fig)
