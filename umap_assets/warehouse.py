"""The embedded warehouse: canonical Parquet files under ``<home>/warehouse`` plus a DuckDB catalog.

Each asset writes its own Parquet files with write-then-rename, so parallel partitions never touch
the same file and a killed run leaves the previous materialization readable. DuckDB holds only a
small catalog and views over the Parquet files, rebuilt from per-slice JSON records and swapped in
atomically (:func:`publish_catalog`), so no process ever waits on DuckDB's file lock: not parallel
ingests, and not a user who keeps a connection open.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path, held_lock, is_temp_name, sweep_stale_temps, temp_path_for
from .contract import (CHUNK_ROWS, DamagedFile, RefusedRows, SliceError, SliceSpec, SliceSummary, count_labels,
                       is_checksum_error, iter_validated_batches, parquet_reader, write_options)
from .home import Layout

@dataclass(frozen=True)
class Warehouse:
    """Paths of the warehouse tables. ``root`` is ``<home>/warehouse``."""

    root: Path
    duckdb_path: Path

    @classmethod
    def of(cls, layout: Layout) -> Warehouse:
        """The warehouse of a home: ``<home>/warehouse`` and ``<home>/warehouse.duckdb``."""
        return cls(root=layout.warehouse, duckdb_path=layout.duckdb_path)

    def table_dir(self, table: str) -> Path:
        return self.root / table

    def table_path(self, table: str, key: str) -> Path:
        return self.table_dir(table) / f"{key}.parquet"

    def keys(self, table: str) -> list[str]:
        directory = self.table_dir(table)
        if not directory.exists():
            return []
        return sorted(p.stem for p in directory.glob("*.parquet") if not is_temp_name(p.name))

    def files(self, table: str) -> list[Path]:
        return [self.table_path(table, k) for k in self.keys(table)]

    def embeddings_dir(self, version: str) -> Path:
        """The embeddings of every slice by one model: ``embeddings/<artifact version>/<key>.parquet``."""
        return self.table_dir(EMBEDDINGS) / version

    def embeddings_path(self, version: str, key: str) -> Path:
        return self.embeddings_dir(version) / f"{key}.parquet"

    def slice_map_files(self, version: str, key: str) -> list[Path]:
        """One slice's files of one version: its embeddings, their id index and their partial tiles
        (``ids/<key>.parquet``, ``tiles/<key>.parquet``: :mod:`umap_assets.spatial`, :mod:`umap_assets.tiles`)."""
        directory = self.embeddings_dir(version)
        return [directory / f"{key}.parquet", directory / "ids" / f"{key}.parquet", directory / "tiles" / f"{key}.parquet"]

    def embedded_keys(self, version: str) -> list[str]:
        directory = self.embeddings_dir(version)
        return sorted(p.stem for p in directory.glob("*.parquet") if not is_temp_name(p.name)) if directory.exists() else []

    def embedding_files(self, version: str) -> list[Path]:
        """Every slice's finished embeddings file of one version (no writer's temp file)."""
        return [self.embeddings_path(version, key) for key in self.embedded_keys(version)]


def write_canonical_slice(
    source: Path,
    destination: Path,
    spec: SliceSpec = SliceSpec(),
    *,
    expected_dim: int | None = None,
    batch_rows: int = CHUNK_ROWS,
    unique_in_home: bool = False,
) -> SliceSummary:
    """Validate ``source`` chunk by chunk and write it in canonical form to ``destination``.

    Nothing reaches ``destination`` unless every check passed: the batches go to a temporary file
    which is renamed into place only after the last check (duplicate ids) is done. Row groups hold
    ``batch_rows`` rows whatever the source's were, so every reader streams the copy in whole groups
    (:func:`umap_assets.contract.iter_chunks`). With ``unique_in_home``, rows whose ids are already
    in another file of ``destination``'s folder are left out (``summary.refused``), checked and
    renamed under one lock so that two slices ingested at once never both keep an id; a slice left
    with no row raises :class:`SliceError`.
    """
    sweep_stale_temps(destination.parent, destination.name)
    summary = SliceSummary()
    staged = temp_path_for(destination)
    try:
        _write_validated(source, staged, spec, expected_dim, batch_rows, summary)
        with _ids_lock(destination.parent, unique_in_home), atomic_path(destination) as tmp:
            refused = _known_ids(staged, destination) if unique_in_home else None
            if refused is None:
                staged.replace(tmp)
            else:
                _write_without(staged, tmp, refused, batch_rows, summary, source)
    finally:
        staged.unlink(missing_ok=True)
    return summary


def _write_validated(source: Path, tmp: Path, spec: SliceSpec, expected_dim: int | None, batch_rows: int,
                     summary: SliceSummary) -> None:
    destination = tmp.parent
    destination.mkdir(parents=True, exist_ok=True)
    writer: pq.ParquetWriter | None = None
    try:
        batches = iter_validated_batches(source, spec, expected_dim=expected_dim, batch_rows=batch_rows,
                                         summary=summary)
        for table in regrouped((batch.to_arrow() for batch in batches), batch_rows):
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, **write_options(table.schema))
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def _ids_lock(directory: Path, wanted: bool):
    import contextlib

    if not wanted:
        return contextlib.nullcontext()
    path = directory.parent / f".{directory.name}.ids.lock"  # beside the folder: nothing but slices in it
    return held_lock(path, 600.0, busy=f"{path}: another ingest has held the id check for over 600s")


def _known_ids(staged: Path, destination: Path) -> tuple[pa.Array, str] | None:
    """The ids of ``staged`` already in another slice of ``destination``'s folder (sorted), and the
    slice holding the first; None when there are none."""
    others = [p for p in destination.parent.glob("*.parquet") if p.name != destination.name and not is_temp_name(p.name)]
    if not others:
        return None
    with duckdb.connect() as con:
        found = con.sql(
            "SELECT s.id, regexp_extract(o.filename, '([^/]+)[.]parquet$', 1) AS owner "
            "FROM read_parquet($staged) s JOIN read_parquet($others, filename = true) o ON s.id = o.id ORDER BY s.id",
            params={"staged": str(staged), "others": [str(p) for p in others]}).to_arrow_table()
    if found.num_rows == 0:
        return None
    return found.column("id").combine_chunks(), found.column("owner")[0].as_py()


def _write_without(staged: Path, tmp: Path, refused: tuple[pa.Array, str], batch_rows: int,
                   summary: SliceSummary, source: Path) -> None:
    """Copy ``staged`` to ``tmp`` without the rows whose ids are in ``refused``; count what is left."""
    import pyarrow.compute as pc

    ids, owner = refused
    summary.refused = RefusedRows(len(ids), ids.slice(0, 5).to_pylist(), owner)
    if len(ids) >= summary.rows:
        raise SliceError(source, f"every row's id is already in the home (slice '{owner}' holds id "
                                 f"{ids[0].as_py()!r}); nothing left to ingest")
    reader = parquet_reader(staged)
    counts: dict[str, int] = {}
    unlabelled = 0
    with pq.ParquetWriter(tmp, reader.schema_arrow, **write_options(reader.schema_arrow)) as writer:
        kept = (b.filter(pc.invert(pc.is_in(b.column("id"), value_set=ids))) for b in reader.iter_batches(batch_rows))
        for table in regrouped(kept, batch_rows):
            writer.write_table(table)
            if "label" in table.column_names:
                unlabelled += count_labels(table.column("label"), counts)
    summary.rows -= len(ids)
    if "label" in reader.schema_arrow.names:  # the labels of the rows kept
        summary.label_counts, summary.unlabelled = dict(sorted(counts.items())), unlabelled


def regrouped(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """The rows of ``batches`` in order, as tables of ``rows`` rows (the last one may be shorter)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending)


