import os
import time

import dagster as dg

from umap_assets.defs.resources import WarehouseResource
from umap_assets.defs.sensors import IncomingCursor, new_slices_sensor, scan_incoming

from .conftest import make_slice


def _age(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t))


def _evaluate(instance, layout, cursor=None):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor)
    return new_slices_sensor(ctx, warehouse=WarehouseResource(home=str(layout.home)))


def test_new_files_become_partitions_and_runs(instance, layout):
    a = make_slice(layout.incoming / "day_1.parquet")
    b = make_slice(layout.incoming / "day 2,eu.parquet")
    _age(a, 120)
    _age(b, 60)
    result = _evaluate(instance, layout)
    assert [r.partition_key for r in result.run_requests] == ["day_1", "day_2_eu"]
    assert result.dynamic_partitions_requests[0].partition_keys == ["day_1", "day_2_eu"]
    cursor = IncomingCursor.parse(result.cursor)
    assert cursor.watermark[1] == "day 2,eu.parquet" and cursor.pending == {}
    assert len(result.cursor) < 200, "the cursor is a watermark, not a list of files"

    # nothing new: no runs, no partitions
    instance.add_dynamic_partitions("slices", ["day_1", "day_2_eu"])
    again = _evaluate(instance, layout, result.cursor)
    assert again.run_requests == [] and not again.dynamic_partitions_requests

    # a third file arrives
    c = make_slice(layout.incoming / "day_3.parquet")
    _age(c, 30)
    third = _evaluate(instance, layout, again.cursor)
    assert [r.partition_key for r in third.run_requests] == ["day_3"]
    assert third.dynamic_partitions_requests[0].partition_keys == ["day_3"]


def test_files_being_written_are_ignored_until_settled(instance, layout):
    make_slice(layout.incoming / ".day_1.parquet.tmp-123-abc")  # a writer's temp name
    (layout.incoming / "day_1.parquet.part").write_bytes(b"partial")
    growing = layout.incoming / "day_1.parquet"
    growing.write_bytes(b"PAR1 first bytes")  # fresh and still being written
    first = _evaluate(instance, layout)
    assert first.run_requests == []
    assert IncomingCursor.parse(first.cursor).pending == {"day_1.parquet": growing.stat().st_size}

    make_slice(growing)  # the writer goes on; the size changes
    second = _evaluate(instance, layout, first.cursor)
    assert second.run_requests == []

    third = _evaluate(instance, layout, second.cursor)  # same size as last tick: complete
    assert [r.partition_key for r in third.run_requests] == ["day_1"]
    assert IncomingCursor.parse(third.cursor).pending == {}


def test_a_file_behind_an_unsettled_one_is_not_skipped(tmp_path):
    older = make_slice(tmp_path / "a.parquet")
    newer = make_slice(tmp_path / "b.parquet")
    _age(older, 100)
    _age(newer, 50)
    now = time.time()
    os.utime(older, (now - 1, now - 1))  # `a` was touched again just now: it is newest and unsettled
    scan = scan_incoming(tmp_path, IncomingCursor(), now=now)
    assert [p.name for p in scan.ready] == ["b.parquet"]
    assert scan.cursor.pending == {"a.parquet": older.stat().st_size}
    later = scan_incoming(tmp_path, scan.cursor, now=now + 1)
    assert [p.name for p in later.ready] == ["a.parquet"]


def test_rewritten_file_is_requested_again(tmp_path):
    path = make_slice(tmp_path / "a.parquet")
    _age(path, 100)
    first = scan_incoming(tmp_path, IncomingCursor())
    assert [p.name for p in first.ready] == ["a.parquet"]
    assert scan_incoming(tmp_path, first.cursor).ready == []
    make_slice(path, seed=3)
    _age(path, 20)
    assert [p.name for p in scan_incoming(tmp_path, first.cursor).ready] == ["a.parquet"]


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
    assert automation_sensor.asset_selection.resolve(graph) == {dg.AssetKey("drift"), dg.AssetKey("embeddings")}
    for key in (dg.AssetKey("drift"), dg.AssetKey("embeddings")):
        assert graph.get(key).automation_condition is not None


def test_sensor_skips_files_that_were_already_ingested_with_the_same_content(instance, layout):
    """After `umap-assets run` (or any run) ingested a file, the sensor does not ingest it again,
    even with a fresh cursor; an edit of the file makes it due again."""
    from umap_assets.defs.ingest import raw_slices
    from umap_assets.defs.resources import SliceContract

    a = make_slice(layout.incoming / "day_1.parquet")
    _age(a, 120)
    instance.add_dynamic_partitions("slices", ["day_1"])
    assert dg.materialize([raw_slices], partition_key="day_1", instance=instance,
                          resources={"warehouse": WarehouseResource(home=str(layout.home)),
                                     "contract": SliceContract()}).success
    fresh = _evaluate(instance, layout)  # a new UI on the same instance: no cursor yet
    assert fresh.run_requests == [] and not fresh.dynamic_partitions_requests

    make_slice(a, n=7)  # new content under the same name
    _age(a, 60)
    changed = _evaluate(instance, layout)
    assert [r.partition_key for r in changed.run_requests] == ["day_1"]
