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

Every zoom is also merged in levels (:func:`compact`, log-structured): ``FANOUT`` partials that no
run holds become a level-1 run (``tiles/runs/L1_<first>_<last>.parquet``), ``FANOUT`` level-1 runs a
level-2 run, and so on; a run folded into a larger one is removed. A run names its partials as the
merged file does, and a tile reads the :func:`cover`: the runs that name exactly partials on disk,
the highest level first, and each partial no chosen run holds, so O(FANOUT x levels) files, each
sorted by tile with small row groups. Compaction is not part of adding a slice (asset ``map_tiles``
writes the partial and merges the low zooms: work bounded by the slice); it is its own step (asset
``map_tile_runs``), run after new partials land, and tiles are right before it as after it: until a
run holds a partial, the cover reads that partial itself. A slice is merged once per level: over N
slices the merges cost about their partials times ``log_FANOUT(N)``, amortised a slice's partial
times the levels, though the merge the level's last slice makes due reads the whole level.

A row outside the frame counts in the nearest edge bin. DuckDB aggregates under a memory limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
RUNS = "runs"  # under tiles/: partials merged in levels (:func:`merge_runs`)
FANOUT = 10  # units merged into one run of the next level
BANDS = 64  # a run is summed at most this many columns of tiles at a time: DuckDB's memory stays bounded
RUN_GROUP_ROWS = 16_384  # rows per row group of a run: one tile is a read of one or a few groups
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


@dataclass(frozen=True)
class Run:
    """Partials summed into one file (``tiles/runs/L<level>_<first>_<last>.parquet``), naming them."""

    path: Path
    level: int
    slices: dict[str, list[int]]

    def fits(self, now: dict[str, list[int]]) -> bool:
        """Whether every partial it sums is on disk as it was (not replaced, not removed)."""
        return all(now.get(k) == v for k, v in self.slices.items())


def runs(directory: Path) -> list[Run]:
    """The runs under ``directory`` (a version's ``tiles/``) that name their partials."""
    found = []
    for path in sorted((directory / RUNS).glob("L*_*.parquet")) if (directory / RUNS).exists() else []:
        names = None if is_temp_name(path.name) else merged_slices(path)
        level = path.name[1:].split("_", 1)[0]
        if names and level.isdigit():
            found.append(Run(path, int(level), names))
    return found


def cover(directory: Path, now: dict[str, list[int]] | None = None) -> list[Path]:
    """Files whose rows sum every partial on disk exactly once: the runs that fit, the highest level
    first, then each partial no chosen run holds. A tile reads these files and no other."""
    now = _identities(directory) if now is None else now
    chosen, held = [], set()
    for run in sorted((r for r in runs(directory) if r.fits(now)), key=lambda r: (-r.level, -len(r.slices), r.path.name)):
        if held.isdisjoint(run.slices):
            chosen.append(run.path)
            held |= set(run.slices)
    return chosen + [directory / f"{k}.parquet" for k in now if k not in held]


@dataclass(frozen=True)
class Compaction:
    """What one :func:`compact` did: the runs it wrote (names, levels, bytes), the runs it removed
    (folded into a larger one, or naming a partial no longer on disk), how many files a tile deeper
    than the merged low zooms read before and after (``len(cover)``), and whether merges are left."""

    written: tuple[str, ...] = ()
    levels: tuple[int, ...] = ()
    removed: int = 0
    files_before: int = 0
    files_after: int = 0
    bytes: int = 0
    seconds: float = 0.0
    pending: bool = False  # stopped at ``max_merges`` with a merge still due


