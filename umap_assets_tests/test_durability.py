"""A killed run keeps the previous materialization; parallel slices don't corrupt the warehouse."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import dagster as dg
import duckdb
import numpy as np
import pyarrow.parquet as pq

from umap_assets.cli import prepare_instance_home

from .conftest import make_slice
from .parallel_jobs import run_partition


def test_killed_run_leaves_previous_materialization_intact(layout):
    make_slice(layout.incoming / "s.parquet", n=500, dim=16)
    env = {**os.environ, "UMAP_ASSETS_HOME": str(layout.home)}
    cli = [sys.executable, "-m", "umap_assets.cli", "run", "--home", str(layout.home), "--force", "--until", "ingest"]
    subprocess.run(cli, env=env, check=True, capture_output=True, timeout=300)
    target = layout.warehouse / "raw_slices" / "s.parquet"
    before = pq.read_table(target)
    assert before.num_rows == 500

    # a much larger version of the slice arrives; kill the run while it writes
    make_slice(layout.incoming / "s.parquet", n=300_000, dim=16, seed=5)
    proc = subprocess.Popen(cli, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    temps = []
    while time.monotonic() < deadline and not temps:
        temps = [p for p in target.parent.iterdir() if p.name.startswith(".s.parquet.tmp-")]
        time.sleep(0.005)
    assert temps, "the run never started writing"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    after = pq.read_table(target)  # still the previous, complete file
    assert after.equals(before)
    assert pq.read_table(layout.warehouse / "samples" / "s.parquet").num_rows > 0

    # the next run sweeps the dead writer's temp file and publishes the new data
    subprocess.run(cli, env=env, check=True, capture_output=True, timeout=600)
    assert pq.read_table(target).num_rows == 300_000
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]


def test_parallel_slices_with_the_multiprocess_executor(layout):
    keys = [f"p{i}" for i in range(3)]
    for i, key in enumerate(keys):
        make_slice(layout.incoming / f"{key}.parquet", n=400, id_start=1000 * i, seed=i)
    dagster_home = prepare_instance_home(layout)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("slices", keys)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=3, mp_context=ctx) as pool:
        futures = [pool.submit(run_partition, str(dagster_home), str(layout.home), k) for k in keys]
        assert all(f.result(timeout=300) for f in futures)

    for i, key in enumerate(keys):
        raw = pq.read_table(layout.warehouse / "raw_slices" / f"{key}.parquet")
        assert raw.num_rows == 400
        assert np.array_equal(raw.column("id").to_numpy(), np.arange(1000 * i, 1000 * i + 400))
        assert pq.read_table(layout.warehouse / "samples" / f"{key}.parquet").num_rows > 0
    with duckdb.connect(str(layout.duckdb_path), read_only=True) as con:
        assert con.execute("SELECT key, rows FROM slices ORDER BY key").fetchall() == [(k, 400) for k in keys]
    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records()
        assert len(records) == 3 and all(r.dagster_run.is_success for r in records)


def _inode(path):
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _materialized(instance, asset: str):
    """The storage id of the newest materialization of ``asset`` in the home's history."""
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records
    return records[0].storage_id if records else None


def _readable(home):
    """Every published file under the home opens whole: no half-written file anywhere."""
    from umap_assets.records import Report, Student, Teacher
    from umap_assets.runtime import Projector

    for path in (home / "warehouse").rglob("*.parquet"):
        if not path.name.startswith("."):
            pq.read_table(path)
    models = home / "models"
    for path in models.rglob("*.uart"):
        Projector.load(path)
    for kind, directory, suffix in ((Teacher, "teachers", ".npz"), (Student, "students", ".npz"),
                                    (Report, "reports", ".json")):
        for path in (models / directory).glob(f"*{suffix}"):
            if not path.name.startswith("."):
                kind.load(path.parent, path.stem)


