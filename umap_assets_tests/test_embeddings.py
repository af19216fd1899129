"""Streaming embeddings, staleness, the CLI and the Spark engine."""

import shutil
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from umap_assets.artifacts import build_artifact
from umap_assets.cli import main
from umap_assets.contract import SliceBatch, SliceError, SliceSpec
from umap_assets.demo_data import synthetic_chunk, write_slice
from umap_assets.embed import IN_FLIGHT_BYTES, embed_file, transform_workers, transformed
from umap_assets.numerics import compress
from umap_assets.numerics.distill import StudentConfig, train_student
from umap_assets.runtime import Projector
from umap_assets.warehouse import write_canonical_slice


@pytest.fixture(scope="module")
def projector_file(tmp_path_factory):
    X, _ = synthetic_chunk(0, 2000, dim=16, n_clusters=4, seed=2)
    Y = X[:, :2] * 0.5
    result = train_student(X, Y, None, StudentConfig(hidden=(32, 32), input_pca_dim=None, steps=4,
                                                               graph_weight=0.0, seed=0))
    path = tmp_path_factory.mktemp("art") / "a.uart"
    path.write_bytes(build_artifact(compress.fold_layers(result)))
    return path


def _slice(path, n, seed=0, dim=16):
    X, y = synthetic_chunk(seed * 10_000_000, n, dim=dim, n_clusters=4, seed=2)
    return write_slice(path, np.arange(n) + seed * 10_000_000, X, y), X


def test_streaming_transform_equals_one_shot(projector_file, tmp_path):
    src, X = _slice(tmp_path / "in.parquet", 10_000)
    proj = Projector.load(projector_file)
    stats = embed_file(proj, src, tmp_path / "out.parquet", chunk_rows=777)
    out = pq.read_table(tmp_path / "out.parquet")
    assert stats.rows == 10_000 and out.column_names == ["id", "x", "y", "label", "artifact_version"]
    got = np.stack([out.column("x").to_numpy(), out.column("y").to_numpy()], 1)
    np.testing.assert_allclose(got, proj.transform(X), rtol=1e-5, atol=1e-5)
    assert set(out.column("artifact_version").to_pylist()) == {proj.version}
    assert np.array_equal(out.column("id").to_numpy(), np.arange(10_000))


