import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from umap_assets.cli import main
from umap_assets.demo_data import parse_idx, synthetic_blobs, write_demo_slices


def test_demo_data_digits_writes_slices(tmp_path, capsys):
    assert main(["demo-data", "--home", str(tmp_path), "--dataset", "digits", "--slices", "4"]) == 0
    files = sorted((tmp_path / "incoming").glob("*.parquet"))
    assert [f.name for f in files] == [f"digits_{i:03d}.parquet" for i in range(4)]
    total = sum(pq.read_metadata(f).num_rows for f in files)
    assert total == 1797
    ids = np.concatenate([pq.read_table(f).column("id").to_numpy() for f in files])
    assert len(np.unique(ids)) == 1797
    # running it again keeps what is there
    assert main(["demo-data", "--home", str(tmp_path), "--dataset", "digits", "--slices", "4"]) == 0
    assert "already there" in capsys.readouterr().out


def test_fashion_mnist_falls_back_to_digits_when_unavailable(tmp_path, monkeypatch):
    import umap_assets.demo_data as dd

    monkeypatch.setattr(dd, "DEBIAN_FASHION_DIR", tmp_path / "nowhere")
    said = []
    paths = write_demo_slices(tmp_path / "in", "fashion-mnist", 2, cache=tmp_path / "cache",
                              allow_download=False, say=said.append)
    assert "falling back to scikit-learn's digits" in said[0]
    assert paths[0].name.startswith("digits_")


@pytest.mark.skipif(not __import__("pathlib").Path("/usr/share/datasets/fashion-mnist").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package():
    from umap_assets.demo_data import load_fashion_mnist

    d = load_fashion_mnist(None, allow_download=False)
    assert d.X.shape == (70_000, 784) and d.X.dtype == np.float32
    assert np.bincount(d.y).tolist() == [7000] * 10


def test_parse_idx_rejects_garbage():
    with pytest.raises(ValueError):
        parse_idx(b"\x00\x00\x09\x01" + b"\x00" * 8)
    arr = parse_idx(bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6)))
    assert arr.shape == (2, 3) and arr[1, 2] == 5


def test_synthetic_generator_is_deterministic_and_clustered():
    X1, y1 = synthetic_blobs(2000, dim=32, n_clusters=5, seed=1)
    X2, y2 = synthetic_blobs(2000, dim=32, n_clusters=5, seed=1)
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
    centroids = np.stack([X1[y1 == c].mean(0) for c in range(5)])
    within = np.mean([np.linalg.norm(X1[y1 == c] - centroids[c], axis=1).mean() for c in range(5)])
    between = np.linalg.norm(centroids[:, None] - centroids[None], axis=2)[np.triu_indices(5, 1)].min()
    assert between > within


