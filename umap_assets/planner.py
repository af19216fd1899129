"""What should run now: the one place that decides, for the sensors and for ``umap-assets run``.

Plain functions over a :class:`dagster.DagsterInstance`; no Dagster definitions. Each answer is a list
of :class:`Step` (a job, a partition, maybe a subset of its assets, tags): the sensors turn them into
run requests, ``umap-assets run`` executes them in order and asks again until nothing is left.

- :func:`plan_ingest`: which files of ``incoming`` to ingest (:mod:`umap_assets.discovery`'s look).
- :func:`plan_training`: whether to train and why: while no model is served, when new samples landed
  and the drift of a new slice says the served model does not cover it or could not be measured,
  or when asked; before that, which new slices' ``drift`` to measure.
- :func:`plan_maps`: which slices' ``embeddings`` (and ``drift``) are stale: missing, older than the
  slice's rows, or made by another model than the served one.
- :func:`plan_compaction`: whether the served version's partial tiles have merges due (``map_tile_runs``).
- :func:`busy`: the runs in progress on the home, so a second ``umap-assets run`` never starts over them.
- :func:`training_in_progress` and :func:`limit_training`: the one training per home that Dagster's
  run queue enforces (pool ``training``, one slot per run), and the same rule for in-process runs.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from .discovery import discover_slices, failed_attempts, ingest_tags, retry_after
from .history import latest, materializations, metadata_of
from .map_names import DEFAULT_NAMES, MapNames
from .sources import Source

INGEST_JOB, TRAIN_JOB, EMBED_JOB, REMOVE_JOB = (DEFAULT_NAMES.job(j) for j in ("ingest_slice", "train_model", "embed_slice",
                                                                          "remove_slice"))
COMPACT_JOB = DEFAULT_NAMES.job("compact_tiles")
#: Why a ``train_model`` run was requested.
RETRAIN_TAG = DEFAULT_NAMES.tag("retrain_reason")
#: The process that launched a run in-process (``host:pid``), so a later run can tell a dead one.
LAUNCHER_TAG = DEFAULT_NAMES.tag("launched_by")
#: Seconds between two looks at ``incoming`` when nothing else runs meanwhile (a file must be unchanged).
LOOK_AGAIN_S = 0.5


@dataclass(frozen=True)
class Step:
    """One run to start: ``job`` (of ``partition``), only ``assets`` of it when given."""

    job: str
    label: str
    partition: str | None = None
    assets: tuple[str, ...] | None = None
    tags: dict = field(default_factory=dict)
    run_key: str | None = None
    names: MapNames = DEFAULT_NAMES  # the map whose job and assets these are

    def run_request(self) -> dg.RunRequest:
        return dg.RunRequest(run_key=self.run_key, partition_key=self.partition, tags=self.tags,
                             asset_selection=[self.names.asset_key(a) for a in self.assets] if self.assets else None)


# ---- ingest


@dataclass
class IngestPlan:
    steps: list[Step]
    new_partitions: list[str]  # keys to add to the `slices` partitions before the steps run
    up_to_date: dict[str, str]  # key -> name of each file already ingested with this content
    waiting: dict[str, str]  # file name -> identity ("" while not a complete Parquet file)
    rejected: dict[str, str]  # file name -> reason
    seen: dict[str, str]  # the identities to compare with at the next look (the sensor's cursor)
    copies: dict[str, str] = field(default_factory=dict)  # file name -> one line: the slice it copies
    renamed: dict[str, str] = field(default_factory=dict)  # file name -> key of the slice it is


def plan_ingest(instance: dg.DagsterInstance, source: Source, previous: dict[str, str], *,
                force: bool = False, resume: bool = False, now: float | None = None,
                names: MapNames = DEFAULT_NAMES) -> IngestPlan:
    """The files of the map's ``source`` to ingest now: complete, unchanged since the look ``previous``, not
    ingested with this content, not rejected with it, and not being ingested by a run in progress.
    ``resume`` (``umap-assets run``) also ingests again a file whose rows landed but whose samples
    never did (a run killed in between; the sensor's run keys leave such a file to an explicit
    ``umap-assets run``), and retries a file whose ingest failed for the machine at once; the sensor
    waits :func:`~umap_assets.discovery.retry_after` first (``now``: the time, for tests)."""
    found = discover_slices(instance, source, previous, force=force, names=names)
    running = {(r.tags.get("dagster/partition"), r.tags.get(names.tag("source_identity")))
               for r in _in_progress(instance, names.job("ingest_slice"))}
    ready = [f for f in found.ready if (f.key, f.identity) not in running]
    known = set(instance.get_dynamic_partitions(names.partitions))
    up_to_date = {}
    for item in found.up_to_date:
        if not resume or item.name in found.renamed or latest(instance, names.asset_key("samples"), item.key) is not None:
            up_to_date[item.key] = item.name
        elif (item.key, item.identity) not in running:
            ready.append(item)  # its samples never landed: ingest again
    steps = []
    for f in ready:
        failed, ended = failed_attempts(instance, f.key, f.identity, names)
        if resume or (time.time() if now is None else now) >= ended + retry_after(failed):
            steps.append(Step(names.job("ingest_slice"), f.name, partition=f.key, tags=ingest_tags(f, names),
                              run_key=f"{f.key}:{f.identity}" + (f":retry-{failed}" if failed else ""), names=names))
    started = {s.partition for s in steps}
    ready = [f for f in ready if f.key in started]
    copies = {name: f"same content as slice '{key}' ({up_to_date.get(key, key)}); not ingested twice"
              for name, key in found.copies.items()}
    return IngestPlan(steps, sorted({f.key for f in ready} - known), up_to_date, found.waiting, found.rejected,
                      found.seen(), copies, found.renamed)


# ---- training


@dataclass
class TrainingPlan:
    step: Step | None = None  # train now
    measure: list[str] = field(default_factory=list)  # new slices whose drift to measure first
    reason: str = ""  # why train, or why not
    handled: int | None = None  # storage id of the newest samples decided on (the sensor's cursor); None: undecided


def plan_training(instance: dg.DagsterInstance, *, served: bool, handled: int, quiet_seconds: float = 0.0,
                  asked: str | None = None, now: float | None = None, names: MapNames = DEFAULT_NAMES) -> TrainingPlan:
    """Whether to train now, after the ``samples`` materializations past storage id ``handled``.

    ``asked`` trains whatever else holds (its text is the reason). Otherwise, once new samples have
    been quiet for ``quiet_seconds``: train while no model is ``served``; afterwards measure the drift
    of the new slices first, then train when one drifted or could not be measured.
    """
    new = materializations(instance, names.asset_key("samples"), after=handled, newest_first=False)
    newest = new[-1].storage_id if new else handled
    if asked:
        return _train(asked, newest, names)
    if not new:
        return TrainingPlan(reason="no new samples since the last decision")
    age = (time.time() if now is None else now) - new[-1].event_log_entry.timestamp
    if age < quiet_seconds:
        return TrainingPlan(reason=f"new samples landed {age:.0f}s ago; waiting for {quiet_seconds:.0f}s of quiet")
    if not served:
        return _train("no promoted model yet", newest, names)
    landed = {r.partition_key: r.storage_id for r in new if r.partition_key}
    if not landed:
        return TrainingPlan(reason="the new samples name no slice", handled=newest)
    measured, failed = _drift_of_new_slices(instance, landed, names)
    waiting = sorted(set(landed) - set(measured) - set(failed))
    if waiting:
        return TrainingPlan(measure=waiting, reason=f"waiting for `drift` of {len(waiting)} new slice(s) "
                            f"({', '.join(waiting[:5])})")
    reason = retrain_reason(measured, failed)
    if reason:
        return _train(reason, newest, names)
    return TrainingPlan(reason=f"{coverage_summary(measured)}; the served model stays", handled=newest)


def _train(reason: str, newest: int, names: MapNames) -> TrainingPlan:
    job = names.job("train_model")
    return TrainingPlan(Step(job, job, tags={names.tag("retrain_reason"): reason}, run_key=f"samples-{newest}",
                             names=names),
                        reason=reason, handled=newest)


def _drift_of_new_slices(instance: dg.DagsterInstance, landed: dict[str, int],
                         names: MapNames) -> tuple[dict, list[str]]:
    """For each slice in ``landed`` (key -> storage id of its new sample): the metadata of its newest
    ``drift`` materialization after that sample, or its key in the second list when the newest
    ``drift`` run planned after that sample failed. Slices not measured yet are in neither."""
    measured: dict[str, dict] = {}
    for record in materializations(instance, names.asset_key("drift"), partitions=sorted(landed), after=min(landed.values()),
                                   newest_first=False):
        if record.storage_id > landed[record.partition_key]:  # measured on the new sample (oldest first)
            measured[record.partition_key] = record.asset_materialization.metadata
    failed = []
    for key in sorted(set(landed) - set(measured)):
        planned = instance.get_latest_planned_materialization_info(names.asset_key("drift"), key)
        if planned is None or planned.storage_id <= landed[key]:
            continue
        run = instance.get_run_by_id(planned.run_id)
        if run is not None and run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            failed.append(key)
    return measured, failed


def retrain_reason(measured: dict[str, dict], failed: list[str]) -> str | None:
    """Why new slices need a new model, from their ``drift`` metadata (key -> metadata) and the keys
    whose drift could not be measured; None when the served model covers them all."""
    drifted = sorted(k for k, meta in measured.items() if meta["drifted"].value)
    reasons = ([f"drift: {', '.join(drifted[:10])}"] if drifted else []) + (
        [f"drift not measurable: {', '.join(sorted(failed)[:10])}"] if failed else [])
    return "; ".join(reasons) or None


def coverage_summary(measured: dict[str, dict]) -> str:
    """One line on how well the served model covers the measured slices (at least one)."""
    worst = max(measured, key=lambda k: measured[k]["uncovered_fraction"].value)
    return (f"the current model covers the {len(measured)} new slice(s) (worst: {worst}, "
            f"{measured[worst]['uncovered_fraction'].value:.1%} uncovered)")


# ---- maps


def plan_maps(instance: dg.DagsterInstance, keys: list[str], served_version: str | None, *,
              present: set[str] | None = None, tiled: set[str] | None = None,
              names: MapNames = DEFAULT_NAMES) -> list[Step]:
    """The slices among ``keys`` (every slice in the home, wherever its file is now) whose ``embeddings``
    are missing, older than their ``raw_slices``, made by another model than ``served_version``, or,
    given ``present`` (the keys whose embeddings file by ``served_version`` is on disk), whose file is
    gone: ``embed_slice`` for each, only ``embeddings`` and ``map_tiles`` where ``drift`` is current
    (measured after the slice's samples and the served model). Given ``tiled`` (the keys whose partial
    tiles by ``served_version`` are on disk), a slice whose map is current but whose tiles are not
    gets ``map_tiles`` alone."""
    if served_version is None:
        return []
    promoted, embed_job = latest(instance, names.asset_key("model")), names.job("embed_slice")
    steps = []
    for key in keys:
        made, raw = latest(instance, names.asset_key("embeddings"), key), latest(instance, names.asset_key("raw_slices"), key)
        if (made is not None and (raw is None or raw.storage_id < made.storage_id)
                and metadata_of(made, "artifact_version") == served_version
                and (present is None or key in present)):
            if tiled is not None and key not in tiled:
                steps.append(Step(embed_job, f"map_tiles[{key}]", partition=key, assets=("map_tiles",), names=names))
            continue
        measured, sampled = latest(instance, names.asset_key("drift"), key), latest(instance, names.asset_key("samples"), key)
        current = (measured is not None and promoted is not None and measured.storage_id > promoted.storage_id
                   and (sampled is None or measured.storage_id > sampled.storage_id))
        steps.append(Step(embed_job, f"embeddings[{key}]", partition=key,
                          assets=("embeddings", "map_tiles") if current else None, names=names))
    return steps


def plan_compaction(version_dir: Path | None, fanout: int | None = None, *,
                    names: MapNames = DEFAULT_NAMES) -> Step | None:
    """``map_tile_runs`` (job ``compact_tiles``, its own step after the slices') when the tiles of the
    served version (``version_dir``: the one the ``embeddings`` view reads) have a merge due or a run that
    names a partial no longer on disk; None when there is nothing to merge or no version is served."""
    from .tiles import FANOUT, compaction_due

    if version_dir is None or not compaction_due(version_dir, fanout or FANOUT):
        return None
    return Step(names.job("compact_tiles"), "map_tile_runs", names=names)


# ---- runs in progress


def launcher() -> str:
    """This process, as a run tag value."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(tag: str | None) -> bool:
    if tag is not None and ":" not in tag:
        return False  # an in-process run of an older release, which left none behind alive
    host, _, pid = (tag or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's, or not ours: only Dagster can say
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED]


def _in_progress(instance: dg.DagsterInstance, job: str | None = None) -> list:
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=_IN_PROGRESS, job_name=job))
    return [r for r in runs if _alive(r.tags.get(LAUNCHER_TAG))]