def test_the_transform_pool_keeps_order_and_fits_its_chunks_in_the_budget(projector_file):
    proj = Projector.load(projector_file)
    X, _ = synthetic_chunk(0, 5000, dim=16, n_clusters=4, seed=3)
    chunks = [SliceBatch(None, X[i:i + 300], None, i) for i in range(0, 5000, 300)]
    got = [(batch.offset, coords) for batch, coords in transformed(proj, chunks, workers=3)]
    assert [offset for offset, _ in got] == list(range(0, 5000, 300))
    np.testing.assert_allclose(np.concatenate([c for _, c in got]), proj.transform(X), rtol=1e-5, atol=1e-5)
    assert transform_workers(1 << 20, workers=4) == 4
    assert transform_workers(IN_FLIGHT_BYTES // 2, workers=64) == 1, "huge chunks: one at a time"
    assert transform_workers(IN_FLIGHT_BYTES // 20, workers=64) == 10, "two chunks a thread fit in the budget"


def test_the_transform_pool_raises_in_order_and_stops_reading_when_closed(projector_file):
    proj = Projector.load(projector_file)
    X, _ = synthetic_chunk(0, 100, dim=16, n_clusters=4, seed=3)

    def broken():
        yield SliceBatch(None, X[:50], None, 0)
        raise SliceError("x.parquet", "bad row 7")

    got = []
    with pytest.raises(SliceError, match="bad row 7"):
        for batch, _ in transformed(proj, broken(), workers=2):
            got.append(batch.offset)
    assert got == [0], "the batches before the failure arrive first"

    produced, closed = [], []

    def endless():
        try:
            for i in range(10_000):
                produced.append(i)
                yield SliceBatch(None, X[i % 90:i % 90 + 10], None, i)
        finally:
            closed.append(True)

    for batch, _ in transformed(proj, endless(), workers=2):
        if batch.offset == 3:
            break
    assert len(produced) <= 4 + 2 * 2 + 1, "the readers stop a few batches after the consumer"
    assert closed == [True], "and close the reader (its open file, say) at once"


def test_memory_stays_flat_on_a_slice_much_larger_than_a_chunk(projector_file, tmp_path):
    proj = Projector.load(projector_file)
    peaks = {}
    for n in (20_000, 200_000):
        src, _ = _slice(tmp_path / f"in{n}.parquet", n)
        tracemalloc.start()
        embed_file(proj, src, tmp_path / f"out{n}.parquet", chunk_rows=4096)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # 10x the rows: numpy's peak stays within a small factor (chunk-sized buffers only)
    assert peaks[200_000] < 2 * peaks[20_000] + (1 << 20), peaks
    assert peaks[200_000] < 200_000 * 16 * 4 / 4, "less than a quarter of the slice's features at once"


def test_cli_embed_good_and_bad_input(projector_file, tmp_path, capsys):
    src, _ = _slice(tmp_path / "in.parquet", 1000)
    out = tmp_path / "out.parquet"
    assert main(["embed", "--artifact", str(projector_file), "--input", str(src), "--output", str(out)]) == 0
    assert pq.read_metadata(out).num_rows == 1000

    import pyarrow as pa

    pq.write_table(pa.table({"id": [1, 2]}), tmp_path / "nofeat.parquet")
    wrong, _ = _slice(tmp_path / "wrongdim.parquet", 50, dim=8)
    corrupt = tmp_path / "corrupt.uart"
    corrupt.write_bytes(projector_file.read_bytes()[:-20] + b"\0" * 20)
    cases = [
        (["--input", str(tmp_path / "nofeat.parquet")], "nofeat.parquet: missing features"),
        (["--input", str(wrong)], "dimension 8, but the artifact expects dimension 16"),
        (["--input", str(src), "--artifact", str(corrupt)], "corrupt artifact"),
    ]
    for extra, expected in cases:
        args = ["embed", "--artifact", str(projector_file), "--output", str(tmp_path / "bad.parquet"), *extra]
        assert main(args) == 2
        assert expected in capsys.readouterr().err
        assert not (tmp_path / "bad.parquet").exists()
    # a malformed Spark setting is refused by the parser, an unknown engine by the dispatcher
    with pytest.raises(SystemExit):
        main(["embed", "--artifact", str(projector_file), "--input", str(src), "--output", str(out),
              "--engine", "spark", "--spark-conf", "spark.executor.memory"])
    assert "expected KEY=VALUE, got 'spark.executor.memory'" in capsys.readouterr().err
    from umap_assets.engines import engine_from_settings

    with pytest.raises(ValueError, match=r"engine must be one of \('local', 'spark'\), got 'dask'"):
        engine_from_settings({"engine": "dask"})


def test_cli_embed_refuses_outputs_it_must_not_overwrite(projector_file, tmp_path, capsys):
    src, _ = _slice(tmp_path / "in.parquet", 100)
    home = tmp_path / "home"
    store = home / "models"
    store.mkdir(parents=True)
    artifact = store / "artifact.uart"
    artifact.write_bytes(projector_file.read_bytes())
    before = {p: p.read_bytes() for p in (src, artifact)}
    cases = [
        (str(src), "is the input file"),
        (str(artifact), "is the artifact file"),
        (str(store / "out.parquet"), "under a model store"),
        (str(tmp_path), "is a directory"),
        (str(tmp_path / "new_dir") + "/", "is a directory"),
    ]
    for output, why in cases:
        args = ["embed", "--artifact", str(artifact), "--input", str(src), "--output", output, "--home", str(home)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert why in err and len(err.strip().splitlines()) == 1, err
    # the home's models/ is protected even when the artifact lives elsewhere
    assert main(["embed", "--artifact", str(projector_file), "--input", str(src), "--home", str(home),
                 "--output", str(store / "x.parquet")]) == 2
    assert "under a model store" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in store.iterdir()) == ["artifact.uart"]


def test_bad_rows_name_the_row(projector_file, tmp_path):
    import pyarrow as pa

    X = np.ones((5, 16), np.float32)
    X[3, 2] = np.nan
    pq.write_table(pa.table({"id": np.arange(5), "features": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), 16)}),
                   tmp_path / "nan.parquet")
    with pytest.raises(SliceError, match="nan at row 3"):
        embed_file(Projector.load(projector_file), tmp_path / "nan.parquet", tmp_path / "o.parquet")