def compact(version_dir: Path, fanout: int = FANOUT, max_merges: int | None = None) -> Compaction:
    """Merge the version's partials in levels (log-structured): ``fanout`` partials no run holds become a
    level-1 run, ``fanout`` level-1 runs a level-2 run, and so on; a run whose partials changed is removed,
    and so is a run folded into a larger one. At most ``max_merges`` runs are written (None: every merge
    due). A slice is merged once per level, so over a home of N slices the merges cost about N slices'
    partials times ``log_fanout(N)`` levels: amortised, a slice's partial times the levels; the merge a
    level's last slice makes due reads its level's ``fanout`` units (at 100M rows in 1M-row slices: a
    level-1 merge about 1.5 min, the level-2 one about 6 min). Under a lock: two never interleave."""
    started = time.perf_counter()
    directory = Path(version_dir) / TILES_DIR
    folder = directory / RUNS
    folder.mkdir(parents=True, exist_ok=True)
    written, levels, removed, size = [], [], 0, 0
    with held_lock(folder / ".merge.lock", 3600.0, busy=f"{folder}: another merge has held its lock for an hour"):
        before = len(cover(directory))
        while True:
            now = _identities(directory)
            current = []
            for run in runs(directory):
                if run.fits(now):
                    current.append(run)
                else:
                    run.path.unlink(missing_ok=True)
                    removed += 1
            step = _next_merge(directory, now, current, fanout)
            if step is None or (max_merges is not None and len(written) >= max_merges):
                return Compaction(tuple(written), tuple(levels), removed, before, len(cover(directory, now)), size,
                                  time.perf_counter() - started, step is not None)
            level, sources, names = step
            out = folder / f"L{level}_{min(names)}_{max(names)}.parquet"
            _write_run(out, sources, names)
            written.append(out.name)
            levels.append(level)
            size += out.stat().st_size
            for run in current:
                if set(run.slices) <= set(names):
                    run.path.unlink(missing_ok=True)
                    removed += 1


def merge_runs(version_dir: Path, fanout: int = FANOUT) -> float:
    """Every merge due (:func:`compact`); returns the seconds taken."""
    return compact(version_dir, fanout).seconds


def compaction_due(version_dir: Path, fanout: int = FANOUT) -> bool:
    """Whether :func:`compact` has work: a merge due, or a run naming a partial no longer on disk."""
    directory = Path(version_dir) / TILES_DIR
    now = _identities(directory)
    found = runs(directory)
    current = [r for r in found if r.fits(now)]
    return len(current) < len(found) or _next_merge(directory, now, current, fanout) is not None


def _next_merge(directory: Path, now: dict, current: list[Run], fanout: int):
    """The lowest level with ``fanout`` units no larger run holds: ``(level + 1, their files, their partials)``."""
    held = {k for run in current for k in run.slices}
    units = {0: [(directory / f"{k}.parquet", {k: v}) for k, v in now.items() if k not in held]}
    for run in current:
        if not any(other.level > run.level and set(run.slices) <= set(other.slices) for other in current):
            units.setdefault(run.level, []).append((run.path, run.slices))
    for level in sorted(units):
        batch = sorted(units[level], key=lambda u: min(u[1]))[:fanout]
        if len(batch) >= fanout:
            return level + 1, [path for path, _ in batch], {k: v for _, names in batch for k, v in names.items()}
    return None


