"""The map's tile pyramid: density per label at zoom levels 0..Z, built one slice at a time.

Zoom ``z`` splits the version's frame (:class:`umap_assets.spatial.MapFrame`) into ``2^z x 2^z``
tiles of ``TILE_BINS x TILE_BINS`` bins. Each slice contributes its own partial pyramid,
``embeddings/<version>/tiles/<key>.parquet`` (columns ``z, tx, ty, bx, by, label, count``: only the
bins it fills, sorted by tile so each row group's statistics name the tiles it holds), written
atomically by :func:`write_partial_tiles`. A new slice adds its partial and touches no other: the
cost of adding a slice is the slice's, not the home's. :class:`TileIndex` answers a tile by summing
the partials' rows for it, reading only the row groups whose statistics can hold it.

The low zooms (0..``MERGED_ZOOM``) also go to one merged file, ``tiles/merged/low.parquet``, the
sum of the partials it names with their identities (:func:`merge_low_zooms`): adding a slice adds its
low levels to it, at a cost bounded by the low levels' bins, not by the home's rows, and a low tile
then reads one file instead of every partial. When the merged file does not name exactly the
partials on disk (one replaced, removed, or not merged yet), tiles are summed from the partials.

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

import json

from .atomic import atomic_path, held_lock, is_temp_name, sweep_stale_temps
from .contract import write_options
from .map_index import reading
from .spatial import SORT_MEMORY, MapFrame, coordinate_columns

TILE_BINS = 256
MAX_ZOOM = 8
TILE_GROUP_ROWS = 4_096
TILES_DIR = "tiles"
MERGED_ZOOM = 3  # zooms 0..3 are kept merged: at most (8 x 256)^2 bins a label at zoom 3
MERGED = Path("merged") / "low.parquet"  # under tiles/: not a slice's partial
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


def _identities(directory: Path) -> dict[str, list[int]]:
    """Each partial on disk: its slice and (size, mtime): a partial replaced since is another one."""
    found = {}
    for path in sorted(directory.glob("*.parquet")) if directory.exists() else []:
        if not is_temp_name(path.name):
            stat = path.stat()
            found[path.stem] = [stat.st_size, stat.st_mtime_ns]
    return found


def merged_slices(path: Path) -> dict[str, list[int]] | None:
    """The partials a merged file sums (as :func:`_identities` names them), or None without one."""
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta.get(b"umap_assets.slices", b"null"))
    except (OSError, ValueError):
        return None


def merge_low_zooms(version_dir: Path) -> float:
    """Add to the merged low zooms the partials it does not hold yet (all of them again when one it
    holds was replaced or removed); returns the seconds taken. Under a lock: merges never interleave."""
    started = time.perf_counter()
    directory = Path(version_dir) / TILES_DIR
    out = directory / MERGED
    with held_lock(out.with_name(".merge.lock"), 600.0, busy=f"{out}: another merge has held its lock for 600s"):
        now, held = _identities(directory), merged_slices(out) if out.exists() else None
        keep = held is not None and all(now.get(k) == v for k, v in held.items())
        adding = sorted(k for k in now if not keep or k not in held)
        if keep and not adding:
            return time.perf_counter() - started
        sources = ([f"SELECT * FROM read_parquet('{_sql_text(str(out))}')"] if keep else []) + [
            f"SELECT * FROM read_parquet('{_sql_text(str(directory / f'{k}.parquet'))}') WHERE z <= {MERGED_ZOOM}"
            for k in adding]
        names = {**(held if keep else {}), **{k: now[k] for k in adding}}
        schema = SCHEMA.with_metadata({"umap_assets.slices": json.dumps(names, sort_keys=True)})
        sweep_stale_temps(out.parent, out.name)
        with duckdb.connect() as con, atomic_path(out) as tmp:
            con.execute(f"SET memory_limit = '{SORT_MEMORY}'")
            reader = con.sql(f"SELECT z, tx, ty, bx, \"by\", label, sum(count)::BIGINT AS count FROM "
                             f"({' UNION ALL '.join(sources)}) GROUP BY ALL ORDER BY z, tx, ty, \"by\", bx, label"
                             ).to_arrow_reader(TILE_GROUP_ROWS)
            with pq.ParquetWriter(tmp, schema, **write_options(schema)) as writer:
                for batch in reader:
                    writer.write_table(pa.Table.from_batches([batch]).cast(SCHEMA), row_group_size=TILE_GROUP_ROWS)
    return time.perf_counter() - started


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


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
        self._merged: list[tuple[Path, pq.FileMetaData, np.ndarray]] | None = None
        self.refresh()

    @property
    def slices(self) -> list[str]:
        return [p.stem for p, _, _ in self._files]

    @property
    def merged(self) -> bool:
        """Whether tiles of zoom 0..``MERGED_ZOOM`` are read from the merged file (it names exactly the partials)."""
        self.refresh()
        return self._merged is not None

    def refresh(self) -> None:
        """Read the footers again when a partial was added, replaced or removed, or the merged file changed."""
        merged = self.directory / MERGED
        now = _identities(self.directory)  # a stat a partial: a time stamp of the folder can miss a quick change
        stamp = (json.dumps(now, sort_keys=True), _mtime(merged))
        if stamp == self._stamp:
            return
        files = [_footer(self.directory / f"{key}.parquet") for key in now]
        fits = merged.exists() and merged_slices(merged) == now
        self._files, self._merged, self._stamp = files, [_footer(merged)] if fits else None, stamp

    def tile(self, z: int, x: int, y: int) -> Tile:
        """Tile (z, x, y), summed over the partials; empty where no row falls."""
        self.refresh()
        pieces, read = [], 0
        files = self._merged if self._merged is not None and z <= MERGED_ZOOM else self._files
        for path, md, s in files:
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


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _footer(path: Path) -> tuple[Path, pq.FileMetaData, np.ndarray]:
    """A tiles file's footer and each row group's min and max of z, tx, ty."""
    md = pq.read_metadata(path)
    stats = np.array([[_stat(md, g, c) for c in range(3) for _stat in (_min, _max)]
                      for g in range(md.num_row_groups)], np.int64).reshape(-1, 6)
    return path, md, stats


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
