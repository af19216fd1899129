"""The map at any scale: spatial order, viewport/neighbour/selection queries and the tile pyramid."""

import shutil

import dagster as dg
import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from umap_assets.artifacts import build_artifact
from umap_assets.demo_data import synthetic_chunk, write_slice
from umap_assets.engines import LocalEngine, embed
from umap_assets.map_index import MapIndex, Region
from umap_assets.numerics import compress
from umap_assets.numerics.distill import StudentConfig, train_student
from umap_assets.spatial import MapFrame, hilbert_keys, id_index_path, is_ordered, write_ordered
from umap_assets.tiles import (TILE_BINS, TileIndex, compact, compaction_due, cover, merge_low_zooms, merge_runs, tiles_path,
                               write_partial_tiles)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    X, _ = synthetic_chunk(0, 2000, dim=16, n_clusters=4, seed=2)
    result = train_student(X, X[:, :2] * 0.5, None, StudentConfig(hidden=(32, 32), input_pca_dim=None, steps=4,
                                                                   graph_weight=0.0, seed=0))
    path = tmp_path_factory.mktemp("art") / "a.uart"
    path.write_bytes(build_artifact(compress.fold_layers(result)))
    return path


def _slice(path, n, first_id):
    X, y = synthetic_chunk(first_id, n, dim=16, n_clusters=4, seed=2)
    return write_slice(path, np.arange(n) + first_id, X, y)


@pytest.fixture(scope="module")
def version_dir(artifact, tmp_path_factory):
    """A version's folder as the warehouse holds it: two slices of 30,000 rows, ordered, with id indexes."""
    root = tmp_path_factory.mktemp("home")
    for number, key in enumerate(("s1", "s2")):
        src = _slice(root / f"{key}-in.parquet", 30_000, number * 1_000_000)
        embed(LocalEngine(chunk_rows=4096), artifact, src, root / "v" / f"{key}.parquet", ordered=True)
    return root / "v"


@pytest.fixture(scope="module")
def fine_dir(version_dir):
    """The same version with row groups of 1,024 rows (59 of them), so pruning shows on small slices."""
    fine = version_dir.parent / "fine"
    fine.mkdir()
    shutil.copy(version_dir / "frame.json", fine / "frame.json")
    for key in ("s1", "s2"):
        write_ordered(version_dir / f"{key}.parquet", fine / f"{key}.parquet", MapFrame.load(fine / "frame.json"),
                      row_group_rows=1024)
    return fine


def _all(version_dir):
    return duckdb.sql(f"SELECT regexp_extract(filename, '([^/]+)[.]parquet$', 1) AS slice, * FROM "
                      f"read_parquet('{version_dir}/*.parquet', filename = true)").df()


def test_hilbert_keys_visit_every_cell_once_by_steps_to_a_neighbour():
    cx, cy = np.meshgrid(np.arange(16), np.arange(16))
    keys = hilbert_keys(cx.ravel(), cy.ravel(), bits=4)
    assert sorted(keys) == list(range(256))
    order = np.argsort(keys)
    steps = np.abs(np.diff(cx.ravel()[order])) + np.abs(np.diff(cy.ravel()[order]))
    assert (steps == 1).all(), "each next cell on the curve touches the one before"


