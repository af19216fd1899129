"""When the model (re)trains: first when samples land, then when new slices drift; on a schedule; on demand."""

import json

import dagster as dg

from ..planner import TRAIN_JOB, limit_training, plan_training
from .groups import MAPS, TRAINING
from .resources import WarehouseResource

train_job = dg.define_asset_job(
    TRAIN_JOB,
    selection=dg.AssetSelection.groups(TRAINING),
    description="coreset -> teacher -> student -> artifact -> quality_report (gated by its checks) -> model",
)

#: Wait until no new sample has landed for this long, so a burst of slices trains once.
QUIET_SECONDS = 60.0


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
    limit_training(context.instance)  # the queue then starts one training run at a time from its first look
    state = json.loads(context.cursor) if context.cursor else {"handled": 0}
    plan = plan_training(context.instance, served=warehouse.store().artifact_path.exists(), handled=state["handled"],
                         quiet_seconds=QUIET_SECONDS)
    decided = json.dumps({"handled": plan.handled}) if plan.handled is not None else context.cursor
    if plan.step is not None:
        return dg.SensorResult(run_requests=[plan.step.run_request()], cursor=decided)
    if plan.measure:
        return dg.SkipReason(f"{plan.reason}; `automation_sensor` measures it, or materialize `drift` for them")
    if plan.handled is not None:
        return dg.SensorResult(skip_reason=plan.reason, cursor=decided)
    return dg.SkipReason(plan.reason)


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
