"""Two UmapMap components in one code location (issue 34): each serves its own map, nothing shared by accident."""

import dagster as dg
import pyarrow.parquet as pq
import pytest

from umap_assets.component import UmapMap
from umap_assets.demo_data import write_demo_slices
from umap_assets.history import latest
from umap_assets.map_names import MapNames
from umap_assets.runtime import Projector

SAMPLES = {"rate": 1.0, "floor": 1, "validation_fraction": 0.2}
#: A short training: the test checks the wiring, not the map's quality (the gates are opened wide).
TRAINING = {
    "coreset": {"budget": 400, "pca_dim": 16},
    "teacher": {"n_neighbors": 10},
    "student": {"extra_rows": 500, "min_rows": 800, "hidden": [32], "input_pca_dim": 16, "steps": 60,
                "batch_size": 128, "edge_batch_size": 128},
    "artifact": {"finetune_steps": 0, "coverage_landmarks": 64},
}
OPEN_GATES = {"trust_tolerance": 1.0, "knn_accuracy_tolerance": 1.0, "min_student_overlap": 0.0}
MAPS = {"default": 2, "products": 3}  # slices of digits in each home: the same keys (digits_000, ...) in both


def ops(names: MapNames, config: dict) -> dict:
    """Run config for the map's ops (``products__samples`` for ``samples`` in the map ``products``)."""
    return {"ops": {names.op(op): {"config": c} for op, c in config.items()}}


@pytest.fixture(scope="module")
def two_maps(tmp_path_factory):
    """Two homes of digits slices, and one code location holding a map of each."""
    root = tmp_path_factory.mktemp("two_maps")
    homes = {name: root / name for name in MAPS}
    for name, n in MAPS.items():
        write_demo_slices(homes[name] / "incoming", "digits", n, allow_download=False, say=lambda _: None)
    components = [UmapMap(name=name, home=str(homes[name]), seed=seed, quality_gates=OPEN_GATES, engine={"kind": "local"})
                  for seed, name in enumerate(MAPS)]
    defs = dg.Definitions.merge(*(dg.component_defs(component=c) for c in components))
    return defs, homes


def every_name(defs: dg.Definitions, names: MapNames) -> dict[str, set[str]]:
    """The names of one map's definitions, by kind (assets by key)."""
    graph = defs.resolve_asset_graph()
    mine = [key for key in graph.get_all_asset_keys() if key.path[:-1] == ([] if names.is_default else [names.name])]

    def own(name: str) -> bool:
        return name.startswith(f"{names.name}__") if not names.is_default else "__" not in name

    assets = [graph.assets_def_for_key(k) for k in mine]
    return {
        "keys": {k.to_user_string() for k in mine},
        "groups": {graph.get(k).group_name for k in mine},
        "jobs": {j.name for j in defs.jobs if j.name in {names.job(n) for n in
                                                          ("ingest_slice", "train_model", "embed_slice", "remove_slice",
                                                           "compact_tiles")}},
        "sensors": {s.name for s in defs.sensors if own(s.name)},
        "pools": {a.op.pool for a in assets if a.op.pool},
        "partitions": {a.partitions_def.name for a in assets if a.partitions_def is not None},
        "resources": {k for k in defs.resources if own(k)},
    }