def write_table(table: pa.Table, destination: Path) -> int:
    """Write ``table`` atomically, in row groups of :data:`~umap_assets.contract.CHUNK_ROWS`; returns its size in bytes."""
    sweep_stale_temps(destination.parent, destination.name)
    with atomic_path(destination) as tmp:
        pq.write_table(table, tmp, row_group_size=CHUNK_ROWS, **write_options(table.schema))
    return destination.stat().st_size


def take_rows(
    path: Path, positions: np.ndarray, columns: list[str] | None = None, *, batch_rows: int = CHUNK_ROWS
) -> pa.Table:
    """The rows at sorted, unique ``positions`` of a Parquet file, in that order.

    Reads one batch at a time and skips row groups that hold none of the positions, so memory
    holds the chosen rows and one batch, never the whole file.
    """
    pf = parquet_reader(path)
    positions = np.asarray(positions, dtype=np.int64)
    if len(positions) and (np.any(np.diff(positions) <= 0) or positions[0] < 0
                           or positions[-1] >= pf.metadata.num_rows):
        raise ValueError(f"{path}: positions must be sorted, unique and below {pf.metadata.num_rows}")
    try:
        return _take(pf, positions, columns, batch_rows)
    except OSError as exc:
        raise (DamagedFile(path, exc) if is_checksum_error(exc) else exc) from exc


