"""The map server's routes at any scale (issue 33): ``/api/frame``, ``/api/tile``, ``/api/viewport``,
``/api/neighbours`` and ``/api/select`` (the one box or polygon selection: count per label, ids, a
Parquet or CSV export, the DuckDB query to paste).

Every answer comes from the version the request's ``MapData`` serves: its folder's ordered files
(:mod:`umap_assets.map_index`, every column of a row: its carried ones too) and partial tiles (:mod:`umap_assets.tiles`), so tiles and points name one
model. The server (:mod:`umap_assets.map_server`) dispatches here in one line: :func:`route`.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the server imports this module: no import back at load time
    from .map_server import MapData


class BadQuery(ValueError):
    """A malformed parameter of one of :data:`ROUTES`: the server answers 400 with this line."""

ROUTES = ("/api/frame", "/api/tile", "/api/viewport", "/api/neighbours", "/api/select")
MAX_ZOOM_QUERY = 12
MAX_EXPORT_ROWS = 5_000_000  # rows /api/select writes as a file; larger selections: paste its SQL
MAX_SELECT_CHARS = 4_000  # of a box or polygon parameter
TILE_CACHE = 512  # tiles kept summed per served version


class ScaleIndex:
    """The row-group index and the tile pyramid of one served version, opened once per version."""

    def __init__(self, data: "MapData"):
        from .map_index import MapIndex
        from .spatial import FRAME_FILE, MapFrame
        from .tiles import TileIndex

        directory = data.warehouse.embeddings_dir(data.version)
        self.version = data.version
        self.index = MapIndex(list(data.files))
        self.tiles = TileIndex(directory)
        self.frame = MapFrame.load(directory / FRAME_FILE) if (directory / FRAME_FILE).exists() else None
        self._cache: dict[tuple, dict] = {}
        self._lock = threading.Lock()

    def frame_json(self) -> dict:
        f = self.frame
        return {"version": self.version, "rows": self.index.rows, "tiled_slices": self.tiles.slices,
                "frame": None if f is None else {"x0": f.x0, "y0": f.y0, "size": f.size}, "bins": 256}

    def tile(self, z: int, x: int, y: int) -> dict:
        self.tiles.refresh()
        key = (self.tiles._stamp, z, x, y)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = {**self.tiles.tile(z, x, y).to_json(), "version": self.version}
        with self._lock:
            if len(self._cache) >= TILE_CACHE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = value
        return value


_SCALE: dict[tuple, ScaleIndex] = {}
_SCALE_LOCK = threading.Lock()


def scale_index(data: "MapData") -> ScaleIndex:
    """The :class:`ScaleIndex` of ``data``'s version and files (the two newest are kept)."""
    key = (data.version, data.files)
    with _SCALE_LOCK:
        if key not in _SCALE:
            if len(_SCALE) >= 2:
                _SCALE.pop(next(iter(_SCALE)))
            _SCALE[key] = ScaleIndex(data)
        return _SCALE[key]


def _only(query: dict[str, list[str]], allowed: set[str]) -> None:
    unknown = sorted(set(query) - allowed - {"token"})
    repeated = sorted(name for name, values in query.items() if len(values) > 1)
    if unknown or repeated:
        raise BadQuery(f"unknown parameter {unknown[0][:40]!r}" if unknown else f"parameter {repeated[0]!r} is repeated")


def _integer(query, name: str, lo: int, hi: int, default: int | None = None) -> int:
    text = query.get(name, [None])[0]
    if text is None and default is not None:
        return default
    if text is None or not (text.isascii() and text.isdigit() and len(text) <= 9 and lo <= int(text) <= hi):
        raise BadQuery(f"{name} must be an integer from {lo} to {hi}, not {(text or '')[:20]!r}")
    return int(text)


def _number(query, name: str) -> float:
    text = query.get(name, [""])[0]
    try:
        value = float(text) if len(text) <= 40 else float("nan")
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise BadQuery(f"{name} must be a finite number, not {text[:20]!r}")
    return value


def _numbers(text: str, name: str) -> list[float]:
    if len(text) > MAX_SELECT_CHARS:
        raise BadQuery(f"{name} must be at most {MAX_SELECT_CHARS} characters")
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = [float("nan")]
    if not values or not np.isfinite(values).all():
        raise BadQuery(f"{name} must be comma-separated finite numbers")
    return values


def select_region(query):
    """The region of ``/api/select``: ``box=x0,y0,x1,y1`` or ``polygon=x,y,x,y,...`` (3 to 64 vertices)."""
    from .map_index import MAX_VERTICES, Region

    box, polygon = query.get("box", [None])[0], query.get("polygon", [None])[0]
    if (box is None) == (polygon is None):
        raise BadQuery("give one of box=x0,y0,x1,y1 or polygon=x,y,x,y,...")
    if box is not None:
        values = _numbers(box, "box")
        if len(values) != 4 or values[0] > values[2] or values[1] > values[3]:
            raise BadQuery("box must be x0,y0,x1,y1 with x0 <= x1 and y0 <= y1")
        return Region(box=tuple(values))
    values = _numbers(polygon, "polygon")
    if len(values) % 2 or not 3 <= len(values) // 2 <= MAX_VERTICES:
        raise BadQuery(f"polygon must be 3 to {MAX_VERTICES} x,y pairs")
    return Region(polygon=tuple(zip(values[::2], values[1::2])))


