"""Clusters found on the map, named by a carried text column (issue 33): labels for unlabelled data.

``/api/clusters?column=title`` finds the map's dense places and names each by what its rows say:

1. **Density** (:func:`weighted_points`): every row as density, bounded whatever the map's size: on a
   tiled map its tiles' bins at :data:`CLUSTER_ZOOM` (each bin's centre weighted by its count; no row
   is read), else the page's seeded sample of every row.
2. **Clusters** (:func:`find_clusters`): that density on a :data:`GRID` x :data:`GRID` grid over the
   map, smoothed by a 3x3 mean; the cells above a share of the typical filled cell's density are
   dense, and each 8-connected component of dense cells holding at least :data:`MIN_SHARE` of the
   rows is a cluster (the fullest ``max_clusters``).
3. **Names** (:func:`cluster_texts`, :func:`name_clusters`): up to :data:`ROWS_PER_CLUSTER` rows of each
   cluster read from the map's spatial order (:meth:`umap_assets.map_index.MapIndex.viewport` over the
   cluster's box, only the row groups in it, spread over it), kept where their cell is the
   cluster's; each cluster is named by its most frequent values (``mode=values``) or by its most
   distinctive words against every cluster's rows (``mode=terms``: counts from scikit-learn's
   ``CountVectorizer``, weighted as class-based TF-IDF).
4. **Places** (:func:`umap_assets.map_explore.label_placements`): each name where its cluster is
   densest, more places as the user zooms in, exactly as labels are placed.

Time and memory are bounded by the grid, the tiles' bins and ``max_clusters * ROWS_PER_CLUSTER`` rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from .map_server import MapData

GRID = 96  # cells a side of the grid clusters are found on
CLUSTER_ZOOM = 1  # a tiled map's density for clusters: its tiles' bins at this zoom (512 a side over the frame)
DENSE_SHARE = 0.25  # a cell is dense at this share of the median filled cell's (smoothed) density, or more
MIN_SHARE = 0.01  # a cluster holds at least this share of the map's rows
ROWS_PER_CLUSTER = 2_000  # rows read to name one cluster
MAX_CLUSTERS = 50
NAME_CHARS = 40  # of one value in a name
NAME_SHARE = 0.5  # a name holds the values or terms scoring at least this share of the best one
MODES = ("terms", "values")
TOKEN_PATTERN = r"(?u)\b[^\W\d_]{2,}\b"  # words of two letters or more: no numbers, no ids


@dataclass(frozen=True)
class ClusterGrid:
    """Which cluster each cell of a ``size`` x ``size`` grid over ``extent`` is in (-1: none), and each cluster's rows."""

    extent: tuple[float, float, float, float]  # x0, x1, y0, y1
    size: int
    cells: np.ndarray  # (size * size,) int64, row-major from the lower left (iy * size + ix)
    rows: np.ndarray  # (k,) weighted rows per cluster, fullest first

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x0, x1, y0, y1 = self.extent
        ix = np.clip(((np.asarray(x, float) - x0) / ((x1 - x0) or 1.0) * self.size).astype(np.int64), 0, self.size - 1)
        iy = np.clip(((np.asarray(y, float) - y0) / ((y1 - y0) or 1.0) * self.size).astype(np.int64), 0, self.size - 1)
        return iy * self.size + ix

    def cluster_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.cells[self.cell_of(x, y)]

    def box(self, k: int) -> tuple[float, float, float, float]:
        """The map box ``(x0, y0, x1, y1)`` around cluster ``k``'s cells."""
        at = np.flatnonzero(self.cells == k)
        iy, ix = np.divmod(at, self.size)
        x0, x1, y0, y1 = self.extent
        wx, wy = (x1 - x0) / self.size, (y1 - y0) / self.size
        return x0 + ix.min() * wx, y0 + iy.min() * wy, x0 + (ix.max() + 1) * wx, y0 + (iy.max() + 1) * wy


@dataclass(frozen=True)
class NamedCluster:
    name: str
    rows: int  # rows of the map in it (weighted: every row, on a tiled map)
    read: int  # rows read to name it
    top: list[tuple[str, float]]  # its best values or terms and their scores (count, or c-TF-IDF weight)


def weighted_points(data: "MapData") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, weight)`` standing for every row: a tiled map's bins at :data:`CLUSTER_ZOOM`, else its sample."""
    if data.tiled and data.rows > data.max_points:
        from .map_scale import scale_index

        scale = scale_index(data)
        bins = scale.tiles.bins(CLUSTER_ZOOM).group_by(["gx", "gy"], use_threads=False).aggregate([("count", "sum")])
        side = scale.frame.size / (256 << CLUSTER_ZOOM)
        x = scale.frame.x0 + (bins.column("gx").to_numpy() + 0.5) * side
        y = scale.frame.y0 + (bins.column("gy").to_numpy() + 0.5) * side
        return x, y, bins.column("count_sum").to_numpy().astype(np.float64)
    sample = data.sample
    x, y = np.asarray(sample["x"], np.float64), np.asarray(sample["y"], np.float64)
    return x, y, np.ones(len(x))


