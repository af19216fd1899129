"""The spatial order of a slice's embeddings: rows sorted along a Hilbert curve over the map.

Every embeddings file the warehouse holds is written by :func:`write_ordered`: its rows sorted by
:func:`hilbert_keys` over (x, y) quantised to a 2^16 x 2^16 grid within the model version's fixed
frame (:class:`MapFrame`, one per version, in ``embeddings/<version>/frame.json``), in row groups of
:data:`MAP_ROW_GROUP_ROWS` rows. Nearby points then share row groups, and each group's min/max
statistics of ``x`` and ``y`` bound a small box: a viewport query reads the groups whose box meets
it and skips the rest (:mod:`umap_assets.map_index`). The sort is global over the slice and runs in
DuckDB under a memory limit, spilling to disk, so memory stays flat whatever the slice's size.

Beside each file goes its id index (``embeddings/<version>/ids/<key>.parquet``: ``id``, ``row``,
sorted by id), so a row is found by id from one small row group instead of a scan: the spatial
order scatters ids over every group, so the embeddings' own id statistics cannot prune.

numpy, pyarrow and DuckDB only: the embedding process (``umap_assets.embed_job``) imports it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path, held_lock, sweep_stale_temps
from .contract import CHUNK_ROWS, parquet_reader, write_options

#: Bits per axis of the curve's grid: 65,536 cells a side, finer than any tile's bin (zoom 8 x 256 bins).
CURVE_BITS = 16
#: Rows per row group of an ordered embeddings file: the unit a viewport query reads or skips.
MAP_ROW_GROUP_ROWS = CHUNK_ROWS
#: Rows per row group of an id index: one group read finds a row.
ID_GROUP_ROWS = 65_536
#: Memory DuckDB may hold while it sorts a slice; past it, it spills to the slice's folder.
SORT_MEMORY = "256MB"
#: The frame is the landmarks' (or first slice's) box, widened by this share of its span on each side.
FRAME_PAD = 0.25
FRAME_FILE = "frame.json"


@dataclass(frozen=True)
class MapFrame:
    """The fixed square of the map one model version's curve keys and tiles are laid on.

    ``x0, y0`` is the lower left corner and ``size`` the side. A row outside it is clamped to its
    edge: its key and its tile bin are the nearest inside (it is still stored and queried exactly).
    """

    x0: float
    y0: float
    size: float

    @classmethod
    def around(cls, xmin: float, xmax: float, ymin: float, ymax: float, pad: float = FRAME_PAD) -> "MapFrame":
        """The square centred on a box, its longer side widened by ``pad`` of itself on each side."""
        side = max(xmax - xmin, ymax - ymin, 1e-6) * (1 + 2 * pad)
        return cls(float((xmin + xmax - side) / 2), float((ymin + ymax - side) / 2), float(side))

    def cells(self, x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The cells of an ``n`` x ``n`` grid over the frame holding each point (int64, clamped)."""
        scale = n / self.size
        cx = np.clip(np.floor((np.asarray(x, np.float64) - self.x0) * scale), 0, n - 1).astype(np.int64)
        cy = np.clip(np.floor((np.asarray(y, np.float64) - self.y0) * scale), 0, n - 1).astype(np.int64)
        return cx, cy

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> "MapFrame":
        """The frame saved at ``path``; ``ValueError`` names the file when it is not one."""
        try:
            raw = json.loads(Path(path).read_text())
            frame = cls(float(raw["x0"]), float(raw["y0"]), float(raw["size"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a map frame (expected x0, y0, size as numbers): {exc}") from None
        if not (np.isfinite([frame.x0, frame.y0, frame.size]).all() and frame.size > 0):
            raise ValueError(f"{path}: a map frame needs finite x0, y0 and a size above 0")
        return frame


def hilbert_keys(cx: np.ndarray, cy: np.ndarray, bits: int = CURVE_BITS) -> np.ndarray:
    """Each cell's distance along the Hilbert curve of a ``2^bits`` grid (int64; the classic ``xy2d``)."""
    x, y = np.asarray(cx, np.int64).copy(), np.asarray(cy, np.int64).copy()
    d = np.zeros(len(x), np.int64)
    last = (1 << bits) - 1
    s = 1 << (bits - 1)
    while s > 0:
        rx, ry = (x & s) > 0, (y & s) > 0
        d += s * s * ((3 * rx.astype(np.int64)) ^ ry.astype(np.int64))
        flip = ~ry & rx
        x, y = np.where(flip, last - x, x), np.where(flip, last - y, y)
        swap = ~ry
        x, y = np.where(swap, y, x), np.where(swap, x, y)
        s >>= 1
    return d


def curve_keys(frame: MapFrame, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The sort key of each point: its cell's place on the Hilbert curve over ``frame``."""
    return hilbert_keys(*frame.cells(x, y, 1 << CURVE_BITS))


def frame_of_landmarks(projector) -> MapFrame | None:
    """The frame of a model from the artifact alone: the box of its coverage landmarks on the map
    (coreset rows chosen by k-center, so they reach the data's edges), widened; None without them."""
    arrays = getattr(projector, "_coverage", None)
    if arrays is None:
        return None
    mean, components, centers = arrays
    xy = projector.transform(mean + centers @ components)[:, :2]
    return MapFrame.around(xy[:, 0].min(), xy[:, 0].max(), xy[:, 1].min(), xy[:, 1].max())


def file_box(path: Path) -> tuple[float, float, float, float] | None:
    """``(xmin, xmax, ymin, ymax)`` of an embeddings file from its row groups' statistics."""
    md = pq.read_metadata(path)
    names = md.schema.to_arrow_schema().names
    x, y = coordinate_columns(names)
    if md.num_rows == 0 or x not in names or y not in names:
        return None
    ix, iy = names.index(x), names.index(y)
    boxes = [(g.column(ix).statistics, g.column(iy).statistics) for g in map(md.row_group, range(md.num_row_groups))]
    return (min(float(sx.min) for sx, _ in boxes), max(float(sx.max) for sx, _ in boxes),
            min(float(sy.min) for _, sy in boxes), max(float(sy.max) for _, sy in boxes))


def version_frame(directory: Path, projector=None, first_file: Path | None = None) -> MapFrame:
    """The frame of the model version whose embeddings are in ``directory``: read from its
    ``frame.json``, or fixed now (under a lock, so every slice of the version gets the same one)
    from the artifact's landmarks, else from ``first_file``'s box."""
    path = Path(directory) / FRAME_FILE
    if path.exists():
        return MapFrame.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with held_lock(path.with_name(f".{FRAME_FILE}.lock"), 60.0, busy=f"{path}: another process holds its lock"):
        if path.exists():
            return MapFrame.load(path)
        frame = frame_of_landmarks(projector) if projector is not None else None
        box = file_box(first_file) if frame is None and first_file is not None else None
        if frame is None:
            frame = MapFrame.around(*box) if box else MapFrame(-1.0, -1.0, 2.0)
        frame.save(path)
    return frame


def coordinate_columns(names: list[str]) -> tuple[str, str]:
    """The two map coordinates of an embeddings schema: ``x, y``, else the first two of ``x0..xk``."""
    return ("x", "y") if "x" in names and "y" in names else ("x0", "x1")


def id_index_path(embeddings_file: Path) -> Path:
    """Where the id index of an embeddings file goes: ``ids/<key>.parquet`` beside it."""
    return embeddings_file.parent / "ids" / embeddings_file.name


@dataclass(frozen=True)
class OrderStats:
    rows: int
    row_groups: int
    seconds: float


def write_ordered(staged: Path, destination: Path, frame: MapFrame, *,
                  row_group_rows: int = MAP_ROW_GROUP_ROWS) -> OrderStats:
    """Write the rows of ``staged`` to ``destination`` (atomically) in curve order, in row groups of
    ``row_group_rows``, with the same schema; then its id index. ``staged`` is left as it was."""
    import time

    started = time.perf_counter()
    schema = pq.read_schema(staged)
    sweep_stale_temps(destination.parent, destination.name)
    rows = groups = 0
    with _sorting_connection(frame, destination.parent) as con, atomic_path(destination) as tmp:
        x, y = coordinate_columns(schema.names)
        reader = con.sql(f"SELECT * FROM read_parquet('{_sql_text(str(staged))}') "
                         f'ORDER BY curve_key("{x}", "{y}"), id').to_arrow_reader(row_group_rows)
        with pq.ParquetWriter(tmp, schema, **write_options(schema)) as writer:
            for table in _regrouped(reader, row_group_rows):
                writer.write_table(table.cast(schema), row_group_size=row_group_rows)
                rows, groups = rows + table.num_rows, groups + 1
    write_id_index(destination)
    return OrderStats(rows, groups, time.perf_counter() - started)


def write_id_index(embeddings_file: Path) -> Path:
    """``ids/<key>.parquet``: each id of ``embeddings_file`` and its row number there, sorted by id."""
    out = id_index_path(embeddings_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(out.parent, out.name)
    schema = pa.schema([pa.field("id", pq.read_schema(embeddings_file).field("id").type), pa.field("row", pa.int64())])
    with duckdb.connect() as con, atomic_path(out) as tmp:
        con.execute(f"SET memory_limit = '{SORT_MEMORY}'")
        con.execute(f"SET temp_directory = '{_sql_text(str(out.parent))}'")
        reader = con.sql(f"SELECT id, file_row_number AS row FROM read_parquet('{_sql_text(str(embeddings_file))}', "
                         "file_row_number = true) ORDER BY id").to_arrow_reader(ID_GROUP_ROWS)
        with pq.ParquetWriter(tmp, schema, **write_options(schema)) as writer:
            for table in _regrouped(reader, ID_GROUP_ROWS):
                writer.write_table(table.cast(schema), row_group_size=ID_GROUP_ROWS)
    return out


def is_ordered(path: Path, frame: MapFrame) -> bool:
    """Whether the rows of ``path`` follow the curve (keys never decrease), read a group at a time."""
    last = -1
    for batch in parquet_reader(path).iter_batches(columns=list(coordinate_columns(pq.read_schema(path).names))):
        keys = curve_keys(frame, batch.column(0).to_numpy(), batch.column(1).to_numpy())
        if len(keys) and (keys[0] < last or np.any(np.diff(keys) < 0)):
            return False
        last = keys[-1] if len(keys) else last
    return True


def _sorting_connection(frame: MapFrame, spill: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB with ``curve_key(x, y)`` (:func:`curve_keys`, vectorised over Arrow), a memory limit,
    and ``spill`` as the folder it spills a large sort to."""
    from duckdb.sqltypes import BIGINT, FLOAT

    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{SORT_MEMORY}'")
    con.execute(f"SET temp_directory = '{_sql_text(str(spill / '.duckdb_spill'))}'")
    con.create_function("curve_key", lambda x, y: pa.array(curve_keys(frame, x.to_numpy(), y.to_numpy())),
                        [FLOAT, FLOAT], BIGINT, type="arrow", side_effects=False)
    return con


def _regrouped(reader, rows: int):
    from .warehouse import regrouped

    return regrouped(reader, rows)


def _sql_text(text: str) -> str:
    return text.replace("'", "''")