@pytest.mark.spark
def test_spark_standalone_cluster_of_two_workers_matches_local(projector_file, tmp_path):
    """A real standalone master and two workers (pyspark's own launcher), nothing configured by hand."""
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("a Spark cluster needs Java, and this machine has none")
    from umap_assets.engines import LocalEngine, SparkEngine, embed, spark_session
    from umap_assets.spark_cluster import standalone_cluster

    src, X = _slice(tmp_path / "in.parquet", 20_000)
    embed(LocalEngine(), projector_file, src, tmp_path / "local.parquet")
    wide = tmp_path / "wide.parquet"  # the same rows with one column per feature (SliceSpec.feature_columns)
    table = pq.read_table(src)
    columns = {"id": table.column("id"), **{f"f{i}": X[:, i] for i in range(X.shape[1])}, "label": table.column("label")}
    pq.write_table(pa.table(columns), wide)
    canonical = tmp_path / "canonical.parquet"  # float32 bytes, as the embeddings asset hands a slice to Spark
    write_canonical_slice(src, canonical)
    from pyspark.sql import SparkSession

    if (left := SparkSession.getActiveSession()) is not None:  # another test's session would be reused, not the cluster
        left.stop()
    with standalone_cluster(workers=2, log_dir=tmp_path / "spark") as master:
        spark = spark_session(master, {"spark.default.parallelism": "4"})
        try:
            engine = SparkEngine(master, spark=spark)
            stats = embed(engine, projector_file, src, tmp_path / "cluster.parquet")
            executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1  # less the driver
            spec = SliceSpec(feature_columns=[f"f{i}" for i in range(X.shape[1])])
            embed(engine, projector_file, wide, tmp_path / "cluster_wide.parquet", spec)
            embed(engine, projector_file, canonical, tmp_path / "cluster_canonical.parquet")
        finally:
            spark.stop()
    assert stats.rows == 20_000 and executors == 2
    a = pq.read_table(tmp_path / "local.parquet").to_pandas().sort_values("id").reset_index(drop=True)
    for output in ("cluster.parquet", "cluster_wide.parquet", "cluster_canonical.parquet"):
        b = pq.read_table(tmp_path / output).to_pandas().sort_values("id").reset_index(drop=True)
        assert (a["id"] == b["id"]).all() and (a["label"] == b["label"]).all()
        np.testing.assert_allclose(a[["x", "y"]].to_numpy(), b[["x", "y"]].to_numpy(), atol=1e-6, rtol=0)


def _materialize_embeddings(projector_file, tmp_path, engine):
    """Materialize ``embeddings`` for one slice with ``engine``; (result, log messages, output path)."""
    import dagster as dg

    from umap_assets.defs.embeddings import embeddings
    from umap_assets.defs.resources import WarehouseResource

    warehouse = WarehouseResource(home=str(tmp_path / "home"))
    store, wh = warehouse.store(), warehouse.warehouse()
    store.artifact_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(projector_file, store.artifact_path)
    source = wh.table_path("raw_slices", "s1")
    source.parent.mkdir(parents=True, exist_ok=True)
    user, _ = _slice(tmp_path / "user.parquet", 3000)
    write_canonical_slice(user, source)  # float32 bytes, as ingest writes the slice
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("slices", ["s1"])
        result = dg.materialize([embeddings], partition_key="s1", instance=instance,
                                resources={"warehouse": warehouse, "embedding_engine": engine})
        logs = [e.message for e in instance.all_logs(result.run_id)]
    assert result.success
    metadata = result.asset_materializations_for_node("embeddings")[0].metadata
    return metadata, logs, source, wh.embeddings_path(metadata["artifact_version"].value, "s1")


