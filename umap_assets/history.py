"""The one way the project reads Dagster's event log: materializations of an asset.

Plain functions over a :class:`dagster.DagsterInstance` (no definitions). The assets find the
version of what they read here (the upstream materialization records it), the planner finds what
is stale, the promotion finds what was served.
"""

from __future__ import annotations

import dagster as dg


def materializations(instance: dg.DagsterInstance, key: str | dg.AssetKey, *, partitions: list[str] | None = None,
                     after: int | None = None, limit: int | None = None, newest_first: bool = True) -> list:
    """Materialization records of ``key`` (of ``partitions``, after storage id ``after``), paged,
    newest first unless ``newest_first`` is False; at most ``limit`` of them."""
    key = dg.AssetKey(key) if isinstance(key, str) else key
    records, cursor = [], None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=partitions, after_storage_id=after),
            limit=min(1000, limit - len(records)) if limit else 1000, cursor=cursor, ascending=not newest_first)
        records.extend(page.records)
        if not page.has_more or (limit and len(records) >= limit):
            return records
        cursor = page.cursor


def latest(instance: dg.DagsterInstance, key: str | dg.AssetKey, partition: str | None = None):
    """The newest materialization record of ``key`` (of one ``partition``), or None."""
    found = materializations(instance, key, partitions=None if partition is None else [partition], limit=1)
    return found[0] if found else None


def metadata_of(record, name: str, default=None):
    """The value of metadata entry ``name`` of a materialization record (``default`` when absent)."""
    if record is None or record.asset_materialization is None:
        return default
    value = record.asset_materialization.metadata.get(name)
    return default if value is None else value.value


def latest_metadata(instance: dg.DagsterInstance, key: str | dg.AssetKey, name: str, partition: str | None = None,
                    default=None):
    """Metadata entry ``name`` of the newest materialization of ``key``, or ``default``."""
    return metadata_of(latest(instance, key, partition), name, default)


def in_run(instance: dg.DagsterInstance, run_id: str, key: str | dg.AssetKey):
    """The newest materialization of ``key`` in run ``run_id``, or None."""
    key = dg.AssetKey(key) if isinstance(key, str) else key
    for record in reversed(instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION,
                                                        limit=1000).records):
        event = record.event_log_entry.dagster_event
        if event is not None and event.asset_key == key:
            return record
    return None


def checks_in_run(instance: dg.DagsterInstance, run_id: str, key: str | dg.AssetKey) -> dict[str, bool]:
    """Check name -> passed, for each check of ``key`` evaluated in run ``run_id`` (the newest evaluation)."""
    key = dg.AssetKey(key) if isinstance(key, str) else key
    verdicts = {}
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION,
                                               limit=1000).records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.asset_key == key:
            verdicts[evaluation.check_name] = evaluation.passed
    return verdicts


def upstream(instance: dg.DagsterInstance, key: str | dg.AssetKey, run_id: str | None = None):
    """The materialization of ``key`` that a step of run ``run_id`` reads: the run's own, when it made
    one (so a run reads what it made, whatever another run made meanwhile), else the newest."""
    own = in_run(instance, run_id, key) if run_id else None
    return _OwnRecord(own) if own is not None else latest(instance, key)


class _OwnRecord:
    """An event-log record of the run's own, shaped like a materialization record."""

    def __init__(self, record):
        self.storage_id = record.storage_id
        self.asset_materialization = record.event_log_entry.asset_materialization


def upstream_version(instance: dg.DagsterInstance, key: str | dg.AssetKey, run_id: str | None = None) -> str:
    """The record version that the materialization of ``key`` this run reads wrote (``version`` metadata)."""
    version = metadata_of(upstream(instance, key, run_id), "version")
    if version is None:
        shown = key if isinstance(key, str) else key.to_user_string()
        raise FileNotFoundError(f"no materialization of `{shown}` with a version on this instance; materialize "
                                f"`{shown}` first")
    return version


def newest_versions(dagster_home) -> dict[str, str | None]:
    """The versions the newest training on the home's instance (``<home>/dagster``) recorded: ``teacher``,
    ``student``, ``artifact`` and the ``report`` (for benchmarks and probes, which read a home after a run)."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        versions = {key: latest_metadata(instance, key, "version") for key in ("teacher", "student", "artifact")}
        versions["report"] = latest_metadata(instance, "quality_report", "report_version")
    return versions


def promoted_versions(instance: dg.DagsterInstance, model: str | dg.AssetKey = "model") -> list[str]:
    """Every artifact version ``model`` (the map's key of it) has served, newest promotion first, each once."""
    versions = [metadata_of(r, "version") for r in materializations(instance, model, limit=1000)]
    return list(dict.fromkeys(v for v in versions if v is not None))
