"""When the model retrains: after slices land (debounced), on a schedule, or on demand."""

import json
import time

import dagster as dg

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


@dg.sensor(
    job=train_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrains the model once new slices' samples have landed and the burst is over.",
)
def training_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """Requests ``train_model`` when ``samples`` has new materializations since the last request.

    The cursor is the storage id of the newest ``samples`` materialization already handed on.
    """
    state = json.loads(context.cursor) if context.cursor else {"handled": 0}
    records = context.instance.fetch_materializations(samples.key, limit=1).records
    latest = records[0] if records else None
    if latest is None or latest.storage_id <= state["handled"]:
        return dg.SkipReason("no new samples since the last training run")
    age = time.time() - latest.event_log_entry.timestamp
    if age < QUIET_SECONDS:
        return dg.SkipReason(f"new samples landed {age:.0f}s ago; waiting for {QUIET_SECONDS:.0f}s of quiet")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"samples-{latest.storage_id}")],
        cursor=json.dumps({"handled": latest.storage_id}),
    )


weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain",
    job=train_job,
    cron_schedule="0 3 * * 0",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain from the current samples every Sunday at 03:00 (turn on in the UI).",
)
