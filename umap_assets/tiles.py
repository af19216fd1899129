"""The map's tile pyramid: density per label at zoom levels 0..Z, built one slice at a time.

Zoom ``z`` splits the version's frame (:class:`umap_assets.spatial.MapFrame`) into ``2^z x 2^z``
tiles of ``TILE_BINS x TILE_BINS`` bins. Each slice contributes its own partial pyramid,
``embeddings/<version>/tiles/<key>.parquet`` (columns ``z, tx, ty, bx, by, label, count``: only the
bins it fills, sorted by tile so each row group's statistics name the tiles it holds), written
atomically by :func:`write_partial_tiles`. A new slice adds its partial and touches no other: the
cost of adding a slice is the slice's, not the home's. :class:`TileIndex` answers a tile by summing
the partials' rows for it, reading only the row groups whose statistics can hold it.

A row outside the frame counts in the nearest edge bin. DuckDB aggregates under a memory limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path, is_temp_name, sweep_stale_temps
from .contract import write_options
from .map_index import reading
from .spatial import SORT_MEMORY, MapFrame, coordinate_columns

TILE_BINS = 256
MAX_ZOOM = 8
TILE_GROUP_ROWS = 4_096
TILES_DIR = "tiles"
SCHEMA = pa.schema([pa.field("z", pa.int8()), pa.field("tx", pa.int32()), pa.field("ty", pa.int32()),
                    pa.field("bx", pa.int16()), pa.field("by", pa.int16()), pa.field("label", pa.string()),
                    pa.field("count", pa.int64())])


def tiles_path(embeddings_file: Path) -> Path:
    """Where a slice's partial tiles go: ``tiles/<key>.parquet`` beside its embeddings."""
    return embeddings_file.parent / TILES_DIR / embeddings_file.name


@dataclass(frozen=True)
class TileStats:
    rows: int  # bins written (a bin and label per row)
    tiles: int
    bytes: int
    seconds: float


def write_partial_tiles(embeddings_file: Path, frame: MapFrame, max_zoom: int = MAX_ZOOM) -> TileStats:
    """Aggregate one slice's rows into its partial pyramid at zooms 0..``max_zoom`` (atomically)."""
    started = time.perf_counter()
    destination = tiles_path(embeddings_file)
    destination.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(destination.parent, destination.name)
    names = pq.read_schema(embeddings_file).names
    x, y = coordinate_columns(names)
    label = 'CAST("label" AS VARCHAR)' if "label" in names else "NULL::VARCHAR"
    n = TILE_BINS << max_zoom
    scale = n / frame.size
    cell = "LEAST(GREATEST(floor((CAST(\"{c}\" AS DOUBLE) - {o!r}) * {s!r}), 0), {last})::BIGINT"
    levels = " UNION ALL ".join(
        f"SELECT {z}::TINYINT AS z, ((gx >> {max_zoom - z}) // {TILE_BINS})::INTEGER AS tx, "
        f"((gy >> {max_zoom - z}) // {TILE_BINS})::INTEGER AS ty, ((gx >> {max_zoom - z}) % {TILE_BINS})::SMALLINT AS bx, "
        f"((gy >> {max_zoom - z}) % {TILE_BINS})::SMALLINT AS \"by\", label, sum(n)::BIGINT AS count FROM base GROUP BY ALL"
        for z in range(max_zoom + 1))
    rows = 0
    with duckdb.connect() as con, atomic_path(destination) as tmp:
        con.execute(f"SET memory_limit = '{SORT_MEMORY}'")
        con.execute(f"SET temp_directory = '{str(destination.parent / '.duckdb_spill')}'")
        con.execute(f"CREATE TEMP TABLE base AS SELECT {cell.format(c=x, o=frame.x0, s=scale, last=n - 1)} AS gx, "
                    f"{cell.format(c=y, o=frame.y0, s=scale, last=n - 1)} AS gy, {label} AS label, count(*) AS n "
                    f"FROM read_parquet(?) GROUP BY ALL", [str(embeddings_file)])
        reader = con.sql(f"SELECT * FROM ({levels}) ORDER BY z, tx, ty, \"by\", bx, label").to_arrow_reader(TILE_GROUP_ROWS)
        tiles, last = 0, None
        with pq.ParquetWriter(tmp, SCHEMA, **write_options(SCHEMA)) as writer:
            for batch in reader:
                table = pa.Table.from_batches([batch]).cast(SCHEMA)
                writer.write_table(table, row_group_size=TILE_GROUP_ROWS)
                rows += table.num_rows
                key = ((table.column("z").to_numpy().astype(np.int64) << 52)
                       | (table.column("tx").to_numpy().astype(np.int64) << 26) | table.column("ty").to_numpy())
                tiles += int(np.count_nonzero(np.diff(key))) + int(last != key[0])  # rows come sorted by tile
                last = key[-1]
    return TileStats(rows, tiles, destination.stat().st_size, time.perf_counter() - started)


