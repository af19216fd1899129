"""A slice's life (issue 30): known by its content; new, replaced, renamed, copied, overlapping,
deleted from incoming/, removed on purpose; and failures of the machine are no verdicts on a file.

Real files, a real Dagster instance (the home's, through the CLI's functions) and real DuckDB.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import dagster as dg
import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from umap_assets.cli import main
from umap_assets.numerics.sampling import held_out_ids, stratified_sample

from .conftest import make_slice

INGEST = ["--until", "ingest"]


def _run(home, capsys, *extra) -> tuple[int, str]:
    code = main(["run", "--home", str(home), *INGEST, *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _catalog(home) -> dict[str, int]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return dict(con.execute("SELECT key, rows FROM slices ORDER BY key").fetchall())


def _ids_once(home) -> int:
    """The rows of the home's slices, after checking that no id is in two of them."""
    with duckdb.connect() as con:
        total, distinct = con.execute(
            "SELECT count(*), count(DISTINCT id) FROM read_parquet(?)",
            [str(home / "warehouse" / "raw_slices" / "*.parquet")]).fetchone()
    assert total == distinct, f"{total - distinct} ids are held twice"
    return total


def test_a_slice_is_known_by_its_content(tmp_path, capsys):
    """New, copied, renamed, replaced in place, then overlapping ids: each by its rule, no id twice."""
    home = tmp_path / "home"
    incoming = home / "incoming"
    make_slice(incoming / "a.parquet", n=200)
    assert _run(home, capsys)[0] == 0
    assert _catalog(home) == {"a": 200}

    # the same content under another name, the original still there: a copy, not ingested, one line
    shutil.copy(incoming / "a.parquet", incoming / "a_copy.parquet")
    code, out = _run(home, capsys)
    assert code == 0, out
    copy_lines = [line for line in out.splitlines() if "a_copy.parquet" in line]
    assert copy_lines == ["  copy    a_copy.parquet: same content as slice 'a' (a.parquet); not ingested twice"], out
    assert _catalog(home) == {"a": 200}

    # the original deleted: the copy is the same slice renamed, up to date, its rows counted once
    (incoming / "a.parquet").unlink()
    code, out = _run(home, capsys)
    assert code == 0 and "up to date  a_copy.parquet  (slice 'a', renamed)" in out, out
    assert "ok      " not in out
    assert _catalog(home) == {"a": 200}

    # replaced in place (same name, new content): ingested again, its old rows replaced
    make_slice(incoming / "a.parquet", n=150, seed=2)
    code, out = _run(home, capsys)
    assert code == 0 and "ok      a.parquet" in out, out
    assert _catalog(home) == {"a": 150}
    assert "copy    a_copy.parquet" in out, "the old content is still a copy until the slice changed"

    # a_copy now holds content no slice has: a new slice, whose ids 0..149 are already in `a`
    code, out = _run(home, capsys)
    assert code == 0 and "ok      a_copy.parquet" in out, out
    notes = [line.strip() for line in out.splitlines() if "refused" in line]
    assert notes == ["note    a_copy.parquet: 150 row(s) refused: their ids are already in slice 'a' "
                     "(ids 0, 1, 2, 3, 4, ...); an id is on the map once"], out
    assert _catalog(home) == {"a": 150, "a_copy": 50}
    assert _ids_once(home) == 200
    kept = pq.read_table(home / "warehouse" / "raw_slices" / "a_copy.parquet").column("id").to_numpy()
    assert np.array_equal(np.sort(kept), np.arange(150, 200))


def test_a_slice_whose_every_id_is_taken_is_rejected_until_it_changes(tmp_path, capsys):
    home = tmp_path / "home"
    make_slice(home / "incoming" / "a.parquet", n=120)
    assert _run(home, capsys)[0] == 0
    make_slice(home / "incoming" / "b.parquet", n=60, seed=4)  # other bytes, ids 0..59: all in `a`
    code, out = _run(home, capsys)
    assert code == 1
    line = [x for x in out.splitlines() if "FAILED  b.parquet" in x]
    assert len(line) == 1 and "every row's id is already in the home (slice 'a' holds id 0)" in line[0], out
    code, out = _run(home, capsys)
    assert "skipped b.parquet: unchanged since it was rejected" in out and _catalog(home) == {"a": 120}


def test_the_split_is_a_function_of_the_id(tmp_path, capsys):
    """Validation rows are drawn among the ids that hash below the fraction, in every slice."""
    ids = np.arange(5_000)
    held = held_out_ids(ids, 0.2, salt=0)
    assert abs(held.mean() - 0.2) < 0.02 and np.array_equal(held, held_out_ids(ids.copy(), 0.2, salt=0))
    assert not np.array_equal(held, held_out_ids(ids, 0.2, salt=1))
    rng = np.random.default_rng(0)
    for seed in range(3):  # the same rows in slices of other strata, other seeds
        strata = rng.integers(0, 4, size=len(ids))
        s = stratified_sample(strata, rate=0.5, floor=5, validation_fraction=0.2, seed=seed, held_out=held)
        assert np.array_equal(s.validation, held[s.indices])
        assert abs(s.n_validation / len(s.indices) - 0.2) < 0.02

    home = tmp_path / "home"
    make_slice(home / "incoming" / "a.parquet", n=400)
    make_slice(home / "incoming" / "b.parquet", n=400, id_start=400, seed=3)
    assert _run(home, capsys)[0] == 0
    for key in ("a", "b"):
        sample = pq.read_table(home / "warehouse" / "samples" / f"{key}.parquet")
        validation = np.asarray(sample.column("split").to_pylist()) == "validation"
        assert validation.any() and np.array_equal(validation, held_out_ids(sample.column("id"), 0.1, salt=0))


