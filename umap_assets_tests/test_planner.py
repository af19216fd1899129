"""The planner: one place that says what runs, over the instance; the graph declares every read."""

import socket
import subprocess
import sys

import dagster as dg
import yaml

from umap_assets.definitions import load_definitions
from umap_assets.home import DAGSTER_YAML
from umap_assets.planner import LAUNCHER_TAG, busy, dead_runs, launcher, plan_training


def test_every_asset_that_reads_sample_rows_declares_samples():
    graph = load_definitions().resolve_asset_graph()
    for name in ("coreset", "teacher", "student", "artifact", "quality_report", "drift"):
        assert dg.AssetKey("samples") in graph.get(dg.AssetKey(name)).parent_keys, name
    assert {dg.AssetKey("artifact"), dg.AssetKey("coreset")} <= graph.get(dg.AssetKey("model")).parent_keys


def test_every_training_asset_is_in_the_training_pool():
    defs = load_definitions()
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.group_name == "training":
            assert defs.get_assets_def(key).op.pool == "training", key.to_user_string()
    pools = yaml.safe_load(DAGSTER_YAML)["concurrency"]["pools"]  # one slot, held by a whole run
    assert pools == {"granularity": "run", "default_limit": 1}


def test_runs_of_a_dead_process_are_dead_and_a_live_ones_make_the_home_busy():
    job = load_definitions().resolve_job_def("ingest_slice")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with dg.instance_for_test() as instance:
        assert busy(instance) is None
        dead = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED,
                                           tags={LAUNCHER_TAG: f"{socket.gethostname()}:{gone.pid}"})
        assert [r.run_id for r in dead_runs(instance)] == [dead.run_id] and busy(instance) is None
        live = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED, tags={LAUNCHER_TAG: launcher()})
        assert live.run_id[:8] in busy(instance) and [r.run_id for r in dead_runs(instance)] == [dead.run_id]


def test_training_is_asked_for_or_follows_new_samples():
    with dg.instance_for_test() as instance:
        assert plan_training(instance, served=True, handled=0).step is None
        asked = plan_training(instance, served=True, handled=0, asked="asked for (--retrain)")
        assert asked.step.tags["umap_assets/retrain_reason"] == "asked for (--retrain)"
        instance.report_runless_asset_event(dg.AssetMaterialization("samples", partition="a"))
        first = plan_training(instance, served=False, handled=0)
        assert first.step.job == "train_model" and first.reason == "no promoted model yet"
        assert plan_training(instance, served=False, handled=first.handled).step is None  # decided once
        measure = plan_training(instance, served=True, handled=0)
        assert measure.step is None and measure.measure == ["a"]  # its drift first
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "drift", partition="a", metadata={"drifted": True, "uncovered_fraction": 0.3}))
        drifted = plan_training(instance, served=True, handled=0)
        assert drifted.step is not None and drifted.reason == "drift: a"