def _columns(table) -> dict:
    """A table as JSON columns; a float that is not finite becomes null."""
    out = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        out[name] = [None if isinstance(v, float) and not np.isfinite(v) else v for v in values]
    return out


def _finite(row: dict) -> dict:
    return {n: None if isinstance(v, float) and not np.isfinite(v) else v for n, v in row.items()}


def route(handler, data: "MapData", path: str, query: dict[str, list[str]]) -> None:
    """Answer one of :data:`ROUTES` through ``handler`` (its ``_json`` and ``_send``); a damaged
    id index or partial tile file is named in one line (the embeddings' own pages were checked at load)."""
    from .contract import DamagedFile
    from .warehouse import home_relative

    try:
        return _scale_answer(handler, data, path, query)
    except DamagedFile as exc:
        where = home_relative(Path(exc.path), data.warehouse.duckdb_path.parent)
        return handler._json({"error": f"{where} is damaged: a page no longer matches its checksum; delete it, "
                                       "and `umap-assets run` tiles the slice again (an id index: its rows are "
                                       "then found by a scan)"}, HTTPStatus.INTERNAL_SERVER_ERROR)


def _scale_answer(handler, data: "MapData", path: str, query: dict[str, list[str]]) -> None:
    scale = scale_index(data)
    if path == "/api/frame":
        _only(query, set())
        return handler._json(scale.frame_json())
    if path == "/api/tile":
        _only(query, {"z", "x", "y"})
        z = _integer(query, "z", 0, MAX_ZOOM_QUERY)
        x, y = _integer(query, "x", 0, 2**z - 1), _integer(query, "y", 0, 2**z - 1)
        return handler._json(scale.tile(z, x, y))
    if path == "/api/viewport":
        from .map_index import MAX_CAP

        _only(query, {"x0", "y0", "x1", "y1", "cap"})
        x0, y0, x1, y1 = (_number(query, n) for n in ("x0", "y0", "x1", "y1"))
        if x0 > x1 or y0 > y1:
            raise BadQuery("the viewport needs x0 <= x1 and y0 <= y1")
        rows = scale.index.viewport(x0, y0, x1, y1, _integer(query, "cap", 1, MAX_CAP, 10_000))
        return handler._json({"version": data.version, "rows": rows.table.num_rows, "complete": rows.complete,
                              "groups_read": rows.groups_read, "groups_total": rows.groups_total,
                              "columns": _columns(rows.table)})
    if path == "/api/neighbours":
        _only(query, {"id", "k", "slice"})
        from .map_server import find_parameters  # /api/find's rule for id, slice and k

        row_id, slice_key, k = find_parameters({n: v for n, v in query.items() if n != "token"})
        found = scale.index.neighbours(row_id, k, slice_key)
        if found is None:
            return handler._json({"error": f"no row with id {row_id[:100]!r}"}, HTTPStatus.NOT_FOUND)
        return handler._json({"version": data.version, "row": _finite(found.row),
                              "neighbours": [_finite(n) for n in found.neighbours], "groups_read": found.groups_read})
    _only(query, {"box", "polygon", "format"})
    region = select_region(query)
    fmt = query.get("format", ["json"])[0]
    if fmt not in ("json", "parquet", "csv", "sql"):
        raise BadQuery(f"format must be json, parquet, csv or sql, not {fmt[:20]!r}")
    if fmt == "sql":
        return handler._send(scale.index.sql(region).encode(), "text/plain; charset=utf-8")
    selection = scale.index.select(region)
    if fmt == "json":
        return handler._json({"version": data.version, "count": selection.count,
                              "per_label": [[k if k is not None else "unlabelled", v] for k, v in selection.per_label.items()],
                              "ids": selection.ids, "ids_shown": len(selection.ids),
                              "carried": scale.index.carried, "rows": [_finite(r) for r in selection.rows],
                              "groups_read": selection.groups_read, "groups_total": selection.groups_total})
    if selection.count > MAX_EXPORT_ROWS:
        raise BadQuery(f"the selection holds {selection.count:,} rows, more than {MAX_EXPORT_ROWS:,} to download; "
                         "use format=sql and run the query in DuckDB")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="umap-assets-select-") as folder:
        out = Path(folder) / f"selection.{fmt}"
        scale.index.export(region, out, fmt)
        body = out.read_bytes()
    return handler._send(body, "application/vnd.apache.parquet" if fmt == "parquet" else "text/csv; charset=utf-8")