def dead_runs(instance: dg.DagsterInstance) -> list:
    """Runs marked in progress whose launching process on this machine is gone (killed mid-run)."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=_IN_PROGRESS))
    return [r for r in runs if LAUNCHER_TAG in r.tags and not _alive(r.tags[LAUNCHER_TAG])]


def busy(instance: dg.DagsterInstance) -> str | None:
    """Why nothing should start now: runs of this home in progress (another ``umap-assets run``,
    or the daemon's); None when there are none."""
    runs = _in_progress(instance)
    if not runs:
        return None
    names = ", ".join(f"{r.job_name} {r.run_id[:8]}" for r in runs[:3])
    return f"{len(runs)} run(s) in progress on this home ({names}); wait for them to finish"


# ---- one training per home


def limit_training(instance: dg.DagsterInstance, names: MapNames = DEFAULT_NAMES) -> None:
    """Give the map's pool ``training`` its one slot now, so the run queue holds a second training run from
    its first look (a pool the queue has not seen yet limits nothing in that look)."""
    info = instance.event_log_storage.get_concurrency_info(names.training_pool)
    if info.slot_count != 1:
        instance.event_log_storage.set_concurrency_slots(names.training_pool, 1)


def training_in_progress(instance: dg.DagsterInstance, names: MapNames = DEFAULT_NAMES) -> list:
    """Runs in progress (queued runs excluded) that hold a training asset: the run queue starts no
    other one meanwhile, and ``umap-assets run`` refuses to train over them."""
    started = [s for s in _IN_PROGRESS if s is not dg.DagsterRunStatus.QUEUED]
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=started))
    return [r for r in runs if r.run_op_concurrency and names.training_pool in (r.run_op_concurrency.all_pools or ())
            and _alive(r.tags.get(LAUNCHER_TAG))]


def training_refusal(instance: dg.DagsterInstance, names: MapNames = DEFAULT_NAMES) -> str | None:
    """Why a training run of the map may not start now in this process (one line), or None."""
    runs = training_in_progress(instance, names)
    if not runs:
        return None
    return (f"another training run is in progress on this home ({runs[0].job_name} {runs[0].run_id[:8]}); "
            "at most one trains at a time: run again once it finishes")
