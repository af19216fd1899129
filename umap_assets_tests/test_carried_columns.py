"""Columns the contract carries (``SliceContract.carry``, issue 33): a text and a URL column travel with each
row from the incoming file through ingest and the embeddings (both engines) to the map's queries."""

import shutil

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from umap_assets.artifacts import build_artifact
from umap_assets.contract import MAX_CARRY_CHARS, SliceError, SliceSpec, canonical_spec
from umap_assets.defs.embeddings import embeddings
from umap_assets.defs.ingest import raw_slices, samples
from umap_assets.defs.resources import LocalEmbedding, SliceContract
from umap_assets.map_index import MapIndex, Region
from umap_assets.numerics import compress
from umap_assets.numerics.distill import StudentConfig, train_student
from umap_assets.warehouse import write_canonical_slice

from .conftest import add_partitions, make_slice

CARRY = SliceContract(carry=["title", "url"])


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A small artifact for 8-dimensional slices (conftest's ``make_slice``)."""
    X = np.random.default_rng(0).normal(size=(500, 8)).astype(np.float32)
    result = train_student(X, X[:, :2] * 0.5, None, StudentConfig(hidden=(16,), input_pca_dim=None, steps=4,
                                                                  graph_weight=0.0, seed=0))
    path = tmp_path_factory.mktemp("art") / "a.uart"
    path.write_bytes(build_artifact(compress.fold_layers(result)))
    return path


def carried_slice(path, n=300, id_start=0, title=None):
    """conftest's slice plus a text column (its label as a word) and a URL column."""
    make_slice(path, n=n, id_start=id_start)
    table = pq.read_table(path)
    words = np.array(["zero", "one", "two"])[table.column("label").to_numpy()]
    ids = table.column("id").to_numpy()
    table = table.append_column("title", pa.array(title if title is not None else [f"{w} {i}" for w, i in zip(words, ids)]))
    table = table.append_column("url", pa.array([f"https://example.org/row/{i}" if i % 7 else None for i in ids]))
    pq.write_table(table, path)
    return table


def failure(result) -> str:
    return next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message


def test_carried_columns_travel_from_ingest_into_the_ordered_embeddings_and_the_map_queries(
        instance, resources, layout, artifact):
    source = carried_slice(layout.incoming / "s1.parquet")
    add_partitions(instance, "s1")
    ingested = dg.materialize([raw_slices, samples], partition_key="s1", instance=instance,
                              resources={**resources, "contract": CARRY})
    assert ingested.success
    wh = resources["warehouse"].warehouse()
    raw = pq.read_table(wh.table_path("raw_slices", "s1"))
    assert raw.column_names == ["id", "features", "label", "title", "url"]
    assert "title" not in pq.read_schema(wh.table_path("samples", "s1")).names, "samples keep the model's columns"

    store = resources["warehouse"].store()
    store.artifact_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(artifact, store.artifact_path)
    result = dg.materialize([embeddings], partition_key="s1", instance=instance,
                            resources={"warehouse": resources["warehouse"], "embedding_engine": LocalEmbedding()})
    assert result.success
    version = result.asset_materializations_for_node("embeddings")[0].metadata["artifact_version"].value
    out = pq.read_table(wh.embeddings_path(version, "s1"))
    assert out.column_names == ["id", "x", "y", "label", "title", "url", "artifact_version"]
    want = dict(zip(source.column("id").to_pylist(), zip(source.column("title").to_pylist(), source.column("url").to_pylist())))
    got = dict(zip(out.column("id").to_pylist(), zip(out.column("title").to_pylist(), out.column("url").to_pylist())))
    assert got == want and out.column("url").null_count == sum(1 for i in want if i % 7 == 0)

    index = MapIndex(wh.embedding_files(version))
    assert index.carried == ["title", "url"]
    row, _ = index.find(14)
    assert (row["title"], row["url"]) == want[14] and row["url"] is None
    x, y = float(row["x"]), float(row["y"])
    seen = index.viewport(x - 1e-3, y - 1e-3, x + 1e-3, y + 1e-3).table.to_pylist()
    assert {(r["id"], r["title"], r["url"]) for r in seen} >= {(14, *want[14])}
    box = Region(box=(-1e9, -1e9, 1e9, 1e9))
    chosen = index.select(box, rows_cap=5)
    assert chosen.count == 300 and len(chosen.rows) == 5
    assert all((r["title"], r["url"]) == want[r["id"]] for r in chosen.rows)
    exported = index.export(box, layout.home / "sel.csv", "csv")
    import csv

    with open(layout.home / "sel.csv", newline="") as fh:
        rows = {int(r["id"]): r for r in csv.DictReader(fh)}
    assert exported == 300 and rows[1]["title"] == want[1][0] and rows[1]["url"] == want[1][1]


def test_a_bad_carried_column_is_one_line_naming_the_file_the_column_and_the_row(instance, resources, layout):
    make_slice(layout.incoming / "nested.parquet", n=50)
    table = pq.read_table(layout.incoming / "nested.parquet")
    pq.write_table(table.append_column("title", pa.array([[1, 2]] * 50)).append_column("url", pa.array(["u"] * 50)),
                   layout.incoming / "nested.parquet")
    carried_slice(layout.incoming / "long.parquet", n=50, title=["t"] * 20 + ["x" * (MAX_CARRY_CHARS + 1)] + ["t"] * 29)
    make_slice(layout.incoming / "missing.parquet", n=50)
    add_partitions(instance, "nested", "long", "missing")
    expected = {"nested": "carried column 'title' has type list<element: int64>; expected a string or number column",
                "long": f"carried column 'title' holds {MAX_CARRY_CHARS + 1:,} characters at row 20; expected at most",
                "missing": "missing column 'title' that SliceContract.carry names"}
    for key, words in expected.items():
        result = dg.materialize([raw_slices], partition_key=key, instance=instance, raise_on_error=False,
                                resources={**resources, "contract": CARRY})
        message = failure(result)
        assert not result.success and f"{key}.parquet: " in message and words in message, message
        assert "\n" not in message.strip() and not (layout.warehouse / "raw_slices" / f"{key}.parquet").exists()
    with pytest.raises(ValueError, match="'label' is a column the contract or the map already uses"):
        SliceSpec(carry=("label",))
    with pytest.raises(ValueError, match="at most 8"):
        SliceSpec(carry=tuple(f"c{i}" for i in range(9)))


def test_a_home_without_carried_columns_and_a_slice_before_the_contract_carried_them(tmp_path, artifact):
    """A slice embedded before ``carry`` was set has no carried column: the map's queries show it as null."""
    from umap_assets.engines import LocalEngine, embed

    plain, rich = tmp_path / "plain.parquet", tmp_path / "rich.parquet"
    make_slice(tmp_path / "in_plain.parquet", n=200)
    carried_slice(tmp_path / "in_rich.parquet", n=200, id_start=1000)
    write_canonical_slice(tmp_path / "in_plain.parquet", plain)
    write_canonical_slice(tmp_path / "in_rich.parquet", rich, SliceSpec(carry=("title", "url")))
    assert canonical_spec(plain).carry == () and canonical_spec(rich).carry == ("title", "url")
    folder = tmp_path / "v"
    folder.mkdir()
    for path in (plain, rich):
        embed(LocalEngine(), artifact, path, folder / path.name, canonical_spec(path), ordered=True)
    assert pq.read_schema(folder / "plain.parquet").names == ["id", "x", "y", "label", "artifact_version"]
    index = MapIndex(sorted(folder.glob("*.parquet")))
    table = index.viewport(-1e9, -1e9, 1e9, 1e9, cap=1000).table
    by_slice = {s: [t for i, t in zip(table.column("slice").to_pylist(), table.column("title").to_pylist()) if i == s]
                for s in ("plain", "rich")}
    assert len(by_slice["plain"]) == len(by_slice["rich"]) == 200
    assert set(by_slice["plain"]) == {None} and None not in by_slice["rich"]
    assert index.find(5)[0]["title"] is None and index.find(1005)[0]["title"].endswith(" 1005")


@pytest.mark.spark
def test_the_spark_engine_carries_the_same_columns_as_the_local_one(tmp_path, artifact):
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java, and this machine has none")
    from umap_assets.engines import SPARK_MASTER, LocalEngine, SparkEngine, embed, spark_session

    carried_slice(tmp_path / "in.parquet", n=400)
    canonical = tmp_path / "canonical.parquet"
    write_canonical_slice(tmp_path / "in.parquet", canonical, SliceSpec(carry=("title", "url")))
    spec = canonical_spec(canonical)
    embed(LocalEngine(), artifact, canonical, tmp_path / "local.parquet", spec)
    spark = spark_session(SPARK_MASTER)  # its own session, stopped after: a later test builds its own on a cluster
    try:
        embed(SparkEngine(spark=spark), artifact, canonical, tmp_path / "spark.parquet", spec)
    finally:
        spark.stop()
    a = pq.read_table(tmp_path / "local.parquet").sort_by("id")
    b = pq.read_table(tmp_path / "spark.parquet").sort_by("id")
    assert a.schema.equals(b.schema) and "url" in a.column_names
    assert a.select(["id", "label", "title", "url"]).equals(b.select(["id", "label", "title", "url"]))


def test_a_named_map_carries_the_columns_its_own_contract_names(instance, layout, tmp_path, artifact):
    """Two maps in one location: ``products`` carries ``title`` through its own ``products__contract``; the
    default map's contract carries nothing, so its slice of the same file keeps only the model's columns."""
    from umap_assets.component import UmapMap
    from umap_assets.map_names import MapNames

    names, other = MapNames("products"), tmp_path / "products"
    maps = [UmapMap(home=str(layout.home), engine={"kind": "local"}),
            UmapMap(name="products", home=str(other), columns={"carry": ["title"]}, engine={"kind": "local"})]
    defs = dg.Definitions.merge(*(dg.component_defs(component=m) for m in maps))
    assert defs.resources[names.resource_key("contract")].carry == ["title"] and not defs.resources["contract"].carry
    source = carried_slice(layout.incoming / "s1.parquet")
    (other / "incoming").mkdir(parents=True)
    shutil.copy(layout.incoming / "s1.parquet", other / "incoming" / "s1.parquet")
    for partitions in ("slices", names.partitions):
        instance.add_dynamic_partitions(partitions, ["s1"])
    for job in ("ingest_slice", names.job("ingest_slice")):
        assert defs.resolve_job_def(job).execute_in_process(partition_key="s1", instance=instance).success
    assert pq.read_schema(layout.home / "warehouse" / "raw_slices" / "s1.parquet").names == ["id", "features", "label"]
    wh = defs.resources[names.resource_key("warehouse")].warehouse()
    assert pq.read_schema(wh.table_path("raw_slices", "s1")).names == ["id", "features", "label", "title"]

    store = defs.resources[names.resource_key("warehouse")].store()
    store.artifact_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(artifact, store.artifact_path)
    embed = defs.resolve_job_def(names.job("embed_slice"))
    result = embed.execute_in_process(partition_key="s1", instance=instance,
                                      asset_selection=[names.asset_key("embeddings")])
    assert result.success
    version = result.asset_materializations_for_node(names.op("embeddings"))[0].metadata["artifact_version"].value
    out = pq.read_table(wh.embeddings_path(version, "s1"))
    assert out.column_names == ["id", "x", "y", "label", "title", "artifact_version"]
    assert dict(zip(out.column("id").to_pylist(), out.column("title").to_pylist())) == dict(
        zip(source.column("id").to_pylist(), source.column("title").to_pylist()))
