"""What the explorer page asks of ``umap-assets map`` beyond points, density and the scale routes (issue 33).

Framework-free (numpy and DuckDB): the server's routes ``/api/labels`` and ``/api/compare`` call
:func:`answer`, which reads the map the request was given (a ``MapData``: its sample, its files, its
warehouse) and nothing else. A box or lasso selection is not here: the page asks ``/api/select``
(:mod:`umap_assets.map_scale` over :class:`umap_assets.map_index.MapIndex`), one rule for every row.

- **Labels at zoom levels** (:func:`label_placements`): each label's name where its rows are
  densest, more places as the user zooms in. Computed once per map over the seeded sample (a
  uniform draw of every row, so its dense places are every row's), here rather than in the page:
  one answer for every browser, tested in Python, and the page only draws the level it is at.
- **Compare versions** (:func:`compare`): the previous published version that still has its
  embeddings, each sampled row's position in it, and its displacement.
- **Clusters named by a text column** (``/api/clusters``, :mod:`umap_assets.map_clusters`): for
  unlabelled data, the map's dense places named by a carried text column, placed as labels are.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .warehouse import embeddings_view, published_embeddings

if TYPE_CHECKING:  # the server imports this module: no import back at run time
    from .map_server import MapData

LEVELS = 6  # zoom levels of label placements: level z is a grid of 4 * 2**z cells a side
MIN_ROWS = 5  # a place holds at least this many of the label's sampled rows
LABEL_ZOOM = 2  # a tiled map's labels are placed from its tiles at this zoom (1,024 bins a side over the frame)
ROUTES = ("/api/labels", "/api/compare", "/api/clusters")
CLUSTER_CACHE = 8  # cluster answers kept per map (one per column, mode and count asked)


class BadQuery(ValueError):
    """A malformed explorer parameter: the server answers 400 with this line."""


@dataclass(frozen=True)
class Placement:
    """One label's name drawn at ``(x, y)``, the centroid of its ``rows`` sampled rows in one cell."""

    name: str
    x: float
    y: float
    rows: int