def test_two_maps_load_side_by_side_and_share_no_name(two_maps):
    defs, _ = two_maps
    dg.Definitions.validate_loadable(defs)
    default, products = (every_name(defs, MapNames(n)) for n in MAPS)
    assert default["keys"] == {"raw_slices", "samples", "coreset", "teacher", "student", "artifact", "quality_report",
                               "model", "embeddings", "drift", "map_tiles", "map_tile_runs"}  # today's names, unprefixed
    assert products["keys"] == {f"products/{k}" for k in default["keys"]}
    assert default["groups"] == {"ingest", "training", "maps"}
    assert products["groups"] == {"products_ingest", "products_training", "products_maps"}
    assert products["jobs"] == {"products__ingest_slice", "products__train_model", "products__embed_slice",
                                "products__remove_slice", "products__compact_tiles"}
    assert default["jobs"] == {"ingest_slice", "train_model", "embed_slice", "remove_slice", "compact_tiles"}
    assert products["sensors"] == {"products__new_slices_sensor", "products__training_sensor",
                                   "products__automation_sensor"} and len(default["sensors"]) == 3
    assert (default["pools"], products["pools"]) == ({"training", "map_tile_runs"},
                                                     {"products/training", "products/map_tile_runs"})
    assert (default["partitions"], products["partitions"]) == ({"slices"}, {"products__slices"})
    assert products["resources"] == {f"products__{r}" for r in default["resources"]} and len(default["resources"]) == 5
    for kind in default:
        assert not default[kind] & products[kind], kind
    checks = {str(k.asset_key.to_user_string()) for k in defs.resolve_asset_graph().asset_check_keys}
    assert checks == {"quality_report", "products/quality_report"}


def sensor_requests(defs, instance, names: MapNames, home) -> dg.SensorResult:
    """Two looks of the map's ``new_slices_sensor`` at its home, given the map's own resource key."""
    sensor = next(s for s in defs.sensors if s.name == names.sensor("new_slices_sensor"))
    given = {names.resource_key("warehouse"): defs.resources[names.resource_key("warehouse")]}
    first = sensor(dg.build_sensor_context(instance=instance, resources=given))
    return sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=given))


def test_two_maps_materialize_each_into_its_own_home_and_records(two_maps):
    defs, homes = two_maps
    with dg.instance_for_test() as instance:
        for name in MAPS:
            serve(defs, instance, MapNames(name), homes[name])
        for name, n in MAPS.items():
            names, home = MapNames(name), homes[name]
            keys = [f"digits_{i:03d}" for i in range(n)]
            assert sorted(instance.get_dynamic_partitions(names.partitions)) == keys
            version = Projector.load(home / "models" / "artifact.uart").version
            model = instance.get_latest_materialization_event(names.asset_key("model")).asset_materialization
            assert model.metadata["version"].value == version
            rows = 0
            for key in keys:
                path = latest(instance, names.asset_key("embeddings"), key).asset_materialization.metadata["path"].value
                assert path == str(home / "warehouse" / "embeddings" / version / f"{key}.parquet")
                assert pq.read_metadata(path).num_rows == pq.read_metadata(home / "incoming" / f"{key}.parquet").num_rows
                rows += pq.read_metadata(path).num_rows
            assert rows == 1797  # digits, whatever the number of slices: each home holds its own rows once
            compacted = latest(instance, names.asset_key("map_tile_runs")).asset_materialization.metadata
            assert compacted["runs_written"].value == 1 and compacted["artifact_version"].value == version
            assert compacted["path"].value == str(home / "warehouse" / "embeddings" / version / "tiles" / "runs")
            assert len(list((home / "warehouse" / "embeddings" / version / "tiles" / "runs").glob("L1_*.parquet"))) == 1
            runs = instance.get_runs(filters=dg.RunsFilter(job_name=names.job("ingest_slice")))
            assert len(runs) == n and all(names.tag("source_identity") in r.tags for r in runs)
            assert all(r.tags.get("dagster/partition") in keys for r in runs)
        versions = {Projector.load(h / "models" / "artifact.uart").version for h in homes.values()}
        assert len(versions) == 2  # two trainings with two seeds (each map's own), two artifacts
        products_runs = instance.get_runs(filters=dg.RunsFilter(job_name="products__ingest_slice"))
        assert not any("umap_assets/source_identity" in r.tags for r in products_runs)  # the default map's tag


