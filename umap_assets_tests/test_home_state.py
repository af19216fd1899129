"""The home's state through months of use (issue 30): the published map follows the served model, and
every byte the product wrote is checked when it is read again.

One digits home of two slices is trained once for the module (two promoted versions); each test runs
the CLI on its own copy of it, with the home's real Dagster instance and real DuckDB.
"""

import json
import os
import shutil
import subprocess
import sys

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from umap_assets.cli import main
from umap_assets.history import latest_metadata
from umap_assets.home import Layout
from umap_assets.integrity import file_damage
from umap_assets.model_store import ModelStore
from umap_assets.warehouse import published_embeddings

#: A short schedule and open gates: these tests are about the home's state, not the model's quality.
CONFIG = ("ops: {student: {config: {steps: STEPS, hidden: [64, 64], input_pca_dim: 32, min_rows: 0}}}\n"
          "resources: {quality_gates: {config: {trust_tolerance: 1.0, knn_accuracy_tolerance: 1.0, "
          "min_student_overlap: 0.0}}}\n")
KEYS = ["digits_000", "digits_001"]


def config_file(path, steps: int):
    path.write_text(CONFIG.replace("STEPS", str(steps)))
    return path


def served(home) -> str:
    from umap_assets.runtime import Projector

    return Projector.load(ModelStore(Layout.at(home)).artifact_path).version


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits home, trained twice (two promoted versions), every slice embedded by the second."""
    root = tmp_path_factory.mktemp("trained")
    home = root / "home"
    assert main(["demo-data", "--home", str(home), "--dataset", "digits", "--slices", "2"]) == 0
    assert main(["run", "--home", str(home), "--config", str(config_file(root / "a.yaml", 150))]) == 0
    assert main(["run", "--home", str(home), "--retrain", "--config", str(config_file(root / "b.yaml", 160))]) == 0
    return home


@pytest.fixture
def home(trained, tmp_path, capsys):
    copy = tmp_path / "home"
    shutil.copytree(trained, copy)
    capsys.readouterr()
    return copy


def run(home, tmp_path, capsys, *extra: str, steps: int = 160) -> tuple[int, str]:
    code = main(["run", "--home", str(home), "--config", str(config_file(tmp_path / "run.yaml", steps)), *extra])
    return code, capsys.readouterr().out


def view_rows(home) -> list[tuple]:
    """``(artifact_version, rows)`` per slice of the DuckDB view, read as a user reads it."""
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        con.execute(f"SET file_search_path = '{home}'")
        return con.execute("SELECT slice, artifact_version, count(*) FROM embeddings GROUP BY ALL ORDER BY 1").fetchall()


def zero_bytes(path, count: int = 1_000) -> None:
    """Overwrite ``count`` bytes in the middle of ``path`` with zeros, in place (size kept)."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 2 - count // 2)
        fh.write(b"\0" * count)


# ---- deliverable 3: the published map follows the served model


def test_a_new_model_re_embeds_every_slice_even_those_whose_file_left_incoming(home, tmp_path, capsys):
    """A slice's file deleted from incoming (documented as safe), then a new model: every slice of the
    home is embedded with it, the view switches, and the run says so in one line."""
    before = served(home)
    (home / "incoming" / "digits_000.parquet").unlink()
    code, out = run(home, tmp_path, capsys, "--retrain", steps=170)
    now = served(home)
    assert code == 0 and now != before, out[-2000:]
    assert "ok      embeddings[digits_000]" in out and "ok      embeddings[digits_001]" in out, out[-2000:]
    assert f"map on model {now}: 2 of 2 slices current" in out
    assert published_embeddings(_wh(home))["current"] == now
    assert [(k, v) for k, v, _ in view_rows(home)] == [(k, now) for k in KEYS]

    code, out = run(home, tmp_path, capsys)  # nothing new: every slice up to date, and the map says so
    assert code == 0 and out.count("up to date  embeddings[") == 2 and f"map on model {now}: 2 of 2 slices current" in out