def _local_peaks(grid: np.ndarray) -> np.ndarray:
    """Cells at least as full as each of their 8 neighbours (a 3x3 maximum filter, numpy only)."""
    padded = np.pad(grid, 1, constant_values=-1)
    g = grid.shape[0]
    around = np.max([padded[1 + dy:1 + dy + g, 1 + dx:1 + dx + g] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    return (grid == around) & (grid > 0)


def _cells(x: np.ndarray, y: np.ndarray, extent, g: int) -> np.ndarray:
    x0, x1, y0, y1 = extent
    ix = np.clip(((x - x0) / ((x1 - x0) or 1.0) * g).astype(np.int64), 0, g - 1)
    iy = np.clip(((y - y0) / ((y1 - y0) or 1.0) * g).astype(np.int64), 0, g - 1)
    return iy * g + ix


def label_placements(x: np.ndarray, y: np.ndarray, codes: np.ndarray, legend: list[str], extent,
                     levels: int = LEVELS, min_rows: float = MIN_ROWS,
                     weights: np.ndarray | None = None) -> list[list[Placement]]:
    """Per zoom level, where to write each label, the fullest place first: level 0 once per label, at
    its densest cell of a 4x4 grid; level z keeps level z-1's places and adds the label's other local
    peaks of a ``4 * 2**z`` grid holding ``min_rows`` of its rows, a cell or more from its places
    (a name never moves as the user zooms in; more appear). ``unlabelled`` is never written. With
    ``weights``, each point stands for that many rows (a tile's bin and its count)."""
    out: list[list[Placement]] = []
    x0, x1, y0, y1 = extent
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    for level in range(levels):
        g = 4 * 2 ** level
        cell, near = _cells(x, y, extent, g), math.hypot(x1 - x0, y1 - y0) / g
        found = list(out[-1]) if out else []
        for code, name in enumerate(legend):
            mine = codes == code
            if name == "unlabelled" or not mine.any():
                continue
            counts = np.bincount(cell[mine], weights=w[mine], minlength=g * g)
            peaks = np.flatnonzero(_local_peaks(counts.reshape(g, g)).ravel() & (counts >= min(min_rows, counts.max())))
            for p in peaks[np.argsort(-counts[peaks], kind="stable")][:1 if level == 0 else None]:
                rows = mine & (cell == p)
                place = Placement(name, float(np.average(x[rows], weights=w[rows])),
                                  float(np.average(y[rows], weights=w[rows])), int(round(counts[p])))
                if all(q.name != name or math.hypot(q.x - place.x, q.y - place.y) >= near for q in found):
                    found.append(place)
        out.append(sorted(found, key=lambda pl: -pl.rows))
    return out


def tile_placements(data: "MapData") -> list[list[Placement]]:
    """:func:`label_placements` of a tiled map from its tiles' per-label counts at :data:`LABEL_ZOOM`
    (each bin's centre weighted by its count), not from rows; a place needs as many rows as
    ``MIN_ROWS`` sampled rows stand for."""
    from .map_scale import scale_index

    scale = scale_index(data)
    bins = scale.tiles.bins(LABEL_ZOOM)
    side = scale.frame.size / (256 << LABEL_ZOOM)
    x = scale.frame.x0 + (bins.column("gx").to_numpy() + 0.5) * side
    y = scale.frame.y0 + (bins.column("gy").to_numpy() + 0.5) * side
    names = np.asarray(["unlabelled" if v is None else str(v) for v in bins.column("label").to_pylist()], dtype=object)
    legend = sorted(set(names.tolist()))
    codes = np.searchsorted(np.asarray(legend, dtype=object), names) if len(names) else np.zeros(0, np.int64)
    per_row = max(1.0, data.rows / max(data.max_points, 1))
    return label_placements(x, y, codes, legend, data.extent, min_rows=MIN_ROWS * per_row,
                            weights=bins.column("count").to_numpy())


# ---- compare versions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """Where each sampled row lay on the previous version's map (None where it had no row) and how
    far it moved; ``median`` and ``p95`` displacement, and the map's spread (the current extent's
    diagonal) to read them against."""

    current: str
    previous: str | None
    x: list[float | None]
    y: list[float | None]
    displacement: list[float | None]
    median: float | None
    p95: float | None
    spread: float


def previous_version(data: "MapData") -> tuple[str, list[Path]] | None:
    """The newest published version before the served one whose embeddings are still on disk."""
    wh = data.warehouse
    history = published_embeddings(wh).get("history", [])
    for version in reversed(history[:history.index(data.version)] if data.version in history else history):
        if version != data.version and (files := wh.embedding_files(version)):
            return version, files
    return None


def displacement(ids: list[str], slices: list[str], x: np.ndarray, y: np.ndarray, files: list[Path],
                 columns: tuple[str, str] = ("x", "y")) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's ``(x, y)`` in ``files`` (NaN where it is absent) joined on ``(slice, id)``, and its
    distance from ``(x, y)``."""
    import duckdb

    cx, cy = columns
    wanted = pa.table({"pos": np.arange(len(ids)), "slice": pa.array(slices, pa.string()), "id": pa.array(ids, pa.string())})
    with duckdb.connect() as con:
        con.execute(embeddings_view([str(f) for f in files], temp=True))
        con.register("wanted", wanted)
        got = con.execute(f'SELECT w.pos, e."{cx}", e."{cy}" FROM wanted w JOIN embeddings e '
                          "ON e.slice = w.slice AND CAST(e.id AS VARCHAR) = w.id").fetchall()
    px, py = np.full(len(ids), np.nan), np.full(len(ids), np.nan)
    if got:
        pos = np.array([r[0] for r in got])
        px[pos], py[pos] = [r[1] for r in got], [r[2] for r in got]
    return px, py, np.hypot(px - np.asarray(x, float), py - np.asarray(y, float))


def _listed(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else round(float(v), 4) for v in values]


def compare(data: "MapData") -> Comparison:
    """The served map against the previous one, row by sampled row."""
    x0, x1, y0, y1 = data.extent
    spread = float(math.hypot(x1 - x0, y1 - y0))
    previous = previous_version(data)
    if previous is None:
        return Comparison(data.version, None, [], [], [], None, None, spread)
    version, files = previous
    sample = data.sample
    slices = np.asarray(sample["categories"]["slice"]["legend"], dtype=object)[sample["categories"]["slice"]["codes"]]
    px, py, moved = displacement(sample["id"], [str(s) for s in slices], np.asarray(sample["x"]), np.asarray(sample["y"]),
                                 files, data.columns)
    known = moved[~np.isnan(moved)]
    median, p95 = (float(np.median(known)), float(np.percentile(known, 95))) if len(known) else (None, None)
    return Comparison(data.version, version, _listed(px), _listed(py), _listed(moved), median, p95, spread)


# ---- the routes --------------------------------------------------------------------------------


def _placements(data: "MapData") -> list[list[Placement]]:
    cached = getattr(data, "_label_placements", None)
    if cached is None and data.tiled and data.rows > data.max_points and "label" in data.legends():
        # larger than its sample, which then comes from a few row groups: placed from the tiles instead
        cached = data._label_placements = tile_placements(data)
    if cached is None:
        sample = data.sample
        label = sample["categories"].get("label")
        cached = ([] if label is None else
                  label_placements(np.asarray(sample["x"]), np.asarray(sample["y"]), np.asarray(label["codes"]),
                                   label["legend"], data.extent))
        data._label_placements = cached  # one map, one answer: MapData is replaced whole on reload
    return cached


def cluster_parameters(query: dict[str, list[str]], data: "MapData") -> tuple[str, str, int]:
    """``/api/clusters``' ``column`` (a carried text column of the map), ``mode`` (``terms`` or
    ``values``) and ``clusters`` (2 to 50, default 20); :class:`BadQuery` names what is expected."""
    from .map_clusters import MAX_CLUSTERS, MODES

    unknown = sorted(set(query) - {"column", "mode", "clusters", "token"})
    if unknown or any(len(v) > 1 for v in query.values()):
        raise BadQuery(f"unknown parameter {unknown[0][:40]!r}" if unknown else "a parameter is repeated")
    texts = [n for n, kind in data.carried().items() if kind == "text"]
    column = query.get("column", [""])[0]
    if column not in texts:
        raise BadQuery(f"column must be one of the map's carried text columns {texts} (SliceContract.carry), "
                       f"not {column[:40]!r}")
    mode = query.get("mode", ["terms"])[0]
    if mode not in MODES:
        raise BadQuery(f"mode must be one of {list(MODES)}, not {mode[:20]!r}")
    count = query.get("clusters", ["20"])[0]
    if not (count.isascii() and count.isdigit() and len(count) <= 3 and 2 <= int(count) <= MAX_CLUSTERS):
        raise BadQuery(f"clusters must be an integer from 2 to {MAX_CLUSTERS}, not {count[:20]!r}")
    return column, mode, int(count)


def _cluster_answer(query: dict[str, list[str]], data: "MapData") -> dict:
    """Clusters named by a carried text column (:mod:`umap_assets.map_clusters`), once per map and parameters."""
    from .map_clusters import cluster_labels

    key = cluster_parameters(query, data)
    cache = data.__dict__.setdefault("_cluster_answers", {})
    if key not in cache:
        found = cluster_labels(data, *key)
        if len(cache) >= CLUSTER_CACHE:
            cache.pop(next(iter(cache)))
        cache[key] = asdict(found)
    return cache[key]


def answer(path: str, query: dict[str, list[str]], data: "MapData") -> dict:
    """The JSON body of one explorer route (``path`` in :data:`ROUTES`) for the map ``data``."""
    if path == "/api/clusters":
        return _cluster_answer(query, data)
    if path == "/api/labels":
        return {"version": data.version, "levels": [[asdict(p) for p in level] for level in _placements(data)]}
    if path == "/api/compare":
        cached = getattr(data, "_comparison", None)
        if cached is None:  # one join over the previous version's files per map, not per page load
            cached = data._comparison = asdict(compare(data)) | {"version": data.version}
        return cached
    raise BadQuery(f"no explorer route {path[:100]}")
