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