def find_clusters(x: np.ndarray, y: np.ndarray, w: np.ndarray, extent, max_clusters: int = 20,
                  size: int = GRID) -> ClusterGrid:
    """The dense places of the weighted points as 8-connected components of dense cells, fullest first."""
    from scipy import ndimage

    grid = ClusterGrid(tuple(float(v) for v in extent), size, np.zeros(0, np.int64), np.zeros(0))
    counts = np.bincount(grid.cell_of(x, y), weights=w, minlength=size * size).reshape(size, size)
    smooth = ndimage.uniform_filter(counts, size=3, mode="constant")
    filled = smooth[counts > 0]
    dense = (counts > 0) & (smooth >= DENSE_SHARE * (np.median(filled) if len(filled) else 0.0))
    components, n = ndimage.label(dense, structure=np.ones((3, 3), bool))
    held = np.bincount(components.ravel(), weights=counts.ravel(), minlength=n + 1)[1:]
    keep = [k for k in np.argsort(-held, kind="stable") if held[k] >= MIN_SHARE * w.sum()][:max_clusters]
    cells = np.full(size * size, -1, np.int64)
    for rank, k in enumerate(keep):
        cells[components.ravel() == k + 1] = rank
    return ClusterGrid(grid.extent, size, cells, held[keep])


def cluster_texts(data: "MapData", grid: ClusterGrid, column: str) -> list[list[str]]:
    """Up to :data:`ROWS_PER_CLUSTER` non-empty values of ``column`` per cluster, from rows whose cell is the cluster's."""
    from .map_scale import scale_index

    index = scale_index(data).index
    out = []
    for k in range(len(grid.rows)):
        x0, y0, x1, y1 = grid.box(k)
        table = index.viewport(x0, y0, x1, y1, cap=4 * ROWS_PER_CLUSTER, columns=[index.x, index.y, column]).table
        mine = grid.cluster_of(table.column(index.x).to_numpy(), table.column(index.y).to_numpy()) == k
        values = [v for v in table.column(column).filter(pa.array(mine)).to_pylist() if v not in (None, "")]
        out.append([str(v) for v in values[:ROWS_PER_CLUSTER]])
    return out


def top_values(texts: list[str], n: int = 2) -> list[tuple[str, float]]:
    """The ``n`` most frequent values (ties by value), each cut to :data:`NAME_CHARS` characters."""
    counts = Counter(t.strip()[:NAME_CHARS] for t in texts if t.strip())
    return [(v, float(c)) for v, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def top_terms(clusters: list[list[str]], n: int = 3) -> list[list[tuple[str, float]]]:
    """Each cluster's ``n`` most distinctive words: class-based TF-IDF over word counts (a word frequent
    in the cluster and rare in the others scores high)."""
    from sklearn.feature_extraction.text import CountVectorizer

    documents = [" ".join(texts) for texts in clusters]
    if not any(d.strip() for d in documents):
        return [[] for _ in clusters]
    # no stop-word list: scikit-learn's holds the number words ("one", "two"), which may be what a cluster
    # is; a word every cluster has ("the") scores low by its weight instead
    vectorizer = CountVectorizer(token_pattern=TOKEN_PATTERN, lowercase=True, max_features=20_000)
    try:
        counts = vectorizer.fit_transform(documents).toarray().astype(np.float64)
    except ValueError:  # only numbers or one-letter words: no vocabulary
        return [[] for _ in clusters]
    words = vectorizer.get_feature_names_out()
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    idf = np.log1p(counts.sum(axis=1).mean() / np.maximum(counts.sum(axis=0), 1))
    score = tf * idf
    return [[(str(words[j]), round(float(row[j]), 4)) for j in np.argsort(-row, kind="stable")[:n] if row[j] > 0]
            for row in score]


def name_clusters(texts: list[list[str]], grid: ClusterGrid, mode: str) -> list[NamedCluster]:
    """Each cluster's name from its texts: its top values or terms scoring at least :data:`NAME_SHARE` of
    the best one, joined; ``cluster <k>`` when it has none."""
    tops = top_terms(texts) if mode == "terms" else [top_values(t) for t in texts]
    named = []
    for k, (top, rows, t) in enumerate(zip(tops, grid.rows, texts)):
        shown = [v for v, score in top if score >= NAME_SHARE * top[0][1]] if top else []
        named.append(NamedCluster(" · ".join(shown) or f"cluster {k + 1}", int(round(rows)), len(t), top))
    return named


@dataclass(frozen=True)
class ClusterLabels:
    """The answer of ``/api/clusters``: the clusters, named, and where to write their names per zoom level."""

    version: str
    column: str
    mode: str
    clusters: list[NamedCluster]
    levels: list[list]  # of umap_assets.map_explore.Placement, as labels are placed


def cluster_labels(data: "MapData", column: str, mode: str = "terms", max_clusters: int = 20) -> ClusterLabels:
    """Find the map's clusters, name them by ``column`` and place the names at zoom levels."""
    from .map_explore import MIN_ROWS, label_placements

    x, y, w = weighted_points(data)
    grid = find_clusters(x, y, w, data.extent, max_clusters)
    named = name_clusters(cluster_texts(data, grid, column), grid, mode)
    codes = grid.cluster_of(x, y)
    codes = np.where(codes < 0, len(named), codes)  # outside every cluster: never written
    per_row = max(1.0, data.rows / max(data.max_points, 1)) if data.tiled and data.rows > data.max_points else 1.0
    levels = label_placements(x, y, codes, [c.name for c in named] + ["unlabelled"], data.extent,
                              min_rows=MIN_ROWS * per_row, weights=w)
    return ClusterLabels(data.version, column, mode, named, levels)