def test_a_kill_at_each_stage_loses_nothing(tmp_path, capsys):
    """Kill `umap-assets run` while the student, the report and the embeddings compute (right after
    the stage before each published): every file is the old or the new version, whole, and the next
    run recovers the dead runs, sweeps their temp files and embeds every slice."""
    from umap_assets.cli import main
    from umap_assets.home import Layout
    from umap_assets.model_store import ModelStore

    home = tmp_path / "home"
    assert main(["demo-data", "--home", str(home), "--dataset", "digits", "--slices", "2"]) == 0
    config = tmp_path / "run.yaml"
    config.write_text(  # a short schedule and open gates: this test is about durability, not quality
        "ops: {student: {config: {steps: 150, hidden: [64, 64], input_pca_dim: 32, min_rows: 0}}}\n"
        "resources: {quality_gates: {config: {trust_tolerance: 1.0, knn_accuracy_tolerance: 1.0, min_student_overlap: 0.0}}}\n")
    env = {**os.environ, "UMAP_ASSETS_HOME": str(home)}
    args = ["run", "--home", str(home), "--config", str(config), "--retrain"]
    cli = [sys.executable, "-m", "umap_assets.cli", *args]  # the runs to kill; the others run in this process
    assert main(args) == 0, capsys.readouterr().out[-2000:]
    store = ModelStore(Layout.at(home))
    # published by one stage -> the next stage is computing (ingest: the test above). Records are
    # written once per version, so a stage's publication is its materialization in the home's history
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    triggers = {
        "student": lambda: _materialized(instance, "teacher"),
        "quality_report": lambda: _materialized(instance, "artifact"),
        "embeddings": lambda: _inode(store.artifact_path),
    }
    for stage, trigger in triggers.items():
        before = trigger()
        proc = subprocess.Popen(cli, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + 300
        while trigger() == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before {stage} started"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _readable(home)

    # the next run recovers the dead runs and sweeps their temp files; with gates that no model can
    # pass, serving survives the failed training and the slices are still embedded
    served = store.artifact_path.read_bytes()
    config.write_text(config.read_text().replace(  # within the gates' ranges: an int8 artifact never agrees
        "trust_tolerance: 1.0, knn_accuracy_tolerance: 1.0, min_student_overlap: 0.0",  # with its float student on every neighbour
        "trust_tolerance: 0.0, knn_accuracy_tolerance: 0.0, min_student_overlap: 1.0"))
    capsys.readouterr()
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "recovered run" in out and "FAILED  train_model" in out
    # the embed stage still runs; deterministic training re-promoted the same version, so it is current
    assert out.count("up to date  embeddings[") + out.count("ok      embeddings[") == 2, out[-2000:]
    assert store.artifact_path.read_bytes() == served, "the served model stays"
    _readable(home)
    leftovers = [p for p in home.rglob(".*.tmp-*") if "dagster" not in p.parts]
    assert leftovers == []


def test_a_second_concurrent_run_is_refused_in_one_line(layout):
    """A run shows in the home's Dagster history while it works (its runs name its process), and a run
    that finds a live process's run in progress there refuses in one line."""
    from umap_assets.definitions import load_definitions
    from umap_assets.planner import LAUNCHER_TAG, launcher

    make_slice(layout.incoming / "big.parquet", n=400_000, dim=32)
    env = {**os.environ, "UMAP_ASSETS_HOME": str(layout.home)}
    cli = [sys.executable, "-m", "umap_assets.cli", "run", "--home", str(layout.home), "--until", "ingest"]
    first = subprocess.Popen(cli, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    held = False
    while not held and first.poll() is None and time.monotonic() < deadline:
        if (layout.dagster_home / "dagster.yaml").exists():
            with dg.DagsterInstance.from_config(str(layout.dagster_home)) as instance:
                runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
                held = any(r.tags.get(LAUNCHER_TAG, "").endswith(f":{first.pid}") for r in runs)
        time.sleep(0.05)
    assert held, "the first run never showed in the home's history"
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    assert pq.read_metadata(layout.warehouse / "raw_slices" / "big.parquet").num_rows == 400_000
    with dg.DagsterInstance.from_config(str(layout.dagster_home)) as instance:  # as a run in another process
        job = load_definitions().resolve_job_def("ingest_slice")
        working = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED, tags={LAUNCHER_TAG: launcher()})
        try:
            second = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
        finally:
            instance.report_run_failed(working, "the test's stand-in run ends")
    assert second.returncode != 0, second.stdout[-1500:]
    assert second.stderr.strip().splitlines() == [f"another `umap-assets run` is using {layout.home}; wait for it to finish"]