def serve(defs: dg.Definitions, instance, names: MapNames, home) -> None:
    """What the sensors and the queue do for one map: its slices in, a model trained and promoted, every slice embedded."""
    result = sensor_requests(defs, instance, names, home)
    for request in result.dynamic_partitions_requests:
        assert request.partitions_def_name == names.partitions
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    ingest = defs.resolve_job_def(names.job("ingest_slice"))
    for request in result.run_requests:
        assert ingest.execute_in_process(partition_key=request.partition_key, tags=request.tags, instance=instance,
                                         run_config=ops(names, {"samples": SAMPLES})).success
    train = defs.resolve_job_def(names.job("train_model"))
    assert train.execute_in_process(instance=instance, run_config=ops(names, TRAINING)).success
    embed = defs.resolve_job_def(names.job("embed_slice"))
    for key in instance.get_dynamic_partitions(names.partitions):
        assert embed.execute_in_process(partition_key=key, instance=instance).success
    compact = defs.resolve_job_def(names.job("compact_tiles"))  # the map's own job, in the map's own pool
    assert compact.execute_in_process(instance=instance, run_config=ops(names, {"map_tile_runs": {"fanout": 2}})).success


def test_the_cli_serves_the_map_it_is_given_on_that_maps_home(tmp_path, monkeypatch):
    from umap_assets.runner import run_pipeline

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))  # run_pipeline points both at the map's home
    monkeypatch.setenv("UMAP_ASSETS_HOME", str(tmp_path / "unused"))
    homes = {name: tmp_path / name for name in MAPS}
    write_demo_slices(homes["products"] / "incoming", "digits", 2, allow_download=False, say=lambda _: None)
    defs = dg.Definitions.merge(*(dg.component_defs(component=UmapMap(name=name, home=str(homes[name]),
                                                                      quality_gates=OPEN_GATES)) for name in MAPS))
    config = {"ops": {"samples": {"config": SAMPLES}, "map_tile_runs": {"config": {"fanout": 2}},
                      **{op: {"config": c} for op, c in TRAINING.items()}}}
    summary = run_pipeline(map_name="products", defs=defs, config=config, say=lambda _: None)
    assert not summary.failed and summary.home == homes["products"]
    assert sorted(p.name for p in (homes["products"] / "warehouse" / "raw_slices").glob("*.parquet")) == [
        "digits_000.parquet", "digits_001.parquet"]
    assert len(list((homes["products"] / "warehouse" / "embeddings").glob("*/digits_00?.parquet"))) == 2
    assert not homes["default"].exists()  # the other map's home is never touched
    with dg.DagsterInstance.from_config(str(homes["products"] / "dagster")) as instance:
        names = MapNames("products")
        assert sorted(instance.get_dynamic_partitions(names.partitions)) == ["digits_000", "digits_001"]
        assert not instance.get_dynamic_partitions("slices")
        assert latest(instance, names.asset_key("model")) is not None and latest(instance, "model") is None
        compacted = latest(instance, names.asset_key("map_tile_runs"))  # the runner's compaction step, the map's job
        assert compacted is not None and compacted.asset_materialization.metadata["runs_written"].value == 1
        assert compacted.run_id in {r.run_id for r in instance.get_runs(dg.RunsFilter(job_name="products__compact_tiles"))}


def test_an_unknown_or_bad_map_is_refused_in_one_line(tmp_path, capsys):
    from umap_assets.cli import main

    assert main(["run", "--map", "nope", "--home", str(tmp_path / "h")]) == 2
    assert main(["rollback", "--list", "--map", "Bad"]) == 2
    assert main(["map", "--map", "nope", "--no-browser"]) == 2
    assert main(["embed", "--map", "nope", "--artifact", "a.uart", "--input", "i.parquet", "--output", "o.parquet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: --map: no map named 'nope' in this code location (maps: default)",
                   "error: map name 'Bad': expected a lowercase identifier (a-z, 0-9, _; no '__'), at most 40 "
                   "characters, starting with a letter", "error: no map named 'nope' in this code location (maps: default)",
                   "error: no map named 'nope' in this code location (maps: default)"]
