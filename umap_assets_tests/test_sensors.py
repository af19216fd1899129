import json
import os
import shutil

import dagster as dg

from umap_assets.contract import partition_key_for
from umap_assets.discovery import discover_slices, ingest_tags
from umap_assets.sources import local_source
from umap_assets.defs.ingest import raw_slices
from umap_assets.defs.resources import SliceContract, WarehouseResource
from umap_assets.defs.sensors import new_slices_sensor

from .conftest import make_slice


def _evaluate(instance, layout, cursor=None):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor,
                                  resources={"warehouse": WarehouseResource(home=str(layout.home))})
    return new_slices_sensor(ctx)


def _ingest(instance, layout, item):
    """Materialize ``raw_slices`` for a discovered file as the sensor's run would."""
    if item.key not in instance.get_dynamic_partitions("slices"):
        instance.add_dynamic_partitions("slices", [item.key])
    return dg.materialize([raw_slices], partition_key=item.key, instance=instance, tags=ingest_tags(item),
                          raise_on_error=False,
                          resources={"warehouse": WarehouseResource(home=str(layout.home)), "contract": SliceContract()})


def test_new_files_become_partitions_and_runs_after_a_second_look(instance, layout):
    make_slice(layout.incoming / "day_1.parquet")
    make_slice(layout.incoming / "day 2,eu.parquet", seed=1, id_start=1000)  # ids unique in the home
    first = _evaluate(instance, layout)
    assert first.run_requests == [], "a file seen once may still be changing"
    result = _evaluate(instance, layout, first.cursor)
    odd = partition_key_for("day 2,eu.parquet")
    assert sorted(r.partition_key for r in result.run_requests) == sorted(["day_1", odd])
    assert result.dynamic_partitions_requests[0].partition_keys == sorted(["day_1", odd])
    assert len({r.run_key for r in result.run_requests}) == 2

    # once ingested, the files leave the cursor: the known keys live in the dynamic partitions
    for item in discover_slices(instance, local_source(layout.incoming), json.loads(result.cursor)).ready:
        assert _ingest(instance, layout, item).success
    again = _evaluate(instance, layout, result.cursor)
    assert again.run_requests == [] and not again.dynamic_partitions_requests
    assert json.loads(again.cursor) == {}

    make_slice(layout.incoming / "day_3.parquet", seed=3)
    third = _evaluate(instance, layout, _evaluate(instance, layout, again.cursor).cursor)
    assert [r.partition_key for r in third.run_requests] == ["day_3"]


