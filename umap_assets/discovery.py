"""Slice discovery: which files of a map's source (``<home>/incoming`` by default, or any folder of
:mod:`umap_assets.sources`) to ingest. The one path that ``new_slices_sensor``
and ``umap-assets run`` share, so neither redoes nor skips the other's work.

A file is known by its identity (:meth:`umap_assets.sources.Source.look`: its size and a hash of its
whole content, or in an object store its size, the store's checksum and a hash of its footer), never
by its modification time, so ``cp -p``, ``rsync -t`` and renames of old files are seen like any other.
A file is *ready* when it is a complete Parquet file and its identity is the same as at the previous
look. A slice's life (docs/robustness.md, issue 30):

- a new name with new content: ingested as a new slice;
- a known name with new content (replaced in place): ingested again, its rows replace the old ones;
- a new name with the content of a slice whose file is gone (renamed): that slice, up to date;
- a new name with the content of a slice whose file is still there (a copy): not ingested, one line;
- a file deleted from the source: its slice stays in the home (the slices of the home are the
  ``slices`` partitions, never the files of the source); ``umap-assets remove`` removes one.

A file whose ingest broke the data contract waits until it changes; any other failure (a kill, a
full disk, a read-only home) leaves it eligible. The only state kept between looks is the identity
of each file not yet handed on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from .contract import partition_key_for
from .errors import is_contract_violation, root_cause
from .history import latest_metadata, materializations, metadata_of
from .map_names import DEFAULT_NAMES, MapNames
from .sources import Source

#: The default map's dynamic partitions: one per slice file (a map's own: ``MapNames.partitions``).
SLICES = DEFAULT_NAMES.partitions
#: Run tag with the identity of the file a run ingests (rejections are remembered by it): the default map's.
IDENTITY_TAG = DEFAULT_NAMES.tag("source_identity")
#: Metadata key of ``raw_slices``: the identity (size and content hash) of the file it ingested.
SOURCE_IDENTITY = "source_identity"


def ingested_identity(instance: dg.DagsterInstance, key: str, names: MapNames = DEFAULT_NAMES) -> str | None:
    """The identity of the file that the newest ``raw_slices`` materialization of ``key`` ingested."""
    return latest_metadata(instance, names.asset_key("raw_slices"), SOURCE_IDENTITY, partition=key)


def home_identities(instance: dg.DagsterInstance, names: MapNames = DEFAULT_NAMES) -> dict[str, str]:
    """Identity -> key of the file each slice of the home was ingested from (its newest ``raw_slices``).
    The slices of the home are the ``slices`` partitions: a removed slice is no longer one. One paged
    read of the history, newest first, not a query per slice (a home may hold tens of thousands)."""
    slices, newest = set(instance.get_dynamic_partitions(names.partitions)), {}
    for record in materializations(instance, names.asset_key("raw_slices")):
        key = record.partition_key
        if key in slices and key not in newest:
            newest[key] = metadata_of(record, SOURCE_IDENTITY)
    found: dict[str, str] = {}
    for key in sorted(newest):
        if newest[key]:
            found.setdefault(newest[key], key)
    return found


@dataclass(frozen=True)
class SliceFile:
    """A file of the map's source: its slice's key, its name, where it is (a path or URL) and its identity."""

    key: str
    name: str
    where: str
    identity: str


@dataclass
class Discovery:
    """One look at the source: what to ingest now, what waits, what is done, what is refused."""

    ready: list[SliceFile] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # name -> identity ("" while incomplete)
    up_to_date: list[SliceFile] = field(default_factory=list)  # key: the slice the file's content is
    rejected: dict[str, str] = field(default_factory=dict)  # name -> reason
    copies: dict[str, str] = field(default_factory=dict)  # name -> key of the slice it is a copy of
    renamed: dict[str, str] = field(default_factory=dict)  # name -> key of the slice ingested under another name

    def seen(self) -> dict[str, str]:
        """Identities to compare with at the next look: the files not yet handed on (small)."""
        return {name: ident for name, ident in self.waiting.items() if ident} | {
            f.name: f.identity for f in self.ready
        }


def rejection(instance: dg.DagsterInstance, key: str, identity: str, names: MapNames = DEFAULT_NAMES) -> str | None:
    """Why this very file broke the data contract, if its newest ingest did. A failure of the machine
    (a kill, a full disk, a read-only home) is no verdict on the file: None, it is retried."""
    runs = instance.get_run_records(
        filters=dg.RunsFilter(tags={"dagster/partition": key, names.tag("source_identity"): identity}), limit=1
    )
    if not runs or runs[0].dagster_run.status != dg.DagsterRunStatus.FAILURE:
        return None
    failures = instance.all_logs(runs[0].dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    verdicts = [e.dagster_event.step_failure_data for e in failures
                if is_contract_violation(e.dagster_event.step_failure_data)]
    return next((root_cause(data.error) if data.error else "broke the data contract" for data in verdicts), None)


def failed_attempts(instance: dg.DagsterInstance, key: str, identity: str,
                    names: MapNames = DEFAULT_NAMES) -> tuple[int, float]:
    """Failed ingests of this very file, and when the newest ended (0 if none): a sensor's run key
    counts them, so a failure of the machine is retried, after a wait (:func:`retry_after`)."""
    runs = instance.get_run_records(filters=dg.RunsFilter(
        tags={"dagster/partition": key, names.tag("source_identity"): identity},
        statuses=[dg.DagsterRunStatus.FAILURE]))
    return len(runs), max((r.end_time or r.update_timestamp.timestamp() for r in runs), default=0.0)


#: The sensor's wait before it tries a file again after a failure of the machine: a minute, doubling
#: with each failure, at most an hour (a full disk does not fail a run every tick).
RETRY_WAIT_S, RETRY_WAIT_MAX_S = 60.0, 3600.0


def retry_after(failed: int) -> float:
    """Seconds to wait after the ``failed``-th failed ingest of a file before the sensor tries it again."""
    return 0.0 if failed == 0 else min(RETRY_WAIT_MAX_S, RETRY_WAIT_S * 2 ** (failed - 1))


def discover_slices(
    instance: dg.DagsterInstance, source: Source, previous: dict[str, str], *, force: bool = False,
    names: MapNames = DEFAULT_NAMES,
) -> Discovery:
    """Sort the files of the map's ``source`` into ready, waiting, up to date, copies and rejected.

    ``previous`` holds the identities of the previous look (:meth:`Discovery.seen`). ``force``
    re-ingests files that are up to date or were rejected (a copy or a renamed file stays one).
    """
    found = Discovery()
    files = source.look()
    keys = {name: partition_key_for(name) for name in files}
    home = home_identities(instance, names)
    claimed: dict[str, str] = {}  # identity -> key of the first file of this look with it
    owner: dict[str, str] = {}
    for name, identity in files.items():
        key = keys[name]
        if owner.setdefault(key, name) != name:
            found.rejected[name] = f"maps to partition '{key}' like {owner[key]}; rename one of them"
            continue
        if identity is None:
            found.waiting[name] = ""  # still being written
            continue
        item = SliceFile(key, name, source.where(name), identity)
        same = home.get(identity, claimed.setdefault(identity, key))
        if same != key:
            _same_content(found, item, same, set(keys.values()))
        elif not force and identity in home:
            found.up_to_date.append(item)
        elif not force and (reason := rejection(instance, key, identity, names)):
            found.rejected[name] = f"unchanged since it was rejected: {reason}"
        elif previous.get(name) == identity:
            found.ready.append(item)
        else:
            found.waiting[name] = identity  # first seen, or changed since the previous look
    return found


def _same_content(found: Discovery, item: SliceFile, slice_key: str, present: set[str]) -> None:
    """``item`` holds the content of slice ``slice_key``: a copy while that slice's own file is in
    the source, else the same slice renamed (up to date under its first key)."""
    if slice_key in present:
        found.copies[item.name] = slice_key
    else:
        found.renamed[item.name] = slice_key
        found.up_to_date.append(SliceFile(slice_key, item.name, item.where, item.identity))


def ingest_tags(item: SliceFile, names: MapNames = DEFAULT_NAMES) -> dict[str, str]:
    """Tags of a run of the map ``names`` that ingests ``item``."""
    return {names.tag("source"): item.where, names.tag("source_identity"): item.identity}
