"""Sensors: new files become partitions; landed slices start the training chain."""

import json

import dagster as dg

from ..planner import plan_ingest
from .ingest import ingest_job
from .partitions import slices_partitions
from .resources import WarehouseResource


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns each new Parquet file in <home>/incoming into a `slices` partition and ingests it.",
)
def new_slices_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
    """Adds a partition per new, fully written file and requests ``raw_slices`` + ``samples``.

    The plan is :func:`umap_assets.planner.plan_ingest`, the same as ``umap-assets run``'s. The cursor holds only the
    identities of files not yet handed on; the known keys live in the dynamic partitions. Each run
    key is the partition and the file's identity, so one file version is never requested twice.
    """
    previous = json.loads(context.cursor) if context.cursor else {}
    plan = plan_ingest(context.instance, warehouse.layout().incoming, previous)
    for name, reason in sorted(plan.rejected.items()):
        context.log.warning(f"{name}: {reason}")
    for name, line in sorted(plan.copies.items()):
        context.log.info(f"{name}: {line}")
    return dg.SensorResult(
        run_requests=[step.run_request() for step in plan.steps],
        dynamic_partitions_requests=([slices_partitions.build_add_request(plan.new_partitions)]
                                     if plan.new_partitions else []),
        cursor=json.dumps(plan.seen, separators=(",", ":"), sort_keys=True),
    )
