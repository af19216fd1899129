"""When the model (re)trains: first when samples land, then when new slices drift; on a schedule; on demand."""

import json
import time

import dagster as dg

from .drift import drift
from .groups import MAPS, TRAINING
from .ingest import samples
from .resources import WarehouseResource

train_job = dg.define_asset_job(
    "train_model",
    selection=dg.AssetSelection.groups(TRAINING),
    description="coreset -> teacher -> student -> artifact -> quality_report (gated by its checks) -> model",
)

#: Wait until no new sample has landed for this long, so a burst of slices trains once.
QUIET_SECONDS = 60.0


def _records_after(instance: dg.DagsterInstance, key: dg.AssetKey, after: int,
                   partitions: list[str] | None = None) -> list:
    """Every materialization record of ``key`` after storage id ``after``, oldest first (paged)."""
    records, cursor = [], None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after, asset_partitions=partitions),
            limit=1000, cursor=cursor, ascending=True,
        )
        records.extend(page.records)
        if not page.has_more:
            return records
        cursor = page.cursor


def _drift_of_new_slices(instance: dg.DagsterInstance, landed: dict[str, int]) -> tuple[dict, list[str]]:
    """For each slice in ``landed`` (key -> storage id of its new sample): the metadata of its newest
    ``drift`` materialization after that sample, or its key in the second list when the newest
    ``drift`` run planned after that sample failed. Slices not measured yet are in neither."""
    measured: dict[str, dict] = {}
    for record in _records_after(instance, drift.key, min(landed.values()), sorted(landed)):
        if record.storage_id > landed[record.partition_key]:  # measured on the new sample (oldest first)
            measured[record.partition_key] = record.asset_materialization.metadata
    failed = []
    for key in sorted(set(landed) - set(measured)):
        planned = instance.get_latest_planned_materialization_info(drift.key, key)
        if planned is None or planned.storage_id <= landed[key]:
            continue
        run = instance.get_run_by_id(planned.run_id)
        if run is not None and run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            failed.append(key)
    return measured, failed


@dg.sensor(
    job=train_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Trains the first model once samples have landed, then retrains when new slices drift.",
)
def training_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult | dg.SkipReason:
    """Requests ``train_model`` after a burst of new ``samples`` (quiet for ``QUIET_SECONDS``):

    - while no artifact has passed its checks, to train one;
    - afterwards only when the ``drift`` of a new slice says the promoted model's training data
      does not cover it, or when its drift could not be measured (a failed ``drift`` run, for
      example a model trained before drift was measured). New slices that are covered are
      embedded with the current artifact, and the map of every other slice stays as it is.

    The cursor is the storage id of the newest ``samples`` materialization already decided on.
    """
    instance = context.instance
    state = json.loads(context.cursor) if context.cursor else {"handled": 0}
    new_samples = _records_after(instance, samples.key, state["handled"])
    if not new_samples:
        return dg.SkipReason("no new samples since the last decision")
    latest = new_samples[-1]
    age = time.time() - latest.event_log_entry.timestamp
    if age < QUIET_SECONDS:
        return dg.SkipReason(f"new samples landed {age:.0f}s ago; waiting for {QUIET_SECONDS:.0f}s of quiet")
    decided = json.dumps({"handled": latest.storage_id})

    def train(reason: str) -> dg.SensorResult:
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"samples-{latest.storage_id}",
                                        tags={"umap_assets/retrain_reason": reason})],
            cursor=decided,
        )

    if not warehouse.store().artifact_path.exists():
        return train("no promoted model yet")
    landed = {r.partition_key: r.storage_id for r in new_samples if r.partition_key}
    if not landed:
        return dg.SensorResult(skip_reason="the new samples name no slice", cursor=decided)
    measured, failed = _drift_of_new_slices(instance, landed)
    waiting = sorted(set(landed) - set(measured) - set(failed))
    if waiting:
        return dg.SkipReason(
            f"waiting for `drift` of {len(waiting)} new slice(s) ({', '.join(waiting[:5])}); "
            "`automation_sensor` measures it, or materialize `drift` for them"
        )
    reason = retrain_reason(measured, failed)
    if reason:
        return train(reason)
    return dg.SensorResult(skip_reason=f"{coverage_summary(measured)}; no retraining", cursor=decided)


def retrain_reason(measured: dict[str, dict], failed: list[str]) -> str | None:
    """Why new slices need a new model, from their ``drift`` metadata (key -> metadata) and the keys
    whose drift could not be measured; None when the served model covers them all. The one rule of
    ``training_sensor`` and ``umap-assets run``."""
    drifted = sorted(k for k, meta in measured.items() if meta["drifted"].value)
    reasons = ([f"drift: {', '.join(drifted[:10])}"] if drifted else []) + (
        [f"drift not measurable: {', '.join(sorted(failed)[:10])}"] if failed else [])
    return "; ".join(reasons) or None


def coverage_summary(measured: dict[str, dict]) -> str:
    """One line on how well the served model covers the measured slices (at least one)."""
    worst = max(measured, key=lambda k: measured[k]["uncovered_fraction"].value)
    return (f"the current model covers the {len(measured)} new slice(s) (worst: {worst}, "
            f"{measured[worst]['uncovered_fraction'].value:.1%} uncovered)")


automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.groups(MAPS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Evaluates the automation conditions: measures the drift of new slices and (re-)embeds slices.",
)


weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain",
    job=train_job,
    cron_schedule="0 3 * * 0",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain from the current samples every Sunday at 03:00 (turn on in the UI).",
)
