"""When the model (re)trains: first when samples land, then when new slices drift; on a schedule; on demand."""

import functools
import json

import dagster as dg

from ..map_names import DEFAULT_NAMES, MapNames
from ..planner import limit_training, plan_training
from .binding import bound, resource_keys
from .groups import MAPS, TRAINING
from .resources import WarehouseResource

#: Wait until no new sample has landed for this long, so a burst of slices trains once.
QUIET_SECONDS = 60.0


def evaluate_training(context: dg.SensorEvaluationContext, warehouse: WarehouseResource,
                      names: MapNames) -> dg.SensorResult | dg.SkipReason:
    """Requests ``train_model`` after a burst of new ``samples`` (quiet for ``QUIET_SECONDS``):

    - while no artifact has passed its checks, to train one;
    - afterwards only when the ``drift`` of a new slice says the promoted model's training data
      does not cover it, or when its drift could not be measured (a failed ``drift`` run, for
      example a model trained before drift was measured). New slices that are covered are
      embedded with the current artifact, and the map of every other slice stays as it is.

    The cursor is the storage id of the newest ``samples`` materialization already decided on.
    """
    limit_training(context.instance, names)  # the queue then starts one training run at a time from its first look
    state = json.loads(context.cursor) if context.cursor else {"handled": 0}
    plan = plan_training(context.instance, served=warehouse.store().artifact_path.exists(), handled=state["handled"],
                         quiet_seconds=QUIET_SECONDS, names=names)
    decided = json.dumps({"handled": plan.handled}) if plan.handled is not None else context.cursor
    if plan.step is not None:
        return dg.SensorResult(run_requests=[plan.step.run_request()], cursor=decided)
    if plan.measure:
        return dg.SkipReason(f"{plan.reason}; `automation_sensor` measures it, or materialize `drift` for them")
    if plan.handled is not None:
        return dg.SensorResult(skip_reason=plan.reason, cursor=decided)
    return dg.SkipReason(plan.reason)


@functools.cache
def automation_definitions(names: MapNames) -> dg.Definitions:
    """The map's job ``train_model``, its ``training_sensor``, its ``automation_sensor`` (over the map's
    ``maps`` group) and its ``weekly_retrain`` schedule."""
    train_job = dg.define_asset_job(
        names.job("train_model"), selection=dg.AssetSelection.groups(names.group(TRAINING)),
        description="coreset -> teacher -> student -> artifact -> quality_report (gated by its checks) -> model")
    training = dg.sensor(
        name=names.sensor("training_sensor"), job=train_job, minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING, required_resource_keys=resource_keys(names, evaluate_training),
        description="Trains the first model once samples have landed, then retrains when new slices drift.",
    )(bound(names, evaluate_training, sensor=True))
    automation = dg.AutomationConditionSensorDefinition(
        names.sensor("automation_sensor"), target=dg.AssetSelection.groups(names.group(MAPS)),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Evaluates the automation conditions: measures the drift of new slices and (re-)embeds slices.")
    weekly = dg.ScheduleDefinition(
        name=names.schedule("weekly_retrain"), job=train_job, cron_schedule="0 3 * * 0",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Retrain from the current samples every Sunday at 03:00 (turn on in the UI).")
    return dg.Definitions(jobs=[train_job], sensors=[training, automation], schedules=[weekly])


definitions = automation_definitions
(train_job,) = automation_definitions(DEFAULT_NAMES).jobs
training_sensor, automation_sensor = automation_definitions(DEFAULT_NAMES).sensors
(weekly_retrain,) = automation_definitions(DEFAULT_NAMES).schedules