def test_a_slice_that_cannot_be_embedded_is_named_and_the_map_never_claims_to_be_current(home, tmp_path, capsys):
    """A slice whose copy is damaged and whose file is gone cannot be embedded with a new model: the view
    stays on the old model whole, the run names the slice and fails, and so does every later run."""
    before = served(home)
    (home / "incoming" / "digits_000.parquet").unlink()
    zero_bytes(home / "warehouse" / "raw_slices" / "digits_000.parquet")
    code, out = run(home, tmp_path, capsys, "--retrain", steps=170)
    now = served(home)
    assert code == 1 and now != before, out[-3000:]
    named = [line for line in out.splitlines() if "FAILED  raw_slices[digits_000]" in line]
    assert len(named) == 1 and "warehouse/raw_slices/digits_000.parquet is damaged" in named[0]
    assert "put it back there" in named[0]
    stale = f"map on model {before} (served: {now}): 1 of 2 slices current; stale: digits_000"
    assert stale in out, out[-3000:]
    assert [(k, v) for k, v, _ in view_rows(home)] == [(k, before) for k in KEYS], "the view stays whole, on the old model"
    assert "Traceback" not in out
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:  # what the UI shows
        assert latest_metadata(instance, "embeddings", "map_status", "digits_001") == stale

    code, out = run(home, tmp_path, capsys)  # a later run does not call the map up to date
    assert code == 1 and stale in out and "Traceback" not in out


def _wh(home):
    from umap_assets.warehouse import Warehouse

    return Warehouse(root=home / "warehouse", duckdb_path=home / "warehouse.duckdb")


# ---- deliverable 5: every byte the product wrote is checked when it is read again