def test_run_continues_past_a_bad_slice_and_exits_nonzero(tmp_path, capsys):
    home = tmp_path / "home"
    assert main(["demo-data", "--home", str(home), "--dataset", "digits", "--slices", "2"]) == 0
    (home / "incoming" / "broken.parquet").write_text("this is not parquet")
    config = tmp_path / "run.yaml"  # a short student schedule: this test is about the run, not quality
    config.write_text("ops: {student: {config: {steps: 300, hidden: [64, 64], input_pca_dim: 32, min_rows: 0}}}\n"
                      "resources: {quality_gates: {config: {trust_tolerance: 1.0, knn_accuracy_tolerance: 1.0}}}\n")
    code = main(["run", "--home", str(home), "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 1
    assert "ok      digits_000.parquet" in out and "ok      digits_001.parquet" in out
    tail = out.split("failed:")[-1]
    assert "broken.parquet" in tail and "not a Parquet file" in tail
    assert (home / "warehouse" / "samples" / "digits_001.parquet").exists()
    assert not (home / "warehouse" / "raw_slices" / "broken.parquet").exists()

    # the next run follows training_sensor's rule: a new slice like the others is measured against
    # the served model, which covers it, so nothing retrains and only the new slice is embedded
    (home / "incoming" / "broken.parquet").unlink()
    table = pq.read_table(home / "incoming" / "digits_001.parquet")
    ids = pa.array(table.column("id").to_numpy() + 100_000)
    pq.write_table(table.set_column(table.schema.get_field_index("id"), "id", ids), home / "incoming" / "more.parquet")
    assert main(["run", "--home", str(home), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "ok      more.parquet" in out and "ok      drift[more]" in out, out  # the whole output, should it ever fail again
    assert "the served model stays" in out and "train_model" not in out
    assert "ok      embeddings[more]" in out and "up to date  embeddings[digits_000]" in out
    line = next(line for line in out.splitlines() if "ok      embeddings[more]" in line)
    assert "drift" not in line, "its drift was measured once, before the training decision"


def test_config_file_is_checked_before_any_run(tmp_path, capsys):
    home = tmp_path / "home"
    config = tmp_path / "run.yaml"
    cases = {
        "opz: {}\n": "unknown section 'opz'",
        "ops: {studnet: {config: {steps: 3}}}\n": "unknown asset 'studnet'",
        "resources: {quality_gate: {config: {k: 5}}}\n": "unknown resource 'quality_gate'",
        "resources: {quality_gates: {config: {trust_tolerans: 0.1}}}\n": 'unexpected config entry "trust_tolerans"',
        "ops: {student: {config: {steps: lots}}}\n": "steps",
        "resources: {warehouse: {config: {home: /elsewhere}}}\n": "set by --home",
        "ops: {teacher: {config: {seed: 3}}}\n": "ops: teacher: the project has one seed, for every step: set resources: "
                                                  "{seed: {config: {value: N}}}",
        "resources: {seed: {config: {value: many}}}\n": "value",
    }
    for text, expected in cases.items():
        config.write_text(text)
        assert main(["run", "--home", str(home), "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, err
    assert not list((home / "dagster").glob("history/runs/*")), "no run started"


BAD_VALUES = {
    "ops: {samples: {config: {rate: 0}}}": "ops: samples: rate: Input should be greater than 0 (got 0)",
    "ops: {samples: {config: {rate: 1.5}}}": "ops: samples: rate: Input should be less than or equal to 1",
    "ops: {samples: {config: {validation_fraction: 0}}}": "ops: samples: validation_fraction",
    "ops: {coreset: {config: {budget: -5}}}": "ops: coreset: budget: Input should be greater than or equal to 1 (got -5)",
    "ops: {student: {config: {steps: 0, hidden: [64, 0]}}}": "ops: student: steps",
    "ops: {embeddings: {config: {keep_versions: 0}}}": "ops: embeddings: keep_versions",
    "ops: {drift: {config: {max_uncovered_fraction: 2}}}": "ops: drift: max_uncovered_fraction",
    "ops: {map_tile_runs: {config: {fanout: 1}}}": "ops: map_tile_runs: fanout: Input should be greater than or equal to 2",
    "resources: {quality_gates: {config: {trust_tolerance: -0.1}}}": "resources: quality_gates: trust_tolerance",
    "resources: {contract: {config: {dim: 0}}}": "resources: contract: dim",
}


@pytest.mark.parametrize("text", list(BAD_VALUES))
def test_a_value_out_of_range_is_refused_before_any_run(tmp_path, capsys, text):
    """Dagster's own check reads types, not ranges: the CLI builds each Config from the file, so a
    bad value is one line and exit 2, with a slice waiting and no run on the instance."""
    import dagster as dg

    from .conftest import make_slice

    home = tmp_path / "home"
    make_slice(home / "incoming" / "a.parquet", n=120)
    config = tmp_path / "bad.yaml"
    config.write_text(text + "\n")
    assert main(["run", "--home", str(home), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert BAD_VALUES[text] in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    if "hidden" in text:
        assert "every hidden layer needs at least 1 unit" in err, "each value out of range is named"
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert instance.get_runs_count() == 0


def test_every_setting_has_a_range():
    """Each number a user can set is bounded (pydantic Field constraints), so none is unchecked."""
    import typing

    from umap_assets.defs.drift import DriftConfig
    from umap_assets.defs.embeddings import EmbeddingsConfig
    from umap_assets.defs.ingest import SampleConfig
    from umap_assets.defs.map_tile_runs import MapTileRunsConfig
    from umap_assets.defs.map_tiles import MapTilesConfig
    from umap_assets.defs.model import ArtifactConfig, CoresetConfig, StudentTrainingConfig, TeacherConfig
    from umap_assets.defs.resources import LocalEmbedding, QualityGates, Seed, SliceContract

    unbounded = []
    for cls in (SampleConfig, CoresetConfig, TeacherConfig, StudentTrainingConfig, ArtifactConfig, EmbeddingsConfig,
                DriftConfig, MapTilesConfig, MapTileRunsConfig, QualityGates, SliceContract, LocalEmbedding, Seed):
        for name, f in cls.model_fields.items():
            kinds = set(typing.get_args(f.annotation)) or {f.annotation}
            if kinds & {int, float} and not f.metadata:
                unbounded.append(f"{cls.__name__}.{name}")
    assert not unbounded


def test_a_value_out_of_range_fails_a_run_from_the_ui_at_its_start(tmp_path):
    """The same value in a run launched as the UI or a sensor launches it: the step fails at its
    start, before it reads anything, and the failure names the field and its range."""
    import dagster as dg

    from umap_assets.defs.model import coreset
    from umap_assets.defs.resources import Seed, WarehouseResource

    with dg.instance_for_test() as instance:
        result = dg.materialize([coreset], instance=instance, raise_on_error=False,
                                resources={"warehouse": WarehouseResource(home=str(tmp_path / "home")), "seed": Seed()},
                                run_config={"ops": {"coreset": {"config": {"budget": -5}}}})
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.cause.message
    assert "budget" in message and "greater than or equal to 1" in message and "-5" in message, message


def test_failures_read_in_one_line_with_traces_in_a_log(tmp_path, capsys):
    home = tmp_path / "home"
    assert main(["demo-data", "--home", str(home), "--dataset", "digits", "--slices", "1"]) == 0
    (home / "incoming" / "zz_wrong_dim.parquet").write_bytes(b"")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1, 2], "features": pa.array([[1.0] * 3, [2.0] * 3], pa.list_(pa.float32(), 3))}),
                   home / "incoming" / "zz_wrong_dim.parquet")
    stale = home / "models" / ".artifact.uart.tmp-999999-deadbeef"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half")
    config = tmp_path / "run.yaml"
    config.write_text("resources: {contract: {config: {dim: 64}}}\n")
    assert main(["run", "--home", str(home), "--until", "ingest", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert not stale.exists(), "temp files of killed writers are swept at start"
    assert "Traceback" not in out and "Error occurred while executing" not in out
    failed = [line for line in out.splitlines() if "zz_wrong_dim" in line and "FAILED" in line]
    assert len(failed) == 1 and "dimension is 3, but the home's contract (declared in config" in failed[0], out
    log = home / "logs" / "umap-assets.log"
    assert f"full traces: {log}" in out and "line " in log.read_text() and "SliceError" in log.read_text()


def test_a_home_too_small_to_train_says_so_in_one_line(tmp_path, capsys):
    from .conftest import make_slice

    home = tmp_path / "home"
    make_slice(home / "incoming" / "tiny.parquet", n=10)
    assert main(["run", "--home", str(home), "--until", "train"]) == 1
    out = capsys.readouterr().out
    line = [line for line in out.splitlines() if "FAILED  train_model" in line]
    assert len(line) == 1 and "training needs at least 100 and 32" in line[0], out
    assert "Traceback" not in out and not (home / "models" / "teacher.pkl").exists()


def test_rollback_needs_an_earlier_promoted_version(tmp_path, capsys):
    home = tmp_path / "home"
    assert main(["rollback", "--home", str(home), "--list"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["rollback", "--home", str(home)]) == 1
    assert "no earlier promoted version to roll back to" in capsys.readouterr().err


def test_embed_flags_are_the_slice_spec_fields():
    from umap_assets.cli import build_parser, slice_spec_from_arguments
    from umap_assets.contract import SliceSpec
    from umap_assets.defs.resources import SliceContract

    base = ["embed", "--artifact", "a.uart", "--input", "in.parquet", "--output", "out.parquet"]
    assert slice_spec_from_arguments(build_parser().parse_args(base)) == SliceSpec()
    assert SliceContract().spec() == SliceSpec()
    args = build_parser().parse_args(base + ["--id-column", "key", "--feature-columns", "f0,f1"])
    assert slice_spec_from_arguments(args) == SliceSpec(id_column="key", feature_columns=("f0", "f1"))
