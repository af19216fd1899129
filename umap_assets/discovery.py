"""Slice discovery: which files in ``<home>/incoming`` to ingest. The one path that ``new_slices_sensor``
and ``umap-assets run`` share, so neither redoes nor skips the other's work.

A file is known by its identity (:func:`umap_assets.contract.file_identity`: its size and a hash of
its Parquet footer), never by its modification time, so ``cp -p``, ``rsync -t`` and renames of old
files are seen like any other. A file is *ready* when it is a complete Parquet file and its identity
is the same as at the previous look. A ready file is ingested unless its partition already holds
that identity, or an ingest of that very identity already failed: a rejected file waits until it
changes. The only state kept between looks is the identity of each file not yet handed on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from .atomic import is_temp_name
from .contract import file_identity, partition_key_for
from .errors import root_cause
from .history import latest_metadata

#: The dynamic partitions: one per slice file.
SLICES = "slices"
#: Run tag with the identity of the file a run ingests (rejections are remembered by it).
IDENTITY_TAG = "umap_assets/source_identity"
#: Metadata key of ``raw_slices``: the identity (size and footer hash) of the file it ingested.
SOURCE_IDENTITY = "source_identity"


def ingested_identity(instance: dg.DagsterInstance, key: str) -> str | None:
    """The identity of the file that the newest ``raw_slices`` materialization of ``key`` ingested."""
    return latest_metadata(instance, "raw_slices", SOURCE_IDENTITY, partition=key)


@dataclass(frozen=True)
class SliceFile:
    key: str
    path: Path
    identity: str


@dataclass
class Discovery:
    """One look at ``incoming``: what to ingest now, what waits, what is done, what is refused."""

    ready: list[SliceFile] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # name -> identity ("" while incomplete)
    up_to_date: list[SliceFile] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # name -> reason

    def seen(self) -> dict[str, str]:
        """Identities to compare with at the next look: the files not yet handed on (small)."""
        return {name: ident for name, ident in self.waiting.items() if ident} | {
            f.path.name: f.identity for f in self.ready
        }


def look(incoming: Path) -> dict[str, str | None]:
    """Name -> identity of each candidate slice file (``None`` while it is not a complete Parquet file)."""
    if not incoming.is_dir():
        return {}
    return {
        p.name: file_identity(p)
        for p in sorted(incoming.iterdir())
        if p.name.endswith(".parquet") and not p.name.startswith(".") and not is_temp_name(p.name) and p.is_file()
    }


def rejection(instance: dg.DagsterInstance, key: str, identity: str) -> str | None:
    """Why the ingest of this very file failed, if it did (its newest run for ``identity`` failed)."""
    runs = instance.get_run_records(
        filters=dg.RunsFilter(tags={"dagster/partition": key, IDENTITY_TAG: identity}), limit=1
    )
    if not runs or runs[0].dagster_run.status != dg.DagsterRunStatus.FAILURE:
        return None
    failures = instance.all_logs(runs[0].dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    errors = [e.dagster_event.step_failure_data.error for e in failures]
    return next((root_cause(error) for error in errors if error is not None), "ingest failed")


def discover_slices(
    instance: dg.DagsterInstance, incoming: Path, previous: dict[str, str], *, force: bool = False
) -> Discovery:
    """Sort the files of ``incoming`` into ready, waiting, up to date and rejected.

    ``previous`` holds the identities of the previous look (:meth:`Discovery.seen`). ``force``
    re-ingests files that are up to date or were rejected.
    """
    found = Discovery()
    owner: dict[str, str] = {}
    for name, identity in look(incoming).items():
        path = incoming / name
        key = partition_key_for(path)
        if owner.setdefault(key, name) != name:
            found.rejected[name] = f"maps to partition '{key}' like {owner[key]}; rename one of them"
            continue
        if identity is None:
            found.waiting[name] = ""  # still being written
            continue
        item = SliceFile(key, path, identity)
        if not force and ingested_identity(instance, key) == identity:
            found.up_to_date.append(item)
        elif not force and (reason := rejection(instance, key, identity)):
            found.rejected[name] = f"unchanged since it was rejected: {reason}"
        elif previous.get(name) == identity:
            found.ready.append(item)
        else:
            found.waiting[name] = identity  # first seen, or changed since the previous look
    return found


def ingest_tags(item: SliceFile) -> dict[str, str]:
    """Tags of a run that ingests ``item``."""
    return {"umap_assets/source": str(item.path), IDENTITY_TAG: item.identity}
