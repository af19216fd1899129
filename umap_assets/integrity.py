"""Every byte the product wrote is checked when it is read again.

Every Parquet file of the warehouse carries a CRC checksum per page
(:func:`umap_assets.contract.write_options`), and every reader verifies them
(:func:`umap_assets.contract.parquet_reader`, :func:`~umap_assets.contract.read_verified`). DuckDB does
not: it reads a page whose bytes were overwritten as if nothing happened. So the files the DuckDB view
reads are checked here before it does (``umap-assets map``), and ``umap-assets run`` checks the home's
slices, samples and embeddings before it plans anything (:func:`find_damage`), to re-derive a damaged
file from its source.

A file is read whole once per change: the size and modification time of each file found intact are
kept in ``warehouse/verified.json``, so a run over an unchanged home reads no data here. A byte
changed in place changes the time; damage that does not (the disk's own) is caught by the readers.

Plain Python, no Dagster. The catalogue (``warehouse.duckdb``) is checked by :func:`catalog_damage`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from .atomic import atomic_path
from .contract import is_checksum_error, parquet_reader
from .warehouse import EMBEDDINGS, Warehouse, connect, home_relative, publish_catalog, published_embeddings

#: The tables checked, in the order a repair follows them (a slice before its sample).
TABLES = ("raw_slices", "samples")
VERIFIED = "verified.json"


@dataclass(frozen=True)
class Damage:
    """One warehouse file that no longer reads as written."""

    table: str  # raw_slices, samples or embeddings
    key: str  # the slice
    path: Path
    reason: str

    def line(self, home: Path) -> str:
        return f"{home_relative(self.path, home)} is damaged: {self.reason}"


def file_damage(path: Path) -> str | None:
    """Why ``path`` does not read whole with every page's checksum verified, in one line; None when it does."""
    try:
        pf = parquet_reader(path)
        for group in range(pf.num_row_groups):
            pf.read_row_group(group)
    except (pa.ArrowInvalid, OSError) as exc:
        if is_checksum_error(exc):
            return "a page no longer matches its checksum (its bytes changed after they were written)"
        return f"not readable as Parquet ({str(exc).splitlines()[0][:200]})"
    return None


def find_damage(wh: Warehouse, versions: tuple[str | None, ...] = ()) -> list[Damage]:
    """The damaged files among the slices, the samples and the embeddings of ``versions``; each file
    unchanged since it was last found intact is not read again."""
    seen = _verified(wh)
    kept: dict[str, list[int]] = {}
    damage = []
    candidates = [(t, k, wh.table_path(t, k)) for t in TABLES for k in wh.keys(t)]
    candidates += [(EMBEDDINGS, k, wh.embeddings_path(v, k)) for v in dict.fromkeys(versions) if v
                   for k in wh.embedded_keys(v)]
    for table, key, path in candidates:
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue  # removed meanwhile
        name, stamp = str(path.relative_to(wh.root)), [stat.st_size, stat.st_mtime_ns]
        if seen.get(name) == stamp or (reason := file_damage(path)) is None:
            kept[name] = stamp
        else:
            damage.append(Damage(table, key, path, reason))
    with atomic_path(wh.root / VERIFIED) as tmp:
        tmp.write_text(json.dumps(kept, sort_keys=True))
    return damage


def _verified(wh: Warehouse) -> dict:
    try:
        value = json.loads((wh.root / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def catalog_damage(wh: Warehouse) -> str | None:
    """Why ``warehouse.duckdb`` must be rebuilt (missing, not a DuckDB file, or without the tables and
    view the files call for); None when it is sound."""
    if not wh.duckdb_path.exists():
        return "missing" if wh.files("raw_slices") else None  # a new home has nothing to catalogue yet
    try:
        with connect(wh) as con:
            con.execute("SELECT count(*) FROM slices").fetchone()
            views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    except duckdb.Error as exc:
        return f"not readable ({str(exc).splitlines()[0][:160]})"
    current = published_embeddings(wh).get("current")
    if current and wh.embedded_keys(current) and "embeddings" not in views:
        return "it has no `embeddings` view"
    return None


def damaged_embeddings(wh: Warehouse, version: str) -> list[Damage]:
    """The damaged files among the embeddings of ``version`` (every one read whole: the map's check)."""
    return [Damage(EMBEDDINGS, path.stem, path, reason) for path in wh.embedding_files(version)
            if (reason := file_damage(path)) is not None]


def rebuild_catalog(wh: Warehouse) -> str:
    """Rebuild ``warehouse.duckdb`` when it is missing or damaged; one line on it, or ""."""
    reason = catalog_damage(wh)
    if reason is None:
        return ""
    publish_catalog(wh)
    return f"rebuilt {wh.duckdb_path.name} ({reason}) from the catalogue records and the published embeddings"
