"""Sensors: new files become partitions; landed slices start the training chain."""

import functools
import json

import dagster as dg

from ..map_names import DEFAULT_NAMES, MapNames
from ..planner import plan_ingest
from .binding import bound, resource_keys
from .partitions import slices_partitions_of
from .resources import WarehouseResource


def evaluate_new_slices(context: dg.SensorEvaluationContext, warehouse: WarehouseResource,
                        names: MapNames) -> dg.SensorResult:
    """Adds a partition per new, fully written file and requests ``raw_slices`` + ``samples``.

    The plan is :func:`umap_assets.planner.plan_ingest`, the same as ``umap-assets run``'s. The cursor holds only the
    identities of files not yet handed on; the known keys live in the dynamic partitions. Each run
    key is the partition and the file's identity, so one file version is never requested twice.
    """
    previous = json.loads(context.cursor) if context.cursor else {}
    plan = plan_ingest(context.instance, warehouse.slice_source(), previous, names=names)
    for name, reason in sorted(plan.rejected.items()):
        context.log.warning(f"{name}: {reason}")
    for name, line in sorted(plan.copies.items()):
        context.log.info(f"{name}: {line}")
    return dg.SensorResult(
        run_requests=[step.run_request() for step in plan.steps],
        dynamic_partitions_requests=([slices_partitions_of(names).build_add_request(plan.new_partitions)]
                                     if plan.new_partitions else []),
        cursor=json.dumps(plan.seen, separators=(",", ":"), sort_keys=True),
    )


@functools.cache
def sensors_definitions(names: MapNames) -> dg.Definitions:
    """The map's ``new_slices_sensor``, which runs the map's job ``ingest_slice``."""
    sensor = dg.sensor(
        name=names.sensor("new_slices_sensor"), job_name=names.job("ingest_slice"), minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING, required_resource_keys=resource_keys(names, evaluate_new_slices),
        description=f"Turns each new Parquet file of the map's source (<home>/incoming by default) into a `{names.partitions}` partition and ingests it.",
    )(bound(names, evaluate_new_slices, sensor=True))
    return dg.Definitions(sensors=[sensor])


definitions = sensors_definitions
(new_slices_sensor,) = sensors_definitions(DEFAULT_NAMES).sensors
