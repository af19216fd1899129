"""When the model (re)trains: first when samples land, then when new slices drift; on a schedule; on demand."""

import json
import time

import dagster as dg

from .drift import drift
from .embeddings import embeddings
from .ingest import samples
from .model import artifact, coreset, student, teacher
from .quality import quality_report

train_job = dg.define_asset_job(
    "train_model",
    selection=dg.AssetSelection.assets(coreset, teacher, student, artifact, quality_report),
    description="coreset -> teacher -> student -> artifact (gated by its checks) -> quality_report",
)

#: Wait until no new sample has landed for this long, so a burst of slices trains once.
QUIET_SECONDS = 60.0


def _records_after(instance: dg.DagsterInstance, key: dg.AssetKey, after: int, partitions: list[str] | None = None):
    """Every materialization record of ``key`` newer than storage id ``after`` (paged)."""
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


@dg.sensor(
    job=train_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Trains the first model once samples have landed, then retrains when new slices drift.",
)
def training_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """Requests ``train_model`` after a burst of new ``samples`` (quiet for ``QUIET_SECONDS``):

    - when no artifact exists yet, to train the first model;
    - afterwards only when the ``drift`` of at least one new slice says the current coreset does not
      cover it. New slices that are covered are embedded with the current artifact, and the map
      of every other slice stays as it is.

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
    if instance.get_latest_materialization_event(artifact.key) is None:
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"samples-{latest.storage_id}",
                                        tags={"umap_assets/retrain_reason": "first model"})],
            cursor=decided,
        )
    landed = {r.partition_key: r.storage_id for r in new_samples if r.partition_key}
    measured = {}
    for record in _records_after(instance, drift.key, min(landed.values()), sorted(landed)):
        if record.storage_id > landed[record.partition_key]:  # measured on the new sample
            measured[record.partition_key] = record.asset_materialization.metadata
    waiting = sorted(set(landed) - set(measured))
    if waiting:
        return dg.SkipReason(
            f"waiting for `drift` of {len(waiting)} new slice(s) ({', '.join(waiting[:5])}); the automation "
            "sensor measures it, or materialize `drift` for them"
        )
    drifted = sorted(k for k, meta in measured.items() if meta["drifted"].value)
    if not drifted:
        worst = max(measured, key=lambda k: measured[k]["uncovered_fraction"].value)
        return dg.SensorResult(
            skip_reason=f"the current model covers the {len(measured)} new slice(s) (worst: {worst}, "
                        f"{measured[worst]['uncovered_fraction'].value:.1%} uncovered); no retraining",
            cursor=decided,
        )
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"samples-{latest.storage_id}",
                                    tags={"umap_assets/retrain_reason": "drift: " + ", ".join(drifted[:10])})],
        cursor=decided,
    )


automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.assets(drift, embeddings),
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