def _write_run(out: Path, sources: list[Path], names: dict) -> None:
    """The sum of ``sources``' bins, sorted by tile, written atomically a band of tiles at a time (each
    band's rows summed by DuckDB under its memory limit), naming the partials it holds."""
    top = max(int(_footer(p)[2][:, 1].max(initial=0)) for p in sources)
    schema = SCHEMA.with_metadata({"umap_assets.slices": json.dumps(names, sort_keys=True)})
    files = ", ".join(f"'{_sql_text(str(p))}'" for p in sources)
    sweep_stale_temps(out.parent, out.name)
    with duckdb.connect() as con, atomic_path(out) as tmp:
        con.execute(f"SET memory_limit = '{SORT_MEMORY}'")
        con.execute(f"SET temp_directory = '{_sql_text(str(out.parent / '.duckdb_spill'))}'")
        con.execute("SET enable_progress_bar = false")  # a long merge prints nothing to the terminal
        with pq.ParquetWriter(tmp, schema, **write_options(schema)) as writer:
            for z in range(top + 1):
                width = max(1, (1 << z) // BANDS)
                for lo in range(0, 1 << z, width):
                    reader = con.sql(f"SELECT z, tx, ty, bx, \"by\", label, sum(count)::BIGINT AS count FROM read_parquet([{files}]) "
                                     f"WHERE z = {z} AND tx >= {lo} AND tx < {lo + width} GROUP BY ALL "
                                     "ORDER BY tx, ty, \"by\", bx, label").to_arrow_reader(RUN_GROUP_ROWS)
                    for batch in reader:
                        writer.write_table(pa.Table.from_batches([batch]).cast(SCHEMA), row_group_size=RUN_GROUP_ROWS)


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
    """The tile files of one version: the merged low zooms, and the cover of the partials by runs
    (:func:`cover`); a file's footer and row-group statistics are read once, when it is first in the cover."""

    def __init__(self, version_dir: Path):
        self.directory = Path(version_dir) / TILES_DIR
        self._stamp = None
        self._keys: list[str] = []
        self._files: list[tuple[Path, pq.FileMetaData, np.ndarray]] = []
        self._merged: list[tuple[Path, pq.FileMetaData, np.ndarray]] | None = None
        self._footers: dict[tuple, tuple[Path, pq.FileMetaData, np.ndarray]] = {}
        self.refresh()

    @property
    def slices(self) -> list[str]:
        return list(self._keys)

    @property
    def files_read(self) -> int:
        """How many files a tile deeper than the merged low zooms reads (the cover's size)."""
        self.refresh()
        return len(self._files)

    @property
    def merged(self) -> bool:
        """Whether tiles of zoom 0..``MERGED_ZOOM`` are read from the merged file (it names exactly the partials)."""
        self.refresh()
        return self._merged is not None

    def refresh(self) -> None:
        """Take the cover again when a partial was added, replaced or removed, or a run or the merged file changed."""
        merged = self.directory / MERGED
        now = _identities(self.directory)  # a stat a partial: a time stamp of the folder can miss a quick change
        runs = _identities(self.directory / RUNS)
        stamp = (json.dumps(now, sort_keys=True), json.dumps(runs, sort_keys=True), _mtime(merged))
        if stamp == self._stamp:
            return
        files = [self._footer(path) for path in cover(self.directory, now)]
        fits = merged.exists() and merged_slices(merged) == now
        self._keys, self._files, self._merged = list(now), files, [self._footer(merged)] if fits else None
        self._stamp = stamp

    def _footer(self, path: Path) -> tuple[Path, pq.FileMetaData, np.ndarray]:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._footers:
            if len(self._footers) > 4 * len(self._files) + 64:  # files no longer in the cover
                self._footers.clear()
            self._footers[key] = _footer(path)
        return self._footers[key]

    def bins(self, z: int) -> pa.Table:
        """Every filled bin of zoom ``z`` with its label and count (``gx, gy, label, count``, ``gx`` the bin's
        column over the whole frame), summed over the files a tile of zoom ``z`` reads."""
        self.refresh()
        files = self._merged if self._merged is not None and z <= MERGED_ZOOM else self._files
        pieces = []
        for path, md, s in files:
            groups = np.flatnonzero((s[:, 0] <= z) & (s[:, 1] >= z))
            with reading(path):
                t = pq.ParquetFile(path, metadata=md, page_checksum_verification=True).read_row_groups(
                    [int(g) for g in groups], columns=["z", "tx", "ty", "bx", "by", "label", "count"])
            pieces.append(t.filter(pc.equal(t.column("z"), z)))
        if not pieces:
            return pa.table({"gx": pa.array([], pa.int64()), "gy": pa.array([], pa.int64()),
                             "label": pa.array([], pa.string()), "count": pa.array([], pa.int64())})
        t = pa.concat_tables(pieces)
        t = pa.table({"gx": pc.add(pc.multiply(t.column("tx").cast(pa.int64()), TILE_BINS), t.column("bx").cast(pa.int64())),
                      "gy": pc.add(pc.multiply(t.column("ty").cast(pa.int64()), TILE_BINS), t.column("by").cast(pa.int64())),
                      "label": t.column("label"), "count": t.column("count")})
        summed = t.group_by(["gx", "gy", "label"], use_threads=False).aggregate([("count", "sum")])
        return summed.select(["gx", "gy", "label", "count_sum"]).rename_columns(["gx", "gy", "label", "count"])

    def tile(self, z: int, x: int, y: int) -> Tile:
        """Tile (z, x, y), summed over the cover's files; empty where no row falls."""
        self.refresh()
        try:
            return self._tile(z, x, y)
        except FileNotFoundError:  # a run folded into a larger one between the cover and the read
            self._stamp = None
            self.refresh()
            return self._tile(z, x, y)

    def _tile(self, z: int, x: int, y: int) -> Tile:
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
    rank = np.argsort(np.argsort(["\uffff" if v is None else v for v in labels], kind="stable"))
    order = np.lexsort((rank[pair_codes], -summed, pair_bins))  # within a bin, the largest count first (ties: by name)
    top = pair_codes[order][first]
    totals = np.bincount(codes, counts, len(labels)).astype(np.int64).tolist()
    return Tile(z, x, y, filled % TILE_BINS, filled // TILE_BINS, total, top, labels, totals, read)
