"""Module-level job builders, importable by the subprocesses that the durability tests start."""

import os

import dagster as dg

from umap_assets.defs.ingest import raw_slices, samples
from umap_assets.defs.resources import Seed, SliceContract, WarehouseResource


def multiprocess_ingest_job() -> dg.JobDefinition:
    job = dg.define_asset_job(
        "ingest_multiprocess",
        selection=[raw_slices, samples],
        executor_def=dg.multiprocess_executor,
    )
    defs = dg.Definitions(
        assets=[raw_slices, samples],
        jobs=[job],
        resources={"warehouse": WarehouseResource(), "contract": SliceContract(), "seed": Seed()},
    )
    return defs.resolve_job_def("ingest_multiprocess")


def run_partition(dagster_home: str, home: str, key: str) -> bool:
    """Run one partition with the multiprocess executor on the persistent instance."""
    os.environ["DAGSTER_HOME"] = dagster_home
    os.environ["UMAP_ASSETS_HOME"] = home
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            dg.reconstructable(multiprocess_ingest_job), instance=instance, tags={"dagster/partition": key}
        )
        return result.success
