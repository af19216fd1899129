"""``remove_slice``: take one slice out of the home on purpose (the UI's launchpad, ``umap-assets remove``)."""

import functools

import dagster as dg

from ..map_names import DEFAULT_NAMES, MapNames
from ..warehouse import home_relative, remove_slice_files
from .binding import bound, resource_keys
from .partitions import slices_partitions_of
from .resources import WarehouseResource


def remove_slice_rows(context: dg.OpExecutionContext, warehouse: WarehouseResource, names: MapNames) -> None:
    """Delete the slice's rows, sample, catalog record and embeddings, then its ``slices`` partition:
    its rows leave the samples (so the next model's training data) and the published map.

    Refused while its file is still in the map's source (the next look would ingest it again): move or
    delete the file first. Its history stays in Dagster's event log.
    """
    key = context.partition_key
    layout = warehouse.layout()
    source = warehouse.slice_source(layout)
    if present := source.names_for_key(key):
        raise dg.Failure(f"slice '{key}': its file {present[0]} is still in {source}; move or delete it "
                         "first, or the next run ingests it again")
    removed = remove_slice_files(warehouse.warehouse(), key)
    context.instance.delete_dynamic_partition(names.partitions, key)
    context.log.info(f"slice '{key}' removed: {', '.join(home_relative(p, layout.home) for p in removed) or 'no files'}")


@functools.cache
def maintenance_definitions(names: MapNames) -> dg.Definitions:
    """The map's job ``remove_slice``."""
    op = dg.op(name=names.op("remove_slice_rows"), required_resource_keys=resource_keys(names, remove_slice_rows))(
        bound(names, remove_slice_rows))
    job = dg.GraphDefinition(name=names.job("remove_slice"), node_defs=[op]).to_job(
        partitions_def=slices_partitions_of(names),
        description="Remove one slice from the home (pick its partition): its rows leave the samples, the next "
                    "model's training data and the published map. Its file must be gone from the map's source first.")
    return dg.Definitions(jobs=[job])


definitions = maintenance_definitions
(remove_slice_job,) = maintenance_definitions(DEFAULT_NAMES).jobs