def tiled_keys(version_dir: Path) -> list[str]:
    directory = Path(version_dir) / TILES_DIR
    return sorted(p.stem for p in directory.glob("*.parquet") if not is_temp_name(p.name)) if directory.exists() else []


@dataclass
class Tile:
    """One tile summed over every partial: per filled bin (``bx``, ``by``) its count and its most
    frequent label (an index into ``labels``; ``None`` for unlabelled rows), and each label's total."""

    z: int
    x: int
    y: int
    bx: np.ndarray
    by: np.ndarray
    count: np.ndarray
    top: np.ndarray
    labels: list[str | None]
    label_totals: list[int]
    groups_read: int = 0

    def to_json(self) -> dict:
        return {"z": self.z, "x": self.x, "y": self.y, "bins": TILE_BINS, "bx": self.bx.tolist(), "by": self.by.tolist(),
                "count": self.count.tolist(), "top": self.top.tolist(),
                "labels": ["unlabelled" if v is None else v for v in self.labels], "label_totals": self.label_totals}


class TileIndex:
    """The partial pyramids of one version, their footers read once (again when the folder changes)."""

    def __init__(self, version_dir: Path):
        self.directory = Path(version_dir) / TILES_DIR
        self._stamp = None
        self._files: list[tuple[Path, pq.FileMetaData, np.ndarray]] = []
        self.refresh()

    @property
    def slices(self) -> list[str]:
        return [p.stem for p, _, _ in self._files]

    def refresh(self) -> None:
        """Read the footers again when a partial was added or replaced since (the folder's time moved)."""
        try:
            stamp = self.directory.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        files = []
        for path in sorted(self.directory.glob("*.parquet")) if stamp is not None else []:
            if is_temp_name(path.name):
                continue
            md = pq.read_metadata(path)
            stats = np.array([[_stat(md, g, c) for c in range(3) for _stat in (_min, _max)]
                              for g in range(md.num_row_groups)], np.int64).reshape(-1, 6)
            files.append((path, md, stats))
        self._files, self._stamp = files, stamp

    def tile(self, z: int, x: int, y: int) -> Tile:
        """Tile (z, x, y), summed over the partials; empty where no row falls."""
        self.refresh()
        pieces, read = [], 0
        for path, md, s in self._files:
            groups = np.flatnonzero((s[:, 0] <= z) & (s[:, 1] >= z) & (s[:, 2] <= x) & (s[:, 3] >= x)
                                    & (s[:, 4] <= y) & (s[:, 5] >= y))
            if not len(groups):
                continue
            read += len(groups)
            with reading(path):
                t = pq.ParquetFile(path, metadata=md, page_checksum_verification=True).read_row_groups(
                    [int(g) for g in groups], columns=["z", "tx", "ty", "bx", "by", "label", "count"])
            mask = ((t.column("z").to_numpy() == z) & (t.column("tx").to_numpy() == x) & (t.column("ty").to_numpy() == y))
            if mask.any():
                pieces.append(t.filter(pa.array(mask)).select(["bx", "by", "label", "count"]))
        return _summed(z, x, y, pa.concat_tables(pieces) if pieces else None, read)


def _min(md, g, c):
    return md.row_group(g).column(c).statistics.min


def _max(md, g, c):
    return md.row_group(g).column(c).statistics.max


def _summed(z: int, x: int, y: int, table: pa.Table | None, read: int) -> Tile:
    if table is None or table.num_rows == 0:
        empty = np.zeros(0, np.int64)
        return Tile(z, x, y, empty, empty, empty, empty, [], [], read)
    codes_arr = table.column("label").combine_chunks().dictionary_encode()
    labels = codes_arr.dictionary.to_pylist()
    codes = codes_arr.indices.fill_null(len(labels)).to_numpy()  # the unlabelled rows: one code past the labels
    if codes_arr.null_count:
        labels.append(None)
    bins = table.column("by").to_numpy().astype(np.int64) * TILE_BINS + table.column("bx").to_numpy()
    counts = table.column("count").to_numpy()
    cells = bins * len(labels) + codes  # one (bin, label) pair: summed over the partials
    pairs, at = np.unique(cells, return_inverse=True)
    summed = np.bincount(at, counts, len(pairs)).astype(np.int64)
    pair_bins, pair_codes = pairs // len(labels), pairs % len(labels)
    filled, first = np.unique(pair_bins, return_index=True)
    total = np.add.reduceat(summed, first)
    order = np.lexsort((-summed, pair_bins))  # within a bin, the largest count first
    top = pair_codes[order][first]
    totals = np.bincount(codes, counts, len(labels)).astype(np.int64).tolist()
    return Tile(z, x, y, filled % TILE_BINS, filled // TILE_BINS, total, top, labels, totals, read)
