"""``map_tile_runs``: the served version's partial tiles merged in levels (:func:`umap_assets.tiles.compact`)."""

import functools

import dagster as dg
from pydantic import Field

from ..map_names import DEFAULT_NAMES, MapNames
from ..tiles import FANOUT, RUNS, TILES_DIR, compact
from ..warehouse import published_embeddings
from .binding import map_asset
from .groups import MAPS
from .resources import WarehouseResource


class MapTileRunsConfig(dg.Config):
    """How the partials are merged: ``fanout`` units a run; at most ``max_merges`` runs written by one
    materialization (0: every merge due), so a compaction can be cut into shorter steps."""

    fanout: int = Field(FANOUT, ge=2)
    max_merges: int = Field(0, ge=0)


#: After new partials land: once per burst of ``map_tiles`` materializations (none still in
#: progress), whether or not every slice is tiled (a slice that failed to tile blocks no compaction).
AFTER_NEW_PARTIALS = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after new partials")


def compute_map_tile_runs(context: dg.AssetExecutionContext, config: MapTileRunsConfig,
                          warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The partial tiles of the served version (the one the ``embeddings`` view reads, so the one the
    map server answers from) merged in levels: ``embeddings/<version>/tiles/runs/L<level>_<first>_<last>.parquet``.

    ``fanout`` partials no run holds become a level-1 run, ``fanout`` level-1 runs a level-2 run, and so
    on, so a tile reads O(``fanout`` x levels) files, not one a slice. It runs after ``map_tiles``, never
    inside a slice's own step: adding a slice costs that slice's work, and the merges, amortised about a
    slice's partial times the levels, are paid here, one compaction at a time (the map's pool
    ``map_tile_runs``, :attr:`MapNames.tile_runs_pool`, and a file lock). Tiles are the same before and
    after: a partial no run holds is read by itself. A version not served yet is compacted once it is (its last slice's ``map_tiles`` comes after the switch).
    """
    wh = warehouse.warehouse()
    version = published_embeddings(wh).get("current")
    if not version or not wh.embeddings_dir(version).exists():
        context.log.info("no version is served yet: nothing to compact")
        return dg.MaterializeResult(metadata={"runs_written": 0, "artifact_version": version or ""})
    done = compact(wh.embeddings_dir(version), config.fanout, config.max_merges or None)
    context.log.info(f"{version}: {len(done.written)} run(s) written ({', '.join(done.written) or 'none due'}), "
                     f"{done.removed} removed, a tile reads {done.files_before} -> {done.files_after} file(s), "
                     f"{done.seconds:.1f}s" + ("; merges left for the next run" if done.pending else ""))
    return dg.MaterializeResult(metadata={
        "runs_written": len(done.written), "runs": ", ".join(done.written), "levels": ", ".join(map(str, done.levels)),
        "runs_removed": done.removed, "files_read_before": done.files_before, "files_read_after": done.files_after,
        "seconds": round(done.seconds, 3), "bytes": done.bytes, "merges_left": done.pending, "fanout": config.fanout,
        "artifact_version": version,
        "path": dg.MetadataValue.path(str(wh.embeddings_dir(version) / TILES_DIR / RUNS))})


@functools.cache
def map_tile_runs_definitions(names: MapNames) -> dg.Definitions:
    """The map's ``map_tile_runs`` (unpartitioned, after its ``map_tiles``, in its one-slot pool) and its
    job ``compact_tiles``."""
    asset = map_asset(names, "map_tile_runs", compute_map_tile_runs, group=MAPS, deps=("map_tiles",),
                      kinds={"parquet", "duckdb"}, pool=names.tile_runs_pool, automation_condition=AFTER_NEW_PARTIALS)
    job = dg.define_asset_job(names.job("compact_tiles"), selection=dg.AssetSelection.assets(asset),
                              description="Merge the served version's partial tiles in levels, so a tile reads a few files.")
    return dg.Definitions(assets=[asset], jobs=[job])


definitions = map_tile_runs_definitions
(map_tile_runs,) = map_tile_runs_definitions(DEFAULT_NAMES).assets
(compact_job,) = map_tile_runs_definitions(DEFAULT_NAMES).jobs