def test_embeddings_asset_embeds_in_its_own_process_through_pipes(projector_file, tmp_path):
    """``LocalEmbedding`` runs ``umap_assets.embed_job`` with Dagster Pipes: its logs and metadata reach the run."""
    from umap_assets.defs.resources import LocalEmbedding

    metadata, logs, source, output = _materialize_embeddings(projector_file, tmp_path, LocalEmbedding(chunk_rows=500))
    assert metadata["engine"].value == "local" and metadata["dagster/row_count"].value == 3000
    assert metadata["artifact_version"].value == Projector.load(projector_file).version
    assert 0 < metadata["peak_rss_mb"].value < 400, "the embedding process holds no torch, umap-learn or Dagster"
    assert metadata["map"].value.startswith("![s1](data:image/png;base64,"), "the asset page shows the slice's map"
    assert any("local: embedding" in m for m in logs) and any("rows/s" in m for m in logs), "its logs reach the run"
    ids = pq.read_table(output).column("id").to_numpy()
    np.testing.assert_array_equal(np.sort(ids), np.arange(3000))  # every row once, in the map's spatial order:
    from umap_assets.spatial import MapFrame, id_index_path, is_ordered

    assert is_ordered(output, MapFrame.load(output.parent / "frame.json")) and not np.array_equal(ids, np.arange(3000))
    index = pq.read_table(id_index_path(output))
    np.testing.assert_array_equal(index.column("id").to_numpy(), np.arange(3000))
    np.testing.assert_array_equal(ids[index.column("row").to_numpy()], np.arange(3000)), "the id index finds each row"


@pytest.mark.spark
def test_embeddings_asset_runs_spark_in_its_own_process_through_pipes(projector_file, tmp_path):
    """``SparkEmbedding``: the launched process is the Spark driver; the output equals the local engine's."""
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java, and this machine has none")
    from umap_assets.defs.resources import SparkEmbedding
    from umap_assets.engines import LocalEngine, embed

    metadata, logs, source, output = _materialize_embeddings(projector_file, tmp_path, SparkEmbedding())
    assert metadata["engine"].value == "spark" and metadata["dagster/row_count"].value == 3000
    assert metadata["artifact_version"].value == Projector.load(projector_file).version
    assert any("spark: embedding" in m for m in logs) and any("rows/s" in m for m in logs)
    embed(LocalEngine(), projector_file, source, tmp_path / "local.parquet")
    a = pq.read_table(tmp_path / "local.parquet").to_pandas().sort_values("id").reset_index(drop=True)
    b = pq.read_table(output).to_pandas().sort_values("id").reset_index(drop=True)
    np.testing.assert_allclose(a[["x", "y"]].to_numpy(), b[["x", "y"]].to_numpy(), atol=1e-6, rtol=0)


def test_every_engine_gets_one_checked_job(projector_file, tmp_path):
    """``prepare_job`` validates the input before an engine runs, and decides the schema it writes."""
    from umap_assets.engines import LocalEngine, embed, prepare_job

    class Refusing:  # an engine that must never be reached with a bad input
        name = "refusing"

        def run(self, job):
            raise AssertionError("ran on an input prepare_job should have refused")

    wrong, _ = _slice(tmp_path / "wrongdim.parquet", 50, dim=8)
    with pytest.raises(SliceError, match="dimension 8, but the artifact expects dimension 16"):
        embed(Refusing(), projector_file, wrong, tmp_path / "never.parquet")
    assert not (tmp_path / "never.parquet").exists()
    src, _ = _slice(tmp_path / "in.parquet", 300)
    job = prepare_job(projector_file, src, tmp_path / "out.parquet")
    stats = LocalEngine(chunk_rows=128).run(job)
    assert stats.rows == 300 and pq.read_schema(tmp_path / "out.parquet").equals(job.schema, check_metadata=False)
