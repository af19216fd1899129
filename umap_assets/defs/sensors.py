"""Sensors: new files become partitions; landed slices start the training chain."""

import json

import dagster as dg

from .discovery import discover_slices, ingest_tags
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

    Discovery is :func:`discover_slices`, the same as ``umap-assets run``. The cursor holds only the
    identities of files not yet handed on; the known keys live in the dynamic partitions. Each run
    key is the partition and the file's identity, so one file version is never requested twice.
    """
    previous = json.loads(context.cursor) if context.cursor else {}
    found = discover_slices(context.instance, warehouse.layout().incoming, previous)
    existing = set(context.instance.get_dynamic_partitions(slices_partitions.name))
    new_keys = sorted({f.key for f in found.ready} - existing)
    for name, reason in sorted(found.rejected.items()):
        context.log.warning(f"{name}: {reason}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"{f.key}:{f.identity}", partition_key=f.key, tags=ingest_tags(f))
            for f in found.ready
        ],
        dynamic_partitions_requests=[slices_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=json.dumps(found.seen(), separators=(",", ":"), sort_keys=True),
    )