def _take(pf: pq.ParquetFile, positions: np.ndarray, columns: list[str] | None, batch_rows: int) -> pa.Table:
    pieces: list[pa.Table] = []
    start = 0
    for group in range(pf.num_row_groups):
        n = pf.metadata.row_group(group).num_rows
        lo, hi = np.searchsorted(positions, [start, start + n])
        offset = start
        start += n
        if hi == lo:
            continue
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns):
            b_lo, b_hi = np.searchsorted(positions, [offset, offset + batch.num_rows])
            if b_hi > b_lo:
                pieces.append(pa.Table.from_batches([batch.take(pa.array(positions[b_lo:b_hi] - offset))]))
            offset += batch.num_rows
    if not pieces:
        schema = pf.schema_arrow
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        return schema.empty_table()
    return pa.concat_tables(pieces)


def record_slice(wh: Warehouse, key: str, metadata: dict) -> None:
    """Write one slice's catalog record (``warehouse/catalog/<key>.json``) atomically; no lock taken."""
    record = {"key": key, **metadata, "ingested_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with atomic_path(wh.table_dir(CATALOG) / f"{key}.json") as tmp:
        tmp.write_text(json.dumps(record, sort_keys=True))


def _catalog_lock(wh: Warehouse, timeout_s: float):
    """Serialise catalog rebuilds between processes; readers never take this lock."""
    path = wh.root / ".catalog.lock"
    return held_lock(path, timeout_s, busy=f"{path}: another process has been rebuilding the DuckDB catalog for over "
                                           f"{timeout_s:.0f}s; if no umap-assets process is running, delete this file")


def publish_catalog(wh: Warehouse, *, timeout_s: float = 60.0) -> Path:
    """Rebuild ``warehouse.duckdb`` from the catalog records and swap it in atomically.

    The new file is written under a temporary name and renamed over the old one, so a user's
    open connection (which holds DuckDB's lock on the old file) never blocks ingest: it keeps
    reading the old file, and the next connection sees the new one. The ``slices`` table and the
    ``embeddings`` view hold paths relative to the home: query from the home directory, or
    ``SET file_search_path`` to it (:func:`connect` does), and a copied home reads its own files.
    """
    home = wh.duckdb_path.parent
    with _catalog_lock(wh, timeout_s), atomic_path(wh.duckdb_path) as tmp:
        # listed under the lock: a rebuild never publishes fewer records than the one before it
        records = sorted(wh.table_dir(CATALOG).glob("*.json")) if wh.table_dir(CATALOG).exists() else []
        con = duckdb.connect(str(tmp))
        try:
            con.execute(f"SET file_search_path = '{_sql_text(str(home))}'")
            con.execute(SLICES_DDL)
            for record in records:
                r = json.loads(record.read_text())
                con.execute("INSERT INTO slices VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [r["key"], r["rows"], r["dim"], r["bytes"], r["path"], r["source"],
                             json.dumps(r.get("label_counts", {})), r["ingested_at"]])
            current = published_embeddings(wh).get("current")
            if current and wh.embedded_keys(current):
                con.execute(embeddings_view([str(wh.embeddings_dir(current).relative_to(home) / "*.parquet")]))
        finally:
            con.close()
    return wh.duckdb_path


def remove_slice_files(wh: Warehouse, key: str, *, timeout_s: float = 60.0) -> list[Path]:
    """Delete one slice from the warehouse: its canonical rows, its sample, its catalog record and its
    embeddings under every model version; then republish the catalog, so the ``slices`` table and
    the ``embeddings`` view no longer hold it. Returns the files deleted."""
    files = [wh.table_path("raw_slices", key), wh.table_path("samples", key), wh.table_dir(CATALOG) / f"{key}.json"]
    if wh.table_dir(EMBEDDINGS).exists():
        files += [f for d in sorted(wh.table_dir(EMBEDDINGS).iterdir()) if d.is_dir() for f in wh.slice_map_files(d.name, key)]
    removed = [path for path in files if path.exists()]
    with _catalog_lock(wh, timeout_s):  # no rebuild lists the record while it goes
        for path in removed:
            path.unlink()
    publish_catalog(wh, timeout_s=timeout_s)
    return removed


def published_embeddings(wh: Warehouse) -> dict:
    """``{"current": version, "history": [versions, oldest first]}``: which model's embeddings the
    ``embeddings`` view reads, and every version it has read (``{}`` before the first)."""
    path = wh.table_dir(EMBEDDINGS) / PUBLISHED
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or damaged: `umap-assets run` publishes the served model's maps again
        return {}
    return state if isinstance(state, dict) else {}


