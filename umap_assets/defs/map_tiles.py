"""``map_tiles``: one slice's share of its model version's tile pyramid (:mod:`umap_assets.tiles`)."""

import functools

import dagster as dg
from pydantic import Field

from ..history import latest, metadata_of
from ..spatial import version_frame
from ..tiles import MAX_ZOOM, merge_low_zooms, tiled_keys, write_partial_tiles
from ..map_names import DEFAULT_NAMES, MapNames
from .binding import map_asset
from .groups import MAPS
from .resources import WarehouseResource


class MapTilesConfig(dg.Config):
    """How deep the pyramid goes: zoom ``max_zoom`` has ``2^max_zoom`` tiles a side of 256 x 256 bins."""

    max_zoom: int = Field(MAX_ZOOM, ge=0, le=12)


def compute_map_tiles(context: dg.AssetExecutionContext, config: MapTilesConfig, warehouse: WarehouseResource,
                      names: MapNames) -> dg.MaterializeResult:
    """The density of one slice's rows at zoom levels 0..``max_zoom``, per label, as its partial of the
    version's tile pyramid: ``embeddings/<version>/tiles/<key>.parquet`` (``z, tx, ty, bx, by, label,
    count``: only the bins it fills), written atomically.

    The version is the one this slice's ``embeddings`` were made with, and the frame the version's
    own (``frame.json``), so every partial of a version lines up; the map server sums the partials of
    the version it serves, the one the ``embeddings`` view reads, so its tiles and its points always
    come from one model. A new slice adds its partial and rebuilds no other, and adds its low zooms
    to the version's merged low zooms (``tiles/merged/low.parquet``), so a tile of the whole map reads
    one file: work bounded by the slice, whatever the home's size. Merging the partials in levels, so
    a deeper tile reads a few files and not one a slice, is ``map_tile_runs``'s, after it; until then
    the tiles read this partial itself, so they are right at once.
    """
    key = context.partition_key
    wh = warehouse.warehouse()
    version = metadata_of(latest(context.instance, names.asset_key("embeddings"), key), "artifact_version")
    source = wh.embeddings_path(version, key) if version else None
    if source is None or not source.exists():
        raise dg.Failure(f"slice '{key}': no embeddings file to tile{f' at {source}' if source else ''}; "
                         "materialize `embeddings` for it first")
    stats = write_partial_tiles(source, version_frame(source.parent, first_file=source), config.max_zoom)
    merged_s = merge_low_zooms(source.parent)  # the low zooms, summed over every partial, gain this slice's
    slices = tiled_keys(source.parent)
    context.log.info(f"{key}: {stats.tiles:,} tiles ({stats.rows:,} filled bins) in {stats.seconds:.1f}s; "
                     f"{len(slices)} slice(s) of {version} tiled")
    return dg.MaterializeResult(
        metadata={"tiles": stats.tiles, "bins": stats.rows, "bytes": stats.bytes, "seconds": round(stats.seconds, 3), "merge_seconds": round(merged_s, 3),
                  "slices": len(slices), "max_zoom": config.max_zoom, "artifact_version": version,
                  "path": dg.MetadataValue.path(str(source.parent / "tiles" / source.name))},
        data_version=dg.DataVersion(f"{version}:{key}:{config.max_zoom}"),
    )


@functools.cache
def map_tiles_definitions(names: MapNames) -> dg.Definitions:
    """The map's ``map_tiles`` (per slice, built by automation after its ``embeddings``)."""
    return dg.Definitions(assets=[map_asset(names, "map_tiles", compute_map_tiles, group=MAPS, deps=("embeddings",),
                                            partitioned=True, kinds={"parquet", "duckdb"},
                                            automation_condition=dg.AutomationCondition.eager())])


definitions = map_tiles_definitions
(map_tiles,) = map_tiles_definitions(DEFAULT_NAMES).assets
