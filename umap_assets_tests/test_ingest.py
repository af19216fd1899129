"""raw_slices + samples through Dagster, including every bad-input case."""

import numpy as np
import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from umap_assets.contract import SliceError, SliceSpec, features_dim, features_matrix, partition_key_for, vector_field
from umap_assets.defs.ingest import raw_slices, samples
from umap_assets.warehouse import write_canonical_slice

from .conftest import add_partitions, make_slice


def materialize_slice(instance, resources, key, config=None):
    run_config = {"ops": {"samples": {"config": config}}} if config else None
    return dg.materialize(
        [raw_slices, samples],
        partition_key=key,
        instance=instance,
        resources=resources,
        raise_on_error=False,
        run_config=run_config,
    )


def failure_message(result) -> str:
    events = [e for e in result.all_events if e.is_step_failure]
    assert events, "expected a step failure"
    return events[0].step_failure_data.error.message


def test_ingest_and_sample_one_slice(instance, resources, layout):
    make_slice(layout.incoming / "part_a.parquet", n=600, n_labels=3, label_weights=[0.8, 0.15, 0.05])
    add_partitions(instance, "part_a")
    result = materialize_slice(instance, resources, "part_a", {"rate": 0.1, "floor": 20, "validation_fraction": 0.2})
    assert result.success
    raw = pq.read_table(layout.warehouse / "raw_slices" / "part_a.parquet")
    assert raw.num_rows == 600 and raw.schema.field("features").equals(vector_field("features", 8), check_metadata=True)
    source = pq.read_table(layout.incoming / "part_a.parquet")
    np.testing.assert_array_equal(features_matrix(raw.column("features")), features_matrix(source.column("features")))
    assert pq.ParquetFile(layout.warehouse / "raw_slices" / "part_a.parquet").metadata.row_group(0).column(1).compression == "UNCOMPRESSED"
    mats = result.asset_materializations_for_node("raw_slices")
    assert mats[0].metadata["dagster/row_count"].value == 600
    assert mats[0].metadata["dimensions"].value == 8

    s = pq.read_table(layout.warehouse / "samples" / "part_a.parquet").to_pandas()
    counts = s.groupby("stratum").size().to_dict()
    n_per_label = raw.to_pandas().groupby("label").size().to_dict()
    for label, n in n_per_label.items():
        assert counts[str(label)] == min(n, max(20, round(0.1 * n)))
    assert set(s["split"]) == {"train", "validation"}
    assert abs((s["split"] == "validation").mean() - 0.2) < 0.05
    assert s["id"].is_unique

    # the catalog in DuckDB knows the slice
    with duckdb.connect(str(layout.duckdb_path), read_only=True) as con:
        assert con.execute("SELECT rows, dim FROM slices WHERE key = 'part_a'").fetchone() == (600, 8)

    # deterministic: a re-run gives the identical sample
    again = materialize_slice(instance, resources, "part_a", {"rate": 0.1, "floor": 20, "validation_fraction": 0.2})
    assert again.success
    s2 = pq.read_table(layout.warehouse / "samples" / "part_a.parquet").to_pandas()
    assert s2[["id", "split"]].equals(s[["id", "split"]])


