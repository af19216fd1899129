"""The embedded warehouse: canonical Parquet files under ``<home>/warehouse`` plus a DuckDB catalog.

Each asset writes its own Parquet files with write-then-rename, so parallel partitions never touch
the same file and a killed run leaves the previous materialization readable. DuckDB holds only a
small catalog and views over the Parquet files; it allows one writer at a time, so the writers sit
in the ``duckdb`` concurrency pool and :func:`duckdb_write` retries while another process holds
the lock.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path, is_temp_name, sweep_stale_temps
from .contract import SliceSpec, SliceSummary, iter_validated_batches

DUCKDB_POOL = "duckdb"


@dataclass(frozen=True)
class Warehouse:
    """Paths of the warehouse tables. ``root`` is ``<home>/warehouse``."""

    root: Path
    duckdb_path: Path

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

    def dimension_of_others(self, table: str, exclude_key: str) -> int | None:
        """The feature dimension of the other slices already in ``table``, if any."""
        for key in self.keys(table):
            if key == exclude_key:
                continue
            try:
                t = pq.read_schema(self.table_path(table, key)).field("features").type
            except (FileNotFoundError, KeyError):
                continue
            return t.list_size
        return None


def write_canonical_slice(
    source: Path,
    destination: Path,
    spec: SliceSpec = SliceSpec(),
    *,
    expected_dim: int | None = None,
    batch_rows: int = 65_536,
) -> SliceSummary:
    """Validate ``source`` chunk by chunk and write it in canonical form to ``destination``.

    Nothing reaches ``destination`` unless every check passed: the batches go to a temporary file
    which is renamed into place only after the last check (duplicate ids) is done.
    """
    sweep_stale_temps(destination.parent, destination.name)
    summary = SliceSummary()
    writer: pq.ParquetWriter | None = None
    with atomic_path(destination) as tmp:
        try:
            for batch in iter_validated_batches(
                source, spec, expected_dim=expected_dim, batch_rows=batch_rows, summary=summary
            ):
                rb = batch.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(tmp, rb.schema, compression="zstd")
                writer.write_batch(rb)
        finally:
            if writer is not None:
                writer.close()
    return summary


def write_table(table: pa.Table, destination: Path) -> int:
    """Write ``table`` atomically; returns the file size in bytes."""
    sweep_stale_temps(destination.parent, destination.name)
    with atomic_path(destination) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return destination.stat().st_size


def take_rows(
    path: Path, positions: np.ndarray, columns: list[str] | None = None, *, batch_rows: int = 65_536
) -> pa.Table:
    """The rows at sorted, unique ``positions`` of a Parquet file, in that order.

    Reads one batch at a time and skips row groups that hold none of the positions, so memory
    holds the chosen rows and one batch, never the whole file.
    """
    pf = pq.ParquetFile(path)
    positions = np.asarray(positions, dtype=np.int64)
    if len(positions) and (np.any(np.diff(positions) <= 0) or positions[0] < 0
                           or positions[-1] >= pf.metadata.num_rows):
        raise ValueError(f"{path}: positions must be sorted, unique and below {pf.metadata.num_rows}")
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


@contextlib.contextmanager
def duckdb_write(path: Path, *, timeout_s: float = 120.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A write connection to the DuckDB file, waiting while another process holds its lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path))
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        yield con
    finally:
        con.close()


def register_slice(duckdb_path: Path, key: str, metadata: dict) -> None:
    """Upsert one row of the ``slices`` catalog table."""
    with duckdb_write(duckdb_path) as con:
        con.execute(
            """CREATE TABLE IF NOT EXISTS slices (
                   key VARCHAR PRIMARY KEY, rows BIGINT, dim INTEGER, bytes BIGINT,
                   path VARCHAR, source VARCHAR, label_counts JSON, ingested_at TIMESTAMP)"""
        )
        con.execute(
            "INSERT OR REPLACE INTO slices VALUES (?, ?, ?, ?, ?, ?, ?, now())",
            [
                key,
                metadata["rows"],
                metadata["dim"],
                metadata["bytes"],
                metadata["path"],
                metadata["source"],
                json.dumps(metadata.get("label_counts", {})),
            ],
        )


def ensure_embeddings_view(duckdb_path: Path, embeddings_dir: Path) -> None:
    """Define the ``embeddings`` view over every slice's embedding file, once.

    The view globs ``embeddings/*.parquet`` each time it is queried, so later slices show up
    without another write; the write lock is only taken while the view does not exist yet.
    """
    glob = str(embeddings_dir / "*.parquet")
    with duckdb_write(duckdb_path) as con:
        exists = con.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = 'embeddings' AND NOT internal"
        ).fetchone()[0]
        if not exists:
            con.execute(
                f"""CREATE VIEW embeddings AS
                    SELECT regexp_extract(filename, '([^/]+)[.]parquet$', 1) AS slice, * EXCLUDE (filename)
                    FROM read_parquet('{glob}', filename = true, union_by_name = true)"""
            )