def test_a_damaged_slice_is_named_when_read_and_ingested_again_from_its_file(home, tmp_path, capsys):
    copy = home / "warehouse" / "raw_slices" / "digits_001.parquet"
    rows = pq.read_table(copy)
    zero_bytes(copy)
    assert "no longer matches its checksum" in file_damage(copy)
    out_file = tmp_path / "out.parquet"
    assert main(["embed", "--home", str(home), "--artifact", str(ModelStore(Layout.at(home)).artifact_path),
                 "--input", str(copy), "--output", str(out_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "digits_001.parquet: damaged: a page no longer matches its checksum" in err[0], err
    assert not out_file.exists()

    version = served(home)
    code, out = run(home, tmp_path, capsys)
    assert code == 0, out[-3000:]
    assert "warehouse/raw_slices/digits_001.parquet is damaged" in out
    assert "ok      digits_001.parquet (again: its warehouse copy was damaged)" in out, out[-3000:]
    assert "ok      embeddings[digits_001]" in out and f"map on model {version}: 2 of 2 slices current" in out
    assert file_damage(copy) is None and pq.read_table(copy).equals(rows)
    assert "train_model" not in out, "the same rows again: the served model covers them"


def test_damaged_samples_and_embeddings_are_drawn_and_embedded_again(home, tmp_path, capsys):
    wh = _wh(home)
    version = served(home)
    sample, embedded = wh.table_path("samples", "digits_000"), wh.embeddings_path(version, "digits_001")
    before = pq.read_table(sample)
    zero_bytes(sample, 500)
    zero_bytes(embedded, 500)
    with duckdb.connect() as con:  # DuckDB reads the damaged page as if nothing happened: the map checks first
        assert con.execute(f"SELECT count(*) FROM read_parquet('{embedded}')").fetchone()[0] > 0
    assert main(["map", "--home", str(home), "--no-browser", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"warehouse/embeddings/{version}/digits_001.parquet is damaged" in err[0], err

    code, out = run(home, tmp_path, capsys)
    assert code == 0, out[-3000:]
    assert "ok      samples[digits_000]" in out and "ok      embeddings[digits_001]" in out, out[-3000:]
    assert pq.read_table(sample).equals(before), "the same seed draws the same sample"
    assert file_damage(embedded) is None and f"map on model {version}: 2 of 2 slices current" in out


def test_a_slice_damaged_after_its_file_left_incoming_is_named_in_one_line(home, tmp_path, capsys):
    (home / "incoming" / "digits_000.parquet").unlink()
    zero_bytes(home / "warehouse" / "raw_slices" / "digits_000.parquet")
    code, out = run(home, tmp_path, capsys)
    assert code == 1 and "Traceback" not in out
    lines = [line for line in out.splitlines() if "raw_slices/digits_000.parquet is damaged" in line]
    assert lines and all("put it back there to ingest it again" in line for line in lines), out[-3000:]
    assert "map on model" in out and "2 of 2 slices current" in out, "its embeddings were made before the damage"


@pytest.mark.parametrize("harm", ["delete", "garbage"])
def test_a_missing_or_damaged_duckdb_catalogue_is_rebuilt_by_run(home, tmp_path, capsys, harm):
    path = home / "warehouse.duckdb"
    expected = view_rows(home)
    path.unlink() if harm == "delete" else path.write_bytes(os.urandom(4096))
    code, out = run(home, tmp_path, capsys)
    assert code == 0, out[-3000:]
    assert "rebuilt warehouse.duckdb (" + ("missing" if harm == "delete" else "not readable") in out
    assert view_rows(home) == expected


def test_map_rebuilds_a_damaged_catalogue_and_serves(home):
    (home / "warehouse.duckdb").write_bytes(b"not a database" * 100)
    env = {**os.environ, "UMAP_ASSETS_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "umap_assets.cli", "map", "--home", str(home), "--no-browser",
                             "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert first.startswith("rebuilt warehouse.duckdb (not readable"), (first, err)
    assert second.startswith("map of 1,797 rows"), (second, err)
    assert "Traceback" not in err
    assert sum(n for *_, n in view_rows(home)) == 1797


@pytest.mark.parametrize("harm", ["delete", "garbage"])
def test_a_missing_served_artifact_is_restored_from_the_promoted_version(home, tmp_path, capsys, harm):
    store = ModelStore(Layout.at(home))
    version = served(home)
    store.artifact_path.unlink() if harm == "delete" else store.artifact_path.write_bytes(b"garbage" * 100)
    code, out = run(home, tmp_path, capsys)
    assert code == 0, out[-3000:]
    assert f"restored models/artifact.uart (is {'missing' if harm == 'delete' else 'unreadable'}" in out
    assert f"the served version {version}" in out and "train_model" not in out, out[-3000:]
    assert store.artifact_path.read_bytes() == store.versioned_artifact_path(version).read_bytes()
    assert out.count("up to date  embeddings[") == 2, "the map did not move"


def test_a_reader_names_the_damaged_file_and_a_run_reads_each_file_once_per_change(tmp_path):
    """The training's readers raise one line naming the file; the run's check reads a file again only
    when its size or time changed (damage that keeps both is left to the readers, which verify every page)."""
    import numpy as np
    import pyarrow as pa

    from umap_assets.contract import DamagedFile
    from umap_assets.integrity import find_damage
    from umap_assets.sample_rows import read_sample_rows
    from umap_assets.warehouse import take_rows, write_table

    wh = _wh(tmp_path)
    n, rng = 3_000, np.random.default_rng(0)
    features = pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=n * 16).astype(np.float32)), 16)
    table = pa.table({"slice": ["a"] * n, "id": np.arange(n), "features": features, "label": rng.integers(0, 3, n),
                      "split": np.where(np.arange(n) % 10 == 0, "validation", "train")})
    path = wh.table_path("samples", "a")
    write_table(table, path)
    assert find_damage(wh) == [] and "samples/a.parquet" in json.loads((wh.root / "verified.json").read_text())

    stat = path.stat()
    zero_bytes(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same size and time: not read again
    assert find_damage(wh) == []
    with pytest.raises(DamagedFile, match=rf"^{path}: damaged: a page no longer matches its checksum"):
        read_sample_rows(wh, "train", fill_to=None)
    with pytest.raises(DamagedFile, match=rf"^{path}: damaged"):
        take_rows(path, np.arange(0, n, 7))

    os.utime(path)  # the time a write in place leaves
    assert [(d.table, d.key, d.path) for d in find_damage(wh)] == [("samples", "a", path)]


def test_a_home_without_its_catalogue_is_rebuilt_from_the_files_and_the_dagster_history(home, tmp_path, capsys):
    """``warehouse/catalog/``, ``warehouse.duckdb`` and the published map's record all gone or garbage:
    the next run writes the records from the ``raw_slices`` history, rebuilds the catalogue and
    publishes the served model's maps again."""
    expected = view_rows(home)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        slices = con.execute("SELECT key, rows, dim, path, source FROM slices ORDER BY key").fetchall()
    shutil.rmtree(home / "warehouse" / "catalog")
    (home / "warehouse.duckdb").unlink()
    (home / "warehouse" / "embeddings" / "published.json").write_bytes(b"\x00garbage")
    code, out = run(home, tmp_path, capsys)
    assert code == 0, out[-3000:]
    assert "restored the catalogue records of 2 slice(s) from the Dagster history" in out
    assert f"map on model {served(home)}: 2 of 2 slices current" in out
    assert view_rows(home) == expected
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT key, rows, dim, path, source FROM slices ORDER BY key").fetchall() == slices