def test_remove_takes_a_slice_out_of_the_home(tmp_path, capsys):
    home = tmp_path / "home"
    make_slice(home / "incoming" / "a.parquet", n=200)
    make_slice(home / "incoming" / "b.parquet", n=200, id_start=200, seed=1)
    assert _run(home, capsys)[0] == 0
    # refused while its file is in incoming/ (the next run would ingest it again), and for no slice
    assert main(["remove", "a", "--home", str(home)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its file a.parquet is still in" in err[0] and "move or delete it first" in err[0], err
    assert main(["remove", "nope", "--home", str(home)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"failed: nope: no slice 'nope' in {home} (slices: a, b)"]

    (home / "incoming" / "a.parquet").unlink()
    assert main(["remove", "a.parquet", "--home", str(home)]) == 0
    assert "slice 'a' removed" in capsys.readouterr().out
    warehouse = home / "warehouse"
    assert [p.name for p in (warehouse / "raw_slices").glob("*.parquet")] == ["b.parquet"]
    assert [p.name for p in (warehouse / "samples").glob("*.parquet")] == ["b.parquet"]
    assert _catalog(home) == {"b": 200}
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert instance.get_dynamic_partitions("slices") == ["b"]
    # the same content sent again later is a new slice again, not "up to date"
    make_slice(home / "incoming" / "a.parquet", n=200)
    code, out = _run(home, capsys)
    assert code == 0 and "ok      a.parquet" in out and _catalog(home) == {"a": 200, "b": 200}, out


# ---- failures of the machine


@contextlib.contextmanager
def _tmpfs(path, size: str):
    """A small tmpfs mounted at ``path`` (a full disk, a read-only file system, for real)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root with CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_no_verdict_on_the_file(tmp_path, capsys):
    home = tmp_path / "home"
    make_slice(home / "incoming" / "a.parquet", n=2_000, dim=64)  # ~0.5 MB canonical
    with _tmpfs(home / "warehouse" / "raw_slices", "64k") as mount:
        code, out = _run(home, capsys)
        assert code == 1
        line = [x for x in out.splitlines() if "FAILED  a.parquet" in x]
        assert len(line) == 1 and f"disk full writing {mount / 'a.parquet'}" in line[0], out
        assert "Traceback" not in out
        subprocess.run(["mount", "-o", "remount,size=16m", str(mount)], check=True)  # space freed
        code, out = _run(home, capsys)  # no --force
        assert code == 0 and "ok      a.parquet" in out and "rejected" not in out, out
        assert pq.read_metadata(mount / "a.parquet").num_rows == 2_000


def test_a_read_only_home_is_no_verdict_on_the_file(tmp_path, capsys):
    home = tmp_path / "home"
    make_slice(home / "incoming" / "a.parquet", n=100)
    with _tmpfs(home / "warehouse" / "raw_slices", "16m") as mount:
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        code, out = _run(home, capsys)
        assert code == 1
        line = [x for x in out.splitlines() if "FAILED  a.parquet" in x]
        assert len(line) == 1 and f"home is read-only: {mount / 'a.parquet'}" in line[0], out
        subprocess.run(["mount", "-o", "remount,rw", str(mount)], check=True)
        code, out = _run(home, capsys)
        assert code == 0 and "ok      a.parquet" in out, out


def test_a_read_only_home_reads_in_one_line(tmp_path, capsys):
    """The whole home read-only (its instance cannot even start): one line, no traceback."""
    home = tmp_path / "home"
    with _tmpfs(home, "16m"):
        subprocess.run(["mount", "-o", "remount,ro", str(home)], check=True)
        code, out = _run(home, capsys)
    assert code == 1 and "Traceback" not in out
    assert out.strip().splitlines()[-1].startswith("error: home is read-only: "), out


def test_a_killed_ingest_leaves_the_file_eligible(tmp_path):
    """A run killed while it writes a new file's rows: the next run (no --force) ingests the file."""
    home = tmp_path / "home"
    make_slice(home / "incoming" / "s.parquet", n=300_000, dim=16)
    env = {**os.environ, "UMAP_ASSETS_HOME": str(home)}
    cli = [sys.executable, "-m", "umap_assets.cli", "run", "--home", str(home), *INGEST]
    proc = subprocess.Popen(cli, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    target = home / "warehouse" / "raw_slices"
    deadline, temps = time.monotonic() + 120, []
    while time.monotonic() < deadline and not temps:
        temps = list(target.glob(".s.parquet.tmp-*")) if target.exists() else []
        time.sleep(0.005)
    assert temps, "the run never started writing"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (target / "s.parquet").exists()

    again = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:]
    assert "recovered run" in again.stdout and "rejected" not in again.stdout
    assert "ok      s.parquet" in again.stdout
    assert pq.read_metadata(target / "s.parquet").num_rows == 300_000


def test_the_sensor_retries_after_a_failure_of_the_machine(instance, layout):
    """A failure that is no verdict on the file (here: a folder where the slice's file goes) gets a
    new run key, so the sensor asks again after a wait; ``umap-assets run`` retries at once."""
    import json

    from umap_assets.defs.ingest import raw_slices
    from umap_assets.defs.resources import SliceContract, WarehouseResource
    from umap_assets.defs.sensors import new_slices_sensor
    from umap_assets.discovery import RETRY_WAIT_S, discover_slices, ingest_tags
    from umap_assets.sources import local_source
    from umap_assets.planner import plan_ingest

    def evaluate(cursor=None):
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor,
                                      resources={"warehouse": WarehouseResource(home=str(layout.home))})
        return new_slices_sensor(ctx)

    make_slice(layout.incoming / "a.parquet", n=100)
    first = evaluate(evaluate().cursor).run_requests
    assert [r.partition_key for r in first] == ["a"]
    blocker = layout.warehouse / "raw_slices" / "a.parquet"
    blocker.mkdir(parents=True)  # the rename into place fails: IsADirectoryError
    instance.add_dynamic_partitions("slices", ["a"])
    item = discover_slices(instance, local_source(layout.incoming), {"a.parquet": first[0].tags["umap_assets/source_identity"]}).ready[0]
    result = dg.materialize([raw_slices], partition_key="a", instance=instance, tags=ingest_tags(item),
                            raise_on_error=False,
                            resources={"warehouse": WarehouseResource(home=str(layout.home)), "contract": SliceContract()})
    assert not result.success
    blocker.rmdir()
    cursor = evaluate().cursor
    assert evaluate(cursor).run_requests == [], "the sensor waits a minute before it tries again"
    assert json.loads(evaluate(cursor).cursor) == {"a.parquet": item.identity}, "the file stays ready"
    later = plan_ingest(instance, local_source(layout.incoming), json.loads(cursor), now=time.time() + RETRY_WAIT_S)
    assert [s.partition for s in later.steps] == ["a"] and later.steps[0].run_key == f"{first[0].run_key}:retry-1"
    assert plan_ingest(instance, local_source(layout.incoming), json.loads(cursor), resume=True).steps, "the CLI retries at once"


def test_a_deleted_file_stays_and_a_removed_slice_leaves_the_map(tmp_path, capsys):
    """Train, delete a file from incoming/, retrain: every slice is re-embedded by the new model and
    the view holds each id once. Then remove that slice: its rows leave the view and the samples."""
    home = tmp_path / "home"
    assert main(["demo-data", "--home", str(home), "--dataset", "digits", "--slices", "2"]) == 0
    config = tmp_path / "run.yaml"
    config.write_text(  # a short schedule and open gates: this test is about the slices, not quality
        "ops: {student: {config: {steps: 100, hidden: [32, 32], input_pca_dim: 16, min_rows: 0}}}\n"
        "resources: {quality_gates: {config: {trust_tolerance: 1.0, knn_accuracy_tolerance: 1.0, "
        "min_student_overlap: 0.0}}}\n")
    args = ["run", "--home", str(home), "--config", str(config)]
    assert main(args) == 0, capsys.readouterr().out[-2000:]
    gone = home / "incoming" / "digits_000.parquet"
    gone_ids = set(pq.read_table(gone).column("id").to_pylist())
    gone.unlink()
    assert main([*args, "--retrain"]) == 0
    out = capsys.readouterr().out
    assert "embeddings[digits_000]" in out, out[-2000:]

    def view():
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            con.execute(f"SET file_search_path = '{home}'")
            return con.execute("SELECT count(*), count(DISTINCT id), count(DISTINCT artifact_version), "
                               "list(DISTINCT slice ORDER BY slice) FROM embeddings").fetchone()

    assert view() == (1797, 1797, 1, ["digits_000", "digits_001"])
    maps = home / "warehouse" / "embeddings"
    assert {p.relative_to(maps).parts[1:] for p in maps.glob("*/*/digits_000.parquet")} == {("ids", "digits_000.parquet"),
                                                                                             ("tiles", "digits_000.parquet")}
    assert main(["remove", "digits_000", "--home", str(home)]) == 0
    assert view() == (1797 - len(gone_ids), 1797 - len(gone_ids), 1, ["digits_001"])
    assert not list(maps.glob("**/digits_000.parquet")), "its id index and its tiles go with it"
    with duckdb.connect() as con:
        left = {r[0] for r in con.execute("SELECT id FROM read_parquet(?)",
                                          [str(home / "warehouse" / "samples" / "*.parquet")]).fetchall()}
    assert not left & gone_ids, "the next model trains without the removed slice's rows"