def publish_embeddings(wh: Warehouse, version: str, slice_keys: list[str], *, keep: int,
                       timeout_s: float = 60.0) -> bool:
    """Switch the ``embeddings`` view to ``version`` once every slice in ``slice_keys`` has its
    file, and delete all but the newest ``keep`` published versions; True when the view reads
    ``version`` on return.

    Until then the view keeps reading the previous version whole: a reader never sees a mixture
    of two models' maps. The switch is one rename of ``warehouse.duckdb`` (:func:`publish_catalog`),
    under the catalog lock, so two slices that finish at once publish once. A version that is
    neither published nor ``version`` (a model replaced before its maps were done) is deleted too.
    """
    if keep < 1:
        raise ValueError(f"keep at least the version the view reads (keep >= 1), got {keep}")
    state = published_embeddings(wh)
    if not set(slice_keys) <= set(wh.embedded_keys(version)):
        return state.get("current") == version
    if state.get("current") == version and has_embeddings_view(wh):
        return True  # the view globs the version's folder: a slice added to it needs no rebuild
    with _catalog_lock(wh, timeout_s):
        history = [v for v in published_embeddings(wh).get("history", []) if v != version] + [version]
        with atomic_path(wh.table_dir(EMBEDDINGS) / PUBLISHED) as tmp:
            tmp.write_text(json.dumps({"current": version, "history": history}))
    publish_catalog(wh, timeout_s=timeout_s)
    _prune_embeddings(wh, keep, building=version)
    return True


@dataclass(frozen=True)
class MapStatus:
    """How the published map stands against the served model: which of the home's slices have their
    embeddings by ``served``, and which model's maps the ``embeddings`` view reads."""

    served: str
    view: str | None
    current: tuple[str, ...]
    stale: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return self.view == self.served and not self.stale

    def line(self) -> str:
        total = len(self.current) + len(self.stale)
        head = f"map on model {self.view or 'none'}"
        if self.view != self.served:
            head += f" (served: {self.served})"
        stale = f"; stale: {', '.join(self.stale[:10])}{' ...' if len(self.stale) > 10 else ''}" if self.stale else ""
        return f"{head}: {len(self.current)} of {total} slices current{stale}"


def map_status(wh: Warehouse, served: str, slice_keys: list[str]) -> MapStatus:
    """Where the map stands: the slices among ``slice_keys`` with and without embeddings by ``served``."""
    done = set(wh.embedded_keys(served))
    return MapStatus(served, published_embeddings(wh).get("current"), tuple(k for k in slice_keys if k in done),
                     tuple(k for k in slice_keys if k not in done))


def _prune_embeddings(wh: Warehouse, keep: int, *, building: str) -> None:
    import shutil

    kept = set(published_embeddings(wh).get("history", [])[-keep:]) | {building}
    for directory in wh.table_dir(EMBEDDINGS).iterdir():
        if directory.is_dir() and directory.name not in kept:
            shutil.rmtree(directory, ignore_errors=True)


def has_embeddings_view(wh: Warehouse) -> bool:
    """Whether the published catalog defines the ``embeddings`` view."""
    try:
        with duckdb.connect(str(wh.duckdb_path), read_only=True) as con:
            return bool(con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'embeddings' "
                                    "AND NOT internal").fetchone()[0])
    except duckdb.Error:  # absent, or a user holds it open for writing: rebuild, which never waits on it
        return False


def connect(wh: Warehouse) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the catalog that resolves its relative paths against the home."""
    con = duckdb.connect(str(wh.duckdb_path), read_only=True)
    con.execute(f"SET file_search_path = '{_sql_text(str(wh.duckdb_path.parent))}'")
    return con


def home_relative(path: Path, home: Path) -> str:
    """``path`` relative to ``home`` when it lies under it, else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(home.resolve())) if path.is_relative_to(home.resolve()) else str(path)


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


def embeddings_view(paths: list[str], *, temp: bool = False) -> str:
    """The one definition of the ``embeddings`` view: the rows of the files (or globs) ``paths``, each
    with its ``slice``, the name of its file."""
    files = ", ".join(f"'{_sql_text(p)}'" for p in paths)
    return (f"CREATE {'TEMP ' if temp else ''}VIEW embeddings AS "
            "SELECT regexp_extract(filename, '([^/]+)[.]parquet$', 1) AS slice, * EXCLUDE (filename) "
            f"FROM read_parquet([{files}], filename = true, union_by_name = true)")


SLICES_DDL = """CREATE TABLE slices (
    key VARCHAR PRIMARY KEY, rows BIGINT, dim INTEGER, bytes BIGINT,
    path VARCHAR, source VARCHAR, label_counts JSON, ingested_at TIMESTAMP)"""
CATALOG = "catalog"
EMBEDDINGS = "embeddings"
PUBLISHED = "published.json"  # under embeddings/: the version the view reads, and the ones before it