def test_files_with_old_mtimes_are_not_lost(instance, layout, tmp_path):
    """`cp -p`, `rsync -t` and `tar x` keep an old mtime; discovery never looks at it."""
    src = make_slice(tmp_path / "archive" / "old.parquet")
    os.utime(src, (946684800, 946684800))  # 2000-01-01
    make_slice(layout.incoming / "new.parquet", seed=1)
    first = _evaluate(instance, layout)
    shutil.copy2(src, layout.incoming / "old.parquet")  # arrives after the sensor has looked
    second = _evaluate(instance, layout, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["new"]
    third = _evaluate(instance, layout, second.cursor)
    assert "old" in [r.partition_key for r in third.run_requests]


def test_a_partial_file_never_produces_a_run(instance, layout):
    make_slice(layout.incoming / ".day_1.parquet.tmp-123-abc")  # a writer's temp name
    (layout.incoming / "day_1.parquet.part").write_bytes(b"partial")
    growing = layout.incoming / "day_1.parquet"
    whole = make_slice(layout.incoming.parent / "whole.parquet").read_bytes()
    cursor = None
    for cut in (4, len(whole) // 2, len(whole) - 1, len(whole) - 1):  # the writer stalls, too
        growing.write_bytes(whole[:cut])
        result = _evaluate(instance, layout, cursor)
        assert result.run_requests == [], cut
        cursor = result.cursor
    growing.write_bytes(whole)
    seen = _evaluate(instance, layout, cursor)
    assert seen.run_requests == []
    assert [r.partition_key for r in _evaluate(instance, layout, seen.cursor).run_requests] == ["day_1"]


def test_odd_names_get_valid_unique_keys_and_affect_no_other_file(instance, layout):
    names = ["_.parquet", "a b.parquet", "a,b.parquet", "x...y.parquet", "good.parquet"]
    for i, name in enumerate(names):
        make_slice(layout.incoming / name, seed=i)
    result = _evaluate(instance, layout, _evaluate(instance, layout).cursor)
    keys = [r.partition_key for r in result.run_requests]
    assert len(keys) == len(set(keys)) == len(names) and "good" in keys
    instance.add_dynamic_partitions("slices", keys)  # Dagster accepts every key
    assert set(instance.get_dynamic_partitions("slices")) == set(keys)


def test_a_rejected_file_waits_until_it_changes(instance, layout):
    bad = make_slice(layout.incoming / "bad.parquet", dim=8)
    make_slice(layout.incoming / "aaa.parquet", dim=16)  # sorts first: the home's dimension is 16
    first = discover_slices(instance, local_source(layout.incoming), {})
    ready = discover_slices(instance, local_source(layout.incoming), first.seen()).ready
    results = {item.key: _ingest(instance, layout, item) for item in ready}
    assert results["aaa"].success and not results["bad"].success
    later = discover_slices(instance, local_source(layout.incoming), {})
    assert [f.key for f in later.up_to_date] == ["aaa"] and later.ready == []
    assert "bad.parquet" in later.rejected and "dimension" in later.rejected["bad.parquet"]
    assert _evaluate(instance, layout, json.dumps(first.seen())).run_requests == []
    make_slice(bad, dim=16, seed=5)  # fixed: due again
    fixed = discover_slices(instance, local_source(layout.incoming), discover_slices(instance, local_source(layout.incoming), {}).seen())
    assert [f.key for f in fixed.ready] == ["bad"]


def test_sensor_is_on_by_default():
    assert new_slices_sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_training_sensor_waits_for_quiet_then_requests_once(instance, layout, monkeypatch):
    import umap_assets.defs.automation as automation

    def decide(cursor=None):
        resources = {"warehouse": WarehouseResource(home=str(layout.home))}
        return automation.training_sensor(dg.build_sensor_context(instance=instance, cursor=cursor,
                                                                  resources=resources))

    assert isinstance(decide(), dg.SkipReason)  # nothing landed yet

    instance.report_runless_asset_event(dg.AssetMaterialization("samples", partition="day_1"))
    fresh = decide()
    assert isinstance(fresh, dg.SkipReason) and "waiting" in fresh.skip_message

    monkeypatch.setattr(automation, "QUIET_SECONDS", 0.0)
    result = decide()
    assert len(result.run_requests) == 1
    assert result.run_requests[0].tags["umap_assets/retrain_reason"] == "no promoted model yet"
    again = decide(result.cursor)
    assert isinstance(again, dg.SkipReason), "the same samples do not train twice"

    # no model passed its checks yet, so new samples train again (drift needs a served model)
    instance.report_runless_asset_event(dg.AssetMaterialization("samples", partition="day_2"))
    later = decide(result.cursor)
    assert len(later.run_requests) == 1 and later.run_requests[0].run_key != result.run_requests[0].run_key


def test_automation_sensor_runs_by_default_and_drives_drift_and_embeddings():
    from umap_assets.defs.automation import automation_sensor
    from umap_assets.definitions import load_definitions

    assert automation_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = load_definitions().resolve_asset_graph()
    maps = {dg.AssetKey("drift"), dg.AssetKey("embeddings"), dg.AssetKey("map_tiles"), dg.AssetKey("map_tile_runs")}
    assert automation_sensor.asset_selection.resolve(graph) == maps
    for key in maps:
        assert graph.get(key).automation_condition is not None


def test_sensor_skips_files_that_were_already_ingested_with_the_same_content(instance, layout):
    """After `umap-assets run` (or any run) ingested a file, the sensor does not ingest it again,
    even with a fresh cursor; an edit of the file makes it due again."""
    a = make_slice(layout.incoming / "day_1.parquet")
    instance.add_dynamic_partitions("slices", ["day_1"])
    assert dg.materialize([raw_slices], partition_key="day_1", instance=instance,
                          resources={"warehouse": WarehouseResource(home=str(layout.home)),
                                     "contract": SliceContract()}).success
    fresh = _evaluate(instance, layout)  # a new UI on the same instance: no cursor yet
    assert fresh.run_requests == [] and not fresh.dynamic_partitions_requests

    make_slice(a, n=7)  # new content under the same name
    changed = _evaluate(instance, layout, _evaluate(instance, layout).cursor)
    assert [r.partition_key for r in changed.run_requests] == ["day_1"]


def test_served_model_and_maps_carry_a_freshness_policy():
    from datetime import timedelta

    from umap_assets.definitions import load_definitions

    graph = load_definitions().resolve_asset_graph()
    for key in ("model", "embeddings"):
        policy = graph.get(dg.AssetKey(key)).freshness_policy
        assert policy is not None and policy.fail_window.to_timedelta() == timedelta(days=30), key


def test_the_readme_graph_is_the_definitions_graph():
    from pathlib import Path

    from umap_assets.definitions import load_definitions
    from umap_assets.graph_diagram import mermaid

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert block == mermaid(load_definitions()), "regenerate: python -m umap_assets.graph_diagram"