def test_one_seed_drives_every_step_that_draws(instance, resources, layout):
    """The project's seed is declared once (the ``Seed`` resource): no step's config has a seed of its own,
    every step that draws at random reads it, and setting it draws another sample of the same slice."""
    from umap_assets.defs.resources import Seed
    from umap_assets.definitions import load_definitions
    from umap_assets.numerics.sampling import derive_seed

    graph = load_definitions().resolve_asset_graph()
    drawing = {"samples", "coreset", "teacher", "student", "artifact", "quality_report", "drift"}
    for key in graph.get_all_asset_keys():
        schema = graph.get(key).assets_def.node_def.config_schema
        fields = getattr(schema.config_type, "fields", None) if schema else None
        assert "seed" not in (fields or {}), f"{key.to_user_string()} declares a seed of its own"
        if key.to_user_string() in drawing:
            assert "seed" in graph.get(key).assets_def.required_resource_keys, key.to_user_string()
    make_slice(layout.incoming / "part_a.parquet", n=600, n_labels=3)
    add_partitions(instance, "part_a")
    config = {"rate": 0.1, "floor": 20, "validation_fraction": 0.2}
    drawn = {}
    for value in (0, 7, 7):
        result = materialize_slice(instance, {**resources, "seed": Seed(value=value)}, "part_a", config)
        assert result.success
        assert result.asset_materializations_for_node("samples")[0].metadata["seed"].value == derive_seed(value, "part_a")
        drawn.setdefault(value, []).append(pq.read_table(layout.warehouse / "samples" / "part_a.parquet",
                                                         columns=["id", "split"]))
    assert drawn[7][0].equals(drawn[7][1])  # the same seed: the same sample
    assert not drawn[0][0].equals(drawn[7][0])  # another seed: another sample


def test_unlabelled_slice_is_stratified_by_clusters(instance, resources, layout):
    make_slice(layout.incoming / "nolabel.parquet", n=400, n_labels=None)
    add_partitions(instance, "nolabel")
    result = materialize_slice(instance, resources, "nolabel", {"rate": 0.25, "floor": 5, "n_clusters": 4})
    assert result.success
    s = pq.read_table(layout.warehouse / "samples" / "nolabel.parquet")
    assert "label" not in s.column_names
    assert len(set(s.column("stratum").to_pylist())) == 4
    md = result.asset_materializations_for_node("samples")[0].metadata
    assert md["strata"].value == "kmeans"


@pytest.mark.parametrize("kind", ["int", "string"])
def test_a_partly_labelled_slice_ingests_its_null_labels_as_unlabelled_rows(kind, instance, resources, layout):
    """A null label is an unlabelled row, not an error: the slice ingests, the nulls stay null, the
    label counts name the labelled rows only, and the unlabelled rows are a stratum of their own."""
    source = make_slice(layout.incoming / "part.parquet", n=400, n_labels=3)
    table = pq.read_table(source)
    labels = table.column("label").to_numpy()
    missing = np.random.default_rng(1).random(400) < 0.3
    values = [None if m else (int(v) if kind == "int" else f"c{v}") for v, m in zip(labels, missing)]
    pq.write_table(table.set_column(2, "label", pa.array(values)), source)
    add_partitions(instance, "part")
    result = materialize_slice(instance, resources, "part", {"rate": 0.25, "floor": 5, "validation_fraction": 0.2})
    assert result.success
    raw = pq.read_table(layout.warehouse / "raw_slices" / "part.parquet")
    assert raw.num_rows == 400 and raw.column("label").null_count == int(missing.sum())
    md = result.asset_materializations_for_node("raw_slices")[0].metadata
    assert md["unlabelled_rows"].value == int(missing.sum())
    assert sum(md["label_counts"].value.values()) == 400 - int(missing.sum()) and "None" not in md["label_counts"].value
    s = pq.read_table(layout.warehouse / "samples" / "part.parquet")
    strata = s.column("stratum").to_pylist()
    assert "(unlabelled)" in strata and "None" not in strata and len(set(strata)) == 4
    assert s.column("label").null_count == strata.count("(unlabelled)")
    assert result.asset_materializations_for_node("samples")[0].metadata["strata"].value == "label"


def test_a_label_column_of_nulls_alone_is_an_unlabelled_slice(instance, resources, layout):
    """Every label null (a column of the null type, as pandas writes one): ingested, stratified by clusters."""
    source = make_slice(layout.incoming / "blank.parquet", n=300, n_labels=None)
    pq.write_table(pq.read_table(source).append_column("label", pa.nulls(300)), source)
    add_partitions(instance, "blank")
    result = materialize_slice(instance, resources, "blank", {"rate": 0.25, "floor": 5, "n_clusters": 3})
    assert result.success
    assert pq.read_table(layout.warehouse / "raw_slices" / "blank.parquet").column("label").null_count == 300
    assert result.asset_materializations_for_node("samples")[0].metadata["strata"].value == "kmeans"