def test_ordered_embeddings_hold_the_same_rows_in_curve_order(artifact, version_dir, tmp_path):
    plain = embed(LocalEngine(chunk_rows=4096), artifact, version_dir.parent / "s1-in.parquet", tmp_path / "plain.parquet")
    a = pq.read_table(tmp_path / "plain.parquet").to_pandas().sort_values("id").reset_index(drop=True)
    ordered = version_dir / "s1.parquet"
    b = pq.read_table(ordered).to_pandas()
    assert plain.rows == len(b) == 30_000 and not b["id"].is_monotonic_increasing
    b = b.sort_values("id").reset_index(drop=True)
    assert (a == b).all().all(), "the same rows, values and schema, only reordered"
    assert pq.read_schema(ordered).equals(pq.read_schema(tmp_path / "plain.parquet"))
    frame = MapFrame.load(version_dir / "frame.json")
    assert is_ordered(ordered, frame) and not is_ordered(tmp_path / "plain.parquet", frame)
    md = pq.read_metadata(ordered)
    assert md.num_row_groups == -(-30_000 // 8192) and max(md.row_group(g).num_rows for g in range(md.num_row_groups)) <= 8192
    index = pq.read_table(id_index_path(ordered))
    ids = pq.read_table(ordered).column("id").to_numpy()
    np.testing.assert_array_equal(ids[index.column("row").to_numpy()], index.column("id").to_numpy())
    assert (np.diff(index.column("id").to_numpy()) > 0).all()


def test_a_viewport_reads_only_the_row_groups_in_view_and_matches_a_full_scan(fine_dir):
    index = MapIndex(sorted(fine_dir.glob("*.parquet")))
    rows = _all(fine_dir)
    cx, cy = rows["x"].median(), rows["y"].median()
    w = (rows["x"].max() - rows["x"].min()) / 40
    got = index.viewport(cx - w, cy - w, cx + w, cy + w, cap=100_000)
    truth = rows[(rows.x >= cx - w) & (rows.x <= cx + w) & (rows.y >= cy - w) & (rows.y <= cy + w)]
    assert len(truth) > 50 and got.complete
    assert sorted(zip(got.table.column("slice").to_pylist(), got.table.column("id").to_pylist())) == \
        sorted(zip(truth["slice"], truth["id"]))
    assert got.groups_total == 60 and got.groups_read <= 12, "the spatial order prunes the row groups out of view"
    assert set(got.table.column_names) >= {"slice", "id", "x", "y", "label"}
    capped = index.viewport(rows.x.min(), rows.y.min(), rows.x.max(), rows.y.max(), cap=1000)
    assert capped.table.num_rows == 1000 and not capped.complete
    empty = index.viewport(1e6, 1e6, 1e6 + 1, 1e6 + 1)
    assert empty.table.num_rows == 0 and empty.groups_read == 0


def test_neighbours_come_from_a_small_box_and_equal_brute_force(fine_dir):
    index = MapIndex(sorted(fine_dir.glob("*.parquet")))
    rows = _all(fine_dir)
    for row_id in (1_000_017, 5):
        found = index.neighbours(str(row_id), k=12)
        me = rows[rows.id == row_id].iloc[0]
        d = np.hypot(rows.x.to_numpy(np.float64) - me.x, rows.y.to_numpy(np.float64) - me.y)
        d[(rows.id == row_id).to_numpy()] = np.inf
        want = rows.id.to_numpy()[np.argsort(d, kind="stable")[:12]]
        assert found.row["id"] == row_id and found.row["slice"] == me.slice
        assert [n["id"] for n in found.neighbours] == list(want)
        assert found.groups_read < 15, "not a scan of every row group"
    assert index.neighbours("999999999") is None and index.neighbours("not-a-number") is None


def test_a_selection_counts_per_label_and_exports_what_the_pasted_sql_returns(fine_dir, tmp_path):
    index = MapIndex(sorted(fine_dir.glob("*.parquet")))
    rows = _all(fine_dir)
    cx, cy, w = rows.x.median(), rows.y.median(), (rows.x.max() - rows.x.min()) / 10
    region = Region(polygon=((cx - w, cy - w), (cx + w, cy - w), (cx + w / 2, cy + w), (cx - w, cy)))
    inside = region.contains(rows.x.to_numpy(), rows.y.to_numpy())
    selection = index.select(region)
    assert selection.count == inside.sum() > 100
    assert selection.per_label == {str(k): int(v) for k, v in rows[inside].label.value_counts().items()}
    assert sorted(selection.ids) == sorted(rows[inside].id)
    pasted = duckdb.sql(index.sql(region)).df()
    assert sorted(pasted.id) == sorted(rows[inside].id), "the query to paste returns the same rows"
    assert index.export(region, tmp_path / "sel.parquet") == selection.count
    assert sorted(pq.read_table(tmp_path / "sel.parquet").column("id").to_pylist()) == sorted(rows[inside].id)
    assert index.export(region, tmp_path / "sel.csv", "csv") == selection.count
    assert len((tmp_path / "sel.csv").read_text().splitlines()) == selection.count + 1
    with pytest.raises(ValueError, match="3 to 64 vertices"):
        Region(polygon=((0, 0), (1, 1)))


def _histogram(rows, frame: MapFrame, z: int, tx: int, ty: int) -> dict:
    n = TILE_BINS << z
    gx, gy = frame.cells(rows.x.to_numpy(), rows.y.to_numpy(), n)
    here = (gx // TILE_BINS == tx) & (gy // TILE_BINS == ty)
    bins, counts = np.unique((gy[here] % TILE_BINS) * TILE_BINS + gx[here] % TILE_BINS, return_counts=True)
    return dict(zip(bins.tolist(), counts.tolist()))


def test_partial_tiles_sum_to_the_density_of_every_row(version_dir):
    frame = MapFrame.load(version_dir / "frame.json")
    for key in ("s1", "s2"):
        write_partial_tiles(version_dir / f"{key}.parquet", frame, max_zoom=3)
    tiles, rows = TileIndex(version_dir), _all(version_dir)
    assert not tiles.merged
    _check_tiles(tiles, rows, frame, version_dir)
    merge_low_zooms(version_dir)
    assert tiles.merged, "the merged low zooms name both partials"
    _check_tiles(tiles, rows, frame, version_dir)


def test_the_merged_low_zooms_follow_the_partials_on_disk(version_dir, tmp_path):
    frame = MapFrame.load(version_dir / "frame.json")
    for key in ("s1", "s2"):
        shutil.copy(version_dir / f"{key}.parquet", tmp_path / f"{key}.parquet")
    write_partial_tiles(tmp_path / "s1.parquet", frame, max_zoom=3)
    merge_low_zooms(tmp_path)
    tiles = TileIndex(tmp_path)
    assert tiles.merged and tiles.tile(0, 0, 0).count.sum() == 30_000
    write_partial_tiles(tmp_path / "s2.parquet", frame, max_zoom=3)
    summed = tiles.tile(0, 0, 0)
    assert not tiles.merged and summed.count.sum() == 60_000, "not merged yet: summed from the partials"
    merge_low_zooms(tmp_path)
    merged = tiles.tile(0, 0, 0)
    assert tiles.merged and merged.count.sum() == 60_000 and merged.groups_read < summed.groups_read
    assert np.array_equal(merged.count, summed.count) and merged.labels == summed.labels
    write_partial_tiles(tmp_path / "s1.parquet", frame, max_zoom=3)  # replaced (a slice embedded again)
    assert not tiles.merged and tiles.tile(0, 0, 0).count.sum() == 60_000
    merge_low_zooms(tmp_path)
    assert tiles.merged and tiles.tile(0, 0, 0).count.sum() == 60_000, "merged again from every partial, not twice"
    (tmp_path / "tiles" / "s2.parquet").unlink()  # removed
    assert not tiles.merged and tiles.tile(0, 0, 0).count.sum() == 30_000


def _check_tiles(tiles, rows, frame, version_dir):
    assert tiles.slices == ["s1", "s2"]
    top = tiles.tile(0, 0, 0)
    assert top.count.sum() == len(rows) == 60_000
    assert dict(zip(top.labels, top.label_totals)) == {str(k): int(v) for k, v in rows.label.value_counts().items()}
    gx, gy = frame.cells(rows.x.to_numpy(), rows.y.to_numpy(), TILE_BINS << 3)
    tx, ty = int(np.median(gx) // TILE_BINS), int(np.median(gy) // TILE_BINS)
    deep = tiles.tile(3, tx, ty)
    assert dict(zip((deep.by * TILE_BINS + deep.bx).tolist(), deep.count.tolist())) == _histogram(rows, frame, 3, tx, ty)
    groups = sum(pq.read_metadata(tiles_path(version_dir / f"{k}.parquet")).num_row_groups for k in ("s1", "s2"))
    assert deep.groups_read <= groups / 4, "a tile reads only the row groups whose statistics can hold it"
    corner = tiles.tile(3, 7, 7)  # the frame's padding: few rows or none
    assert corner.count.sum() == sum(_histogram(rows, frame, 3, 7, 7).values())


def test_map_tiles_is_built_slice_by_slice_by_dagster(artifact, tmp_path):
    """``embeddings`` then ``map_tiles`` for one slice, then a second: the first partial stays as it was."""
    from umap_assets.defs.embeddings import embeddings
    from umap_assets.defs.map_tiles import map_tiles
    from umap_assets.defs.resources import LocalEmbedding, WarehouseResource
    from umap_assets.warehouse import write_canonical_slice

    warehouse = WarehouseResource(home=str(tmp_path / "home"))
    store, wh = warehouse.store(), warehouse.warehouse()
    store.artifact_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(artifact, store.artifact_path)
    resources = {"warehouse": warehouse, "embedding_engine": LocalEmbedding(chunk_rows=1000)}
    stamps = {}
    with dg.instance_for_test() as instance:
        for number, key in enumerate(("s1", "s2")):
            source = wh.table_path("raw_slices", key)
            source.parent.mkdir(parents=True, exist_ok=True)
            write_canonical_slice(_slice(tmp_path / f"{key}.parquet", 3000, number * 10_000), source)
            instance.add_dynamic_partitions("slices", [key])
            result = dg.materialize([embeddings, map_tiles], partition_key=key, instance=instance, resources=resources,
                                    run_config={"ops": {"map_tiles": {"config": {"max_zoom": 4}}}})
            assert result.success
            meta = result.asset_materializations_for_node("map_tiles")[0].metadata
            version = meta["artifact_version"].value
            stamps[key] = tiles_path(wh.embeddings_path(version, key)).stat().st_mtime_ns
            assert meta["slices"].value == number + 1 and meta["tiles"].value > 5 and meta["bytes"].value > 0
            assert meta["seconds"].value > 0 and meta["max_zoom"].value == 4
    assert tiles_path(wh.embeddings_path(version, "s1")).stat().st_mtime_ns == stamps["s1"], "s2 left s1's partial alone"
    tiles = TileIndex(wh.embeddings_dir(version))
    assert tiles.merged and tiles.tile(0, 0, 0).count.sum() == 6000, "each slice was added to the merged low zooms"
    assert meta["merge_seconds"].value >= 0


def test_rows_outside_the_frame_count_in_its_edge_bins(version_dir, tmp_path):
    shutil.copy(version_dir / "s1.parquet", tmp_path / "s1.parquet")
    rows = pq.read_table(tmp_path / "s1.parquet").to_pandas()
    small = MapFrame(float(rows.x.median()), float(rows.y.median()), float(rows.x.std()) / 4)  # most rows lie outside
    write_partial_tiles(tmp_path / "s1.parquet", small, max_zoom=2)
    tiles = TileIndex(tmp_path)
    assert tiles.tile(0, 0, 0).count.sum() == len(rows) == sum(
        tiles.tile(2, x, y).count.sum() for x in range(4) for y in range(4)), "clamped, never dropped"
    edge = tiles.tile(0, 0, 0)
    assert edge.count[(edge.bx == 0) & (edge.by == 0)].sum() > len(rows) / 10, "the rows below and left: the corner bin"


def test_a_file_without_its_id_index_is_found_by_a_scan_of_its_ids(version_dir, tmp_path):
    shutil.copy(version_dir / "s2.parquet", tmp_path / "s2.parquet")  # as embedded before the id index existed
    index = MapIndex([tmp_path / "s2.parquet"])
    row, read = index.find("1000123")
    assert row["id"] == 1_000_123 and row["slice"] == "s2" and read == index.groups_total
    assert index.neighbours("1000123", k=3).neighbours[0]["id"] != 1_000_123


def test_run_tiles_every_slice_and_puts_back_missing_tiles_alone(tmp_path, capsys):
    """`umap-assets run` (the demo's path): each slice is embedded in curve order and tiled, then the
    tiles are merged in their own step (fanout 2: one level-1 run); a slice whose tiles are gone gets
    `map_tiles` alone, its map untouched, and the run is merged again; the server answers from both."""
    from umap_assets.cli import main
    from umap_assets.map_scale import scale_index
    from umap_assets.map_server import MapData

    home = tmp_path / "home"
    assert main(["demo-data", "--home", str(home), "--dataset", "digits", "--slices", "2"]) == 0
    config = tmp_path / "run.yaml"
    config.write_text("ops: {student: {config: {steps: 100, hidden: [32, 32], input_pca_dim: 16, min_rows: 0}},\n"
                      "      map_tile_runs: {config: {fanout: 2}}}\n"
                      "resources: {quality_gates: {config: {trust_tolerance: 1.0, knn_accuracy_tolerance: 1.0, "
                      "min_student_overlap: 0.0}}}\n")
    args = ["run", "--home", str(home), "--config", str(config)]
    assert main(args) == 0, capsys.readouterr().out[-2000:]
    (version,) = [p for p in (home / "warehouse" / "embeddings").iterdir() if p.is_dir()]
    assert [p.name for p in (version / "tiles" / "runs").glob("*.parquet")] == ["L1_digits_000_digits_001.parquet"]
    assert sorted(p.name for p in (version / "tiles").glob("*.parquet")) == ["digits_000.parquet", "digits_001.parquet"]
    assert is_ordered(version / "digits_000.parquet", MapFrame.load(version / "frame.json"))
    made = (version / "digits_000.parquet").stat().st_mtime_ns
    (version / "tiles" / "digits_001.parquet").unlink()
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "up to date  embeddings[digits_001]" in out and "ok      map_tiles[digits_001]" in out, out[-2000:]
    assert out.index("ok      map_tiles[digits_001]") < out.index("ok      map_tile_runs"), "merged after, in its own step"
    assert "map_tiles[digits_000]" not in out and (version / "digits_000.parquet").stat().st_mtime_ns == made
    from umap_assets.warehouse import Warehouse
    from umap_assets.home import Layout

    scale = scale_index(MapData.load(Warehouse.of(Layout.at(home)), max_points=100))
    assert scale.tile(0, 0, 0)["version"] == version.name and sum(scale.tile(0, 0, 0)["count"]) == 1797


def four_partials(version_dir, out, max_zoom: int) -> MapFrame:
    """Slice s1's rows cut in four slices ``q0..q3`` of 7,500 rows in ``out``, each with its partial tiles
    in the version's frame (returned)."""
    frame = MapFrame.load(version_dir / "frame.json")
    rows = pq.read_table(version_dir / "s1.parquet")
    for number in range(4):
        pq.write_table(rows.slice(number * 7_500, 7_500), out / f"q{number}.parquet")
        write_partial_tiles(out / f"q{number}.parquet", frame, max_zoom=max_zoom)
    return frame


def test_runs_merge_the_partials_in_levels_and_follow_the_partials_on_disk(version_dir, tmp_path):
    """Four partials, fanout 2: two level-1 runs fold into one level-2 run, and a tile then reads one
    file with the sums the partials give; a replaced partial leaves the run unused until merged again."""
    frame = four_partials(version_dir, tmp_path, max_zoom=5)
    tiles = TileIndex(tmp_path)
    summed = {(z, x, y): tiles.tile(z, x, y) for z in (0, 4, 5) for x in range(2**z) for y in range(2**z)
              if z == 0 or (x + y) % 5 == 0}
    assert tiles.files_read == 4
    merge_runs(tmp_path, fanout=2)
    assert [p.name for p in cover(tmp_path / "tiles")] == ["L2_q0_q3.parquet"], "the level-1 runs were folded in"
    assert sorted(p.name for p in (tmp_path / "tiles" / "runs").glob("*.parquet")) == ["L2_q0_q3.parquet"]
    assert tiles.files_read == 1
    for key, want in summed.items():
        got = tiles.tile(*key)
        assert np.array_equal(got.count, want.count) and np.array_equal(got.bx, want.bx) and np.array_equal(got.by, want.by)
        assert [got.labels[i] for i in got.top] == [want.labels[i] for i in want.top], key
        assert dict(zip(got.labels, got.label_totals)) == dict(zip(want.labels, want.label_totals))
    assert tiles.tile(0, 0, 0).count.sum() == 30_000
    write_partial_tiles(tmp_path / "q1.parquet", frame, max_zoom=5)  # replaced: the run no longer names it
    assert tiles.files_read == 4 and tiles.tile(0, 0, 0).count.sum() == 30_000
    merge_runs(tmp_path, fanout=2)
    assert tiles.files_read == 1 and tiles.tile(0, 0, 0).count.sum() == 30_000, "merged again, not twice"


def _tiles_of(index):
    """Every filled tile of zooms 0..4, as (count, bx, by, top label, label totals)."""
    out = {}
    for z in range(5):
        for x in range(2**z):
            for y in range(2**z):
                t = index.tile(z, x, y)
                if len(t.count):
                    out[(z, x, y)] = (t.count.tolist(), t.bx.tolist(), t.by.tolist(), [t.labels[i] for i in t.top],
                                      dict(zip(t.labels, t.label_totals)))
    return out


def test_map_tiles_writes_no_run_and_map_tile_runs_merges_them_after_with_the_same_tiles(artifact, tmp_path):
    """Issue 33: a slice's `map_tiles` does only its slice's work (no run written, even as the tenth
    partial: a level-1 merge due); `map_tile_runs`, planned and automated after it, writes the level-1
    run, and every tile is the same before and after, the sum of the partials."""
    from umap_assets import planner
    from umap_assets.defs.embeddings import embeddings
    from umap_assets.defs.map_tile_runs import map_tile_runs
    from umap_assets.defs.map_tiles import map_tiles
    from umap_assets.defs.resources import LocalEmbedding, WarehouseResource
    from umap_assets.home import DAGSTER_YAML, TILE_RUNS_POOL
    from umap_assets.warehouse import write_canonical_slice

    warehouse = WarehouseResource(home=str(tmp_path / "home"))
    store, wh = warehouse.store(), warehouse.warehouse()
    store.artifact_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(artifact, store.artifact_path)
    resources = {"warehouse": warehouse, "embedding_engine": LocalEmbedding(chunk_rows=1000)}
    defs = dg.Definitions(assets=[embeddings, map_tiles, map_tile_runs], resources=resources)
    with dg.instance_for_test() as instance:
        evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=dg.AssetSelection.all())
        for number, key in enumerate(("s1", "s2")):
            source = wh.table_path("raw_slices", key)
            source.parent.mkdir(parents=True, exist_ok=True)
            write_canonical_slice(_slice(tmp_path / f"{key}.parquet", 2000, number * 10_000), source)
            instance.add_dynamic_partitions("slices", [key])
            assert dg.materialize([embeddings, map_tiles], partition_key=key, instance=instance, resources=resources,
                                  run_config={"ops": {"map_tiles": {"config": {"max_zoom": 4}}}}).success
            if key == "s1":  # eight more partials (copies of s1's): s2's is then the tenth
                version = instance.get_latest_materialization_event(dg.AssetKey("map_tiles")).asset_materialization
                tiles_dir = wh.embeddings_dir(version.metadata["artifact_version"].value) / "tiles"
                for copy in range(8):
                    shutil.copy(tiles_dir / "s1.parquet", tiles_dir / f"c{copy}.parquet")
        version = instance.get_latest_materialization_event(dg.AssetKey("map_tiles")).asset_materialization.metadata[
            "artifact_version"].value
        tiles_dir = wh.embeddings_dir(version) / "tiles"
        assert not list(tiles_dir.glob("runs/*.parquet")), "a slice's own step writes no run, though one is due"
        index = TileIndex(wh.embeddings_dir(version))
        before = _tiles_of(index)
        assert index.files_read == 10 and sum(c for (z, _, _), t in before.items() if z == 4 for c in t[0]) == 9 * 2000 + 2000
        evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=dg.AssetSelection.all(),
                                                     cursor=evaluation.cursor)
        assert evaluation.get_num_requested(map_tile_runs.key) == 1, "new partials landed: compaction is due"
        assert planner.plan_compaction(wh.embeddings_dir(version)) == planner.Step(planner.COMPACT_JOB, "map_tile_runs")
        assert planner.plan_compaction(wh.embeddings_dir(version), fanout=11) is None, "fanout 11: nothing to merge"
        result = dg.materialize([map_tile_runs], instance=instance, resources=resources)
        meta = result.asset_materializations_for_node("map_tile_runs")[0].metadata
        assert [p.name for p in tiles_dir.glob("runs/*.parquet")] == ["L1_c0_s2.parquet"]
        assert meta["runs_written"].value == 1 and meta["runs"].value == "L1_c0_s2.parquet" and meta["levels"].value == "1"
        assert (meta["files_read_before"].value, meta["files_read_after"].value) == (10, 1)
        assert meta["bytes"].value == (tiles_dir / "runs" / "L1_c0_s2.parquet").stat().st_size and meta["seconds"].value > 0
        assert meta["artifact_version"].value == version and meta["merges_left"].value is False
        assert index.files_read == 1 and _tiles_of(index) == before, "the same tiles, read from one file"
        assert planner.plan_compaction(wh.embeddings_dir(version)) is None
        evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=dg.AssetSelection.all(),
                                                     cursor=evaluation.cursor)
        assert evaluation.get_num_requested(map_tile_runs.key) == 0, "handled: no partial landed since"
        again = dg.materialize([map_tile_runs], instance=instance, resources=resources)
        assert again.asset_materializations_for_node("map_tile_runs")[0].metadata["runs_written"].value == 0
    assert map_tile_runs.op.pool == TILE_RUNS_POOL and "default_limit: 1" in DAGSTER_YAML, "one compaction at a time"


