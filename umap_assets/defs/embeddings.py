"""``embeddings``: the map coordinates of every row of every slice."""

import functools

import dagster as dg
from pydantic import Field

from ..pictures import density_png, png_markdown
from ..runtime import Projector
from ..warehouse import map_status, publish_embeddings, published_embeddings
from ..map_names import DEFAULT_NAMES, MapNames
from .binding import map_asset
from .groups import MAPS
from .promotion import MAP_FRESHNESS
from .resources import EmbeddingEngine, WarehouseResource


class EmbeddingsConfig(dg.Config):
    """How many models' embeddings stay on disk: the one the view reads and the ones before it
    (a reader that opened the catalog before a switch reads the older version to its end)."""

    keep_versions: int = Field(3, ge=1)  # 0 would delete the embeddings the view reads


def compute_embeddings(
    context: dg.AssetExecutionContext, config: EmbeddingsConfig, warehouse: WarehouseResource,
    embedding_engine: EmbeddingEngine,
) -> dg.MaterializeResult:
    """Every row of one slice on the map: ``id``, ``x``, ``y`` (``x0..xk`` for more components),
    ``label`` when present, and the ``artifact_version`` that produced it.

    Streams the slice in chunks through the promoted artifact (the newest one that passed its
    checks), on the local or the Spark engine. A new slice is embedded as soon as it lands; a new
    artifact makes every slice stale, and automation re-embeds them. Each model's maps go to their
    own folder, ``embeddings/<version>/<key>.parquet``; the DuckDB view ``embeddings`` in
    ``warehouse.duckdb`` switches to a new version only once every slice has it
    (:func:`umap_assets.warehouse.publish_embeddings`), and the last ``keep_versions`` stay. Each file
    is sorted along a Hilbert curve over the version's fixed frame, with an id index beside it
    (:mod:`umap_assets.spatial`), so the map server reads only the row groups in view. The
    materialization shows the slice's map: every row, as density (:func:`umap_assets.pictures.density_png`).
    """
    key = context.partition_key
    wh = warehouse.warehouse()
    store = warehouse.store()
    if not store.artifact_path.exists():
        raise dg.Failure(f"no promoted artifact at {store.artifact_path}; run `train_model` and let its checks pass")
    version = Projector.load(store.artifact_path).version
    artifact = store.versioned_artifact_path(version)  # immutable: a promotion meanwhile cannot mix versions
    destination = wh.embeddings_path(version, key)
    metadata = embedding_engine.embed(context, str(artifact if artifact.exists() else store.artifact_path),
                                      str(wh.table_path("raw_slices", key)), str(destination), ordered=True)
    published = publish_embeddings(wh, version, wh.keys("raw_slices"), keep=config.keep_versions)
    status = map_status(wh, version, wh.keys("raw_slices"))
    context.log.info(status.line() + ("" if published else f"; {version} is published once every slice is embedded with it"))
    picture = {}
    png = density_png(destination, title=key)
    if png is not None:
        picture["map"] = dg.MetadataValue.md(png_markdown(png, key))
    return dg.MaterializeResult(
        metadata={**metadata, **picture, "view_version": published_embeddings(wh).get("current", ""),
                  "map_status": status.line(),
                  "path": dg.MetadataValue.path(str(destination))},
        data_version=dg.DataVersion(f"{version}:{key}"),
    )


@functools.cache
def embeddings_definitions(names: MapNames) -> dg.Definitions:
    """The map's ``embeddings`` (per slice, kept up to date by automation) and its job ``embed_slice``."""
    asset = map_asset(names, "embeddings", compute_embeddings, group=MAPS, deps=("raw_slices", "model"),
                      partitioned=True, kinds={"parquet", "numpy", "duckdb"}, freshness_policy=MAP_FRESHNESS,
                      automation_condition=dg.AutomationCondition.eager()
                      & dg.AutomationCondition.all_deps_blocking_checks_passed())
    per_slice = dg.AssetSelection.groups(names.group(MAPS)) - dg.AssetSelection.assets(names.asset_key("map_tile_runs"))
    job = dg.define_asset_job(names.job("embed_slice"), selection=per_slice,
                              description="Embed one slice with the promoted artifact, tile it, and measure its drift "
                                          "against the current coreset.")
    return dg.Definitions(assets=[asset], jobs=[job])


definitions = embeddings_definitions
(embeddings,) = embeddings_definitions(DEFAULT_NAMES).assets
(embed_job,) = embeddings_definitions(DEFAULT_NAMES).jobs