def _write(path, table):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _fsl(X):
    X = np.asarray(X, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])


BAD_CASES = {
    "not_parquet": (lambda p: p.write_text("id,features\n1,2\n"), "not a Parquet file"),
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "no_id": (lambda p: _write(p, pa.table({"features": _fsl(np.ones((3, 8)))})), "missing id column 'id'"),
    "no_features": (lambda p: _write(p, pa.table({"id": [1, 2, 3]})), "missing features"),
    "text_features": (
        lambda p: _write(p, pa.table({"id": [1, 2], "features": pa.array([["a"] * 8, ["b"] * 8])})),
        "expected numeric",
    ),
    "nan_values": (
        lambda p: _write(p, pa.table({"id": [1, 2, 3], "features": _fsl([[0] * 8, [0] * 7 + [np.nan], [0] * 8])})),
        "nan at row 1",
    ),
    "inf_values": (
        lambda p: _write(p, pa.table({"id": [1, 2, 3], "features": _fsl([[0] * 8, [0] * 8, [np.inf] * 8])})),
        "inf at row 2",
    ),
    "wrong_dim": (lambda p: _write(p, pa.table({"id": [10, 11], "features": _fsl(np.ones((2, 5)))})),
                  "dimension is 5, but the home's contract (recorded in"),
    "string_ids": (lambda p: _write(p, pa.table({"id": ["a", "b"], "features": _fsl(np.ones((2, 8)))})),
                   "id type is string, but the home's contract"),
    "dup_ids": (lambda p: _write(p, pa.table({"id": [1, 2, 2], "features": _fsl(np.ones((3, 8)))})),
                "duplicate ids"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_slice_fails_with_a_clear_message_and_leaves_nothing(case, instance, resources, layout):
    make_slice(layout.incoming / "good.parquet", n=200)
    writer, expected = BAD_CASES[case]
    writer(layout.incoming / f"{case}.parquet")
    add_partitions(instance, "good", case)
    assert materialize_slice(instance, resources, "good").success
    before = sorted(p.name for p in (layout.warehouse).rglob("*"))

    result = materialize_slice(instance, resources, case)
    assert not result.success
    message = failure_message(result)
    assert f"{case}.parquet" in message, message
    assert expected.lower() in message.lower(), message
    # nothing of the failed slice reached the warehouse, and the good slice is untouched
    assert sorted(p.name for p in (layout.warehouse).rglob("*")) == before
    assert pq.read_table(layout.warehouse / "raw_slices" / "good.parquet").num_rows == 200
    with duckdb.connect(str(layout.duckdb_path), read_only=True) as con:
        assert [r[0] for r in con.execute("SELECT key FROM slices").fetchall()] == ["good"]


def test_numeric_feature_columns_from_config(tmp_path):
    src = _write(tmp_path / "cols.parquet", pa.table({"id": ["a", "b"], "f1": [1.0, 2.0], "f2": [3, 4], "label": ["x", "y"]}))
    dest = tmp_path / "out.parquet"
    summary = write_canonical_slice(src, dest, SliceSpec(feature_columns=("f1", "f2")))
    t = pq.read_table(dest)
    assert summary.rows == 2 and summary.dim == 2
    assert features_matrix(t.column("features")).tolist() == [[1.0, 3.0], [2.0, 4.0]]
    assert t.column("id").to_pylist() == ["a", "b"]


def test_ragged_lists_name_the_row(tmp_path):
    src = _write(tmp_path / "ragged.parquet", pa.table({"id": [1, 2], "features": pa.array([[1.0, 2.0], [1.0]])}))
    with pytest.raises(SliceError, match=r"ragged.parquet: .*1 values at row 1"):
        write_canonical_slice(src, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp file left behind"


def test_partition_key_is_made_safe_and_unique():
    assert partition_key_for("/x/2024-01_eu.parquet") == "2024-01_eu"  # a safe name is kept as it is
    odd = partition_key_for("/x/2024-01,eu|[a] b.parquet")
    assert odd.startswith("2024-01_eu_a_b-") and len(odd) == len("2024-01_eu_a_b-") + 8
    assert partition_key_for("2024-01 eu.parquet") != partition_key_for("2024-01,eu.parquet")
    assert partition_key_for("_.parquet").startswith("slice-")
    assert "..." not in partition_key_for("a...b.parquet") and "\n" not in partition_key_for("a\nb.parquet")


def test_a_reader_holding_the_catalog_never_blocks_ingest(instance, resources, layout):
    """A user's DuckDB session in another process keeps its (old) catalog; ingest swaps in a new one."""
    import subprocess
    import sys
    import time

    make_slice(layout.incoming / "first.parquet")
    add_partitions(instance, "first", "second")
    assert materialize_slice(instance, resources, "first").success
    reader = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time\n"
         f"con = duckdb.connect({str(layout.duckdb_path)!r}, read_only=True)\n"
         "print(con.execute('SELECT count(*) FROM slices').fetchone()[0], flush=True)\n"
         "sys.stdin.readline()\n"
         "print(con.execute('SELECT count(*) FROM slices').fetchone()[0], flush=True)\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "1"  # the reader holds its lock now
        make_slice(layout.incoming / "second.parquet", seed=1, id_start=10_000)
        started = time.monotonic()
        assert materialize_slice(instance, resources, "second").success
        assert time.monotonic() - started < 30, "ingest waited on the reader's lock"
        with duckdb.connect(str(layout.duckdb_path), read_only=True) as con:
            assert con.execute("SELECT key FROM slices ORDER BY key").fetchall() == [("first",), ("second",)]
        out, _ = reader.communicate("\n", timeout=30)
        assert out.strip() == "1", "the reader keeps a consistent view of the catalog it opened"
    finally:
        reader.kill()


def test_a_copied_home_reads_its_own_files(tmp_path):
    import shutil

    from umap_assets.warehouse import Warehouse, connect, publish_embeddings, record_slice

    home = tmp_path / "home"
    wh = Warehouse(root=home / "warehouse", duckdb_path=home / "warehouse.duckdb")
    wh.embeddings_dir("v1").mkdir(parents=True)
    pq.write_table(pa.table({"id": [1, 2], "x": [0.5, 1.5], "y": [2.0, 3.0]}), wh.embeddings_path("v1", "s1"))
    record_slice(wh, "s1", {"rows": 2, "dim": 4, "bytes": 10, "path": "warehouse/raw_slices/s1.parquet",
                            "source": "incoming/s1.parquet", "label_counts": {}})
    assert publish_embeddings(wh, "v1", ["s1"], keep=2)
    shutil.copytree(home, tmp_path / "copy")
    shutil.rmtree(home)
    copied = Warehouse(root=tmp_path / "copy" / "warehouse", duckdb_path=tmp_path / "copy" / "warehouse.duckdb")
    with connect(copied) as con:
        assert con.execute("SELECT slice, sum(x) FROM embeddings GROUP BY slice").fetchall() == [("s1", 2.0)]
        assert con.execute("SELECT path FROM slices").fetchone()[0] == "warehouse/raw_slices/s1.parquet"


def test_the_home_contract_is_recorded_visible_and_declarable(instance, resources, layout):
    import json

    from umap_assets.defs.resources import SliceContract, WarehouseResource

    make_slice(layout.incoming / "a_nan.parquet", dim=8)
    bad = _write(layout.incoming / "a_nan.parquet",
                 pa.table({"id": [1, 2], "features": _fsl([[0] * 32, [np.nan] * 32])}))
    make_slice(layout.incoming / "b.parquet", dim=16)
    add_partitions(instance, "a_nan", "b")
    assert not materialize_slice(instance, resources, "a_nan").success
    assert not (layout.home / "contract.json").exists(), "a rejected first slice does not fix the contract"
    assert materialize_slice(instance, resources, "b").success
    recorded = json.loads((layout.home / "contract.json").read_text())
    assert recorded == {"dim": 16, "features": "features", "id_type": "int64", "recorded_from": "b"}
    bad.unlink()
    wide = make_slice(layout.incoming / "a_nan.parquet", dim=32, id_start=1000)
    result = materialize_slice(instance, resources, "a_nan")
    message = failure_message(result)
    assert "dimension is 32, but the home's contract" in message and "says 16" in message
    assert "delete" in message and "contract.json" in message, "the message says how to change the contract"
    # declared in config: the declaration wins over the recorded file
    declared = {**resources, "contract": SliceContract(dim=32)}
    assert materialize_slice(instance, declared, "a_nan").success
    assert features_dim(pq.read_schema(layout.warehouse / "raw_slices" / "a_nan.parquet").field("features")) == 32
    assert wide.exists() and WarehouseResource


def test_a_wide_file_is_refused_from_its_schema_before_its_data_is_read(tmp_path):
    """An 80 MB file of 2048-d list rows: its dimension is known from its first row, with memory to spare."""
    import subprocess
    import sys

    X = np.zeros((10_000, 2048), np.float32)
    src = _write(tmp_path / "wide.parquet", pa.table({"id": np.arange(10_000), "features": pa.array(list(X))}))
    del X
    code = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from umap_assets.contract import SliceError, SliceSpec\n"
        "from umap_assets.home_contract import HomeContract, check_slice, slice_facts\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"facts = slice_facts(Path({str(src)!r}), SliceSpec(), 'wide')\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "try:\n"
        "    check_slice(Path('wide.parquet'), facts, HomeContract('features', 784, 'int64', 'config'), Path('c.json'))\n"
        "except SliceError as exc:\n"
        "    print(facts.dim, grown, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    dim, grown_kb, message = out.split(" ", 2)
    assert dim == "2048" and "dimension is 2048, but the home's contract" in message
    assert int(grown_kb) < 30 * 1024, f"RSS grew {int(grown_kb) // 1024} MB to read the dimension of an 80 MB file"


def test_the_embeddings_view_switches_versions_only_when_every_slice_has_one(tmp_path):
    from umap_assets.warehouse import Warehouse, connect, publish_embeddings, published_embeddings

    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")

    def write(version: str, key: str) -> None:
        wh.embeddings_dir(version).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": [1], "x": [0.0], "y": [1.0], "artifact_version": [version]}),
                       wh.embeddings_path(version, key))

    def versions() -> list[tuple]:
        with connect(wh) as con:
            return con.execute("SELECT artifact_version, count(*) FROM embeddings GROUP BY 1 ORDER BY 1").fetchall()

    slices = ["a", "b"]
    write("v1", "a")
    assert not publish_embeddings(wh, "v1", slices, keep=2) and not wh.duckdb_path.exists()
    write("v1", "b")
    assert publish_embeddings(wh, "v1", slices, keep=2) and versions() == [("v1", 2)]
    write("v2", "a")
    assert not publish_embeddings(wh, "v2", slices, keep=2)
    assert versions() == [("v1", 2)], "half of a new version stays out of the view"
    write("abandoned", "a")  # a model replaced before its maps were done
    write("v2", "b")
    assert publish_embeddings(wh, "v2", slices, keep=2) and versions() == [("v2", 2)]
    assert not wh.embeddings_dir("abandoned").exists() and wh.embeddings_dir("v1").exists()
    for key in slices:
        write("v3", key)
    assert publish_embeddings(wh, "v3", slices, keep=2) and versions() == [("v3", 2)]
    assert published_embeddings(wh) == {"current": "v3", "history": ["v1", "v2", "v3"]}
    assert not wh.embeddings_dir("v1").exists() and wh.embeddings_dir("v2").exists()
    with pytest.raises(ValueError, match="keep"):
        publish_embeddings(wh, "v3", slices, keep=0)