def test_a_compaction_cut_short_leaves_the_rest_due_and_a_removed_partial_voids_its_run(version_dir, tmp_path):
    """`compact(max_merges=1)` writes one run and says merges are left; the next writes the rest (the
    level-1 runs folded into the level-2 one); a partial removed voids the run that held it, and the
    tiles stay the sum of the partials on disk throughout."""
    four_partials(version_dir, tmp_path, max_zoom=4)
    tiles = TileIndex(tmp_path)
    first = compact(tmp_path, fanout=2, max_merges=1)
    assert first.written == ("L1_q0_q1.parquet",) and first.levels == (1,) and first.pending
    assert (first.files_before, first.files_after) == (4, 3) and compaction_due(tmp_path, fanout=2)
    assert tiles.tile(0, 0, 0).count.sum() == 30_000
    rest = compact(tmp_path, fanout=2)
    assert rest.written == ("L1_q2_q3.parquet", "L2_q0_q3.parquet") and rest.levels == (1, 2) and not rest.pending
    assert rest.removed == 2 and (rest.files_before, rest.files_after) == (3, 1) and not compaction_due(tmp_path, fanout=2)
    assert rest.bytes > (tmp_path / "tiles" / "runs" / "L2_q0_q3.parquet").stat().st_size, "both runs written count"
    tiles_path(tmp_path / "q3.parquet").unlink()  # a slice removed
    assert compaction_due(tmp_path, fanout=2) and tiles.tile(0, 0, 0).count.sum() == 22_500
    after = compact(tmp_path, fanout=2)
    assert after.removed == 1 and after.written == ("L1_q0_q1.parquet",) and after.files_after == 2
    assert tiles.files_read == 2 and tiles.tile(0, 0, 0).count.sum() == 22_500
