"""``embeddings``: the map coordinates of every row of every slice."""

import dagster as dg

from ..pictures import density_png, png_markdown
from ..warehouse import has_embeddings_view, publish_catalog
from .ingest import raw_slices
from .model import store_of
from .promotion import MAP_FRESHNESS, model
from .partitions import slices_partitions
from .resources import EmbeddingEngine, WarehouseResource
from .groups import MAPS

GROUP = MAPS


@dg.asset(
    partitions_def=slices_partitions,
    deps=[raw_slices, model],
    group_name=GROUP,
    kinds={"parquet", "numpy", "duckdb"},
    automation_condition=dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed(),
    freshness_policy=MAP_FRESHNESS,
)
def embeddings(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, embedding_engine: EmbeddingEngine
) -> dg.MaterializeResult:
    """Every row of one slice on the map: ``id``, ``x``, ``y`` (``x0..xk`` for more components),
    ``label`` when present, and the ``artifact_version`` that produced it.

    Streams the slice in chunks through the promoted artifact (the newest one that passed its
    checks), on the local or the Spark engine. A new slice is embedded as soon as it lands; a new
    artifact makes every slice stale, and automation re-embeds them. Query all slices at once
    through the DuckDB view ``embeddings`` in ``warehouse.duckdb``. The materialization shows the
    slice's map: every row, as density (:func:`umap_assets.pictures.density_png`).
    """
    key = context.partition_key
    wh = warehouse.warehouse()
    store = store_of(warehouse)
    if not store.artifact_path.exists():
        raise dg.Failure(f"no promoted artifact at {store.artifact_path}; run `train_model` and let its checks pass")
    destination = wh.table_path("embeddings", key)
    metadata = embedding_engine.embed(context, str(store.artifact_path), str(wh.table_path("raw_slices", key)),
                                      str(destination))
    version = metadata["artifact_version"]  # the version the embedding process loaded and wrote
    version = getattr(version, "value", version)
    if not has_embeddings_view(wh):  # the view globs every slice's file: only the first needs a rebuild
        publish_catalog(wh)
    picture = {}
    png = density_png(destination, title=key)
    if png is not None:
        picture["map"] = dg.MetadataValue.md(png_markdown(png, key))
    return dg.MaterializeResult(
        metadata={**metadata, **picture, "path": dg.MetadataValue.path(str(destination))},
        data_version=dg.DataVersion(f"{version}:{key}"),
    )


embed_job = dg.define_asset_job(
    "embed_slice",
    selection=dg.AssetSelection.groups(MAPS),
    description="Embed one slice with the promoted artifact, and measure its drift against the current coreset.",
)
