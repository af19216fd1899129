"""``remove_slice``: take one slice out of the home on purpose (the UI's launchpad, ``umap-assets remove``)."""

import dagster as dg

from ..discovery import SLICES, files_for_key
from ..planner import REMOVE_JOB
from ..warehouse import home_relative, remove_slice_files
from .partitions import slices_partitions
from .resources import WarehouseResource

@dg.op
def remove_slice_rows(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> None:
    """Delete the slice's rows, sample, catalog record and embeddings, then its ``slices`` partition:
    its rows leave the samples (so the next model's training data) and the published map.

    Refused while its file is still in ``incoming`` (the next look would ingest it again): move or
    delete the file first. Its history stays in Dagster's event log.
    """
    key = context.partition_key
    layout = warehouse.layout()
    present = files_for_key(layout.incoming, key)
    if present:
        raise dg.Failure(f"slice '{key}': its file {present[0].name} is still in {layout.incoming}; move or delete it "
                         "first, or the next run ingests it again")
    removed = remove_slice_files(warehouse.warehouse(), key)
    context.instance.delete_dynamic_partition(SLICES, key)
    context.log.info(f"slice '{key}' removed: {', '.join(home_relative(p, layout.home) for p in removed) or 'no files'}")


@dg.job(name=REMOVE_JOB, partitions_def=slices_partitions,
        description="Remove one slice from the home (pick its partition): its rows leave the samples, the next "
                    "model's training data and the published map. Its file must be gone from incoming/ first.")
def remove_slice_job():
    remove_slice_rows()
