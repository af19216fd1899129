"""Sources where the data lives (issue 34): a folder in an object store, served by a real S3-compatible
server (moto's, started by the fixture, offline), fsspec's in-memory filesystem, and the Parquet files
of an asset of the user's own project."""

import io
import json
import uuid
from pathlib import Path

import boto3
import dagster as dg
import fsspec
import pyarrow.parquet as pq
import pytest

from umap_assets.atomic import atomic_path
from umap_assets.component import UmapMap
from umap_assets.contract import file_identity
from umap_assets.discovery import SOURCE_IDENTITY
from umap_assets.history import latest
from umap_assets.map_names import MapNames
from umap_assets.planner import INGEST_JOB
from umap_assets.sources import Source, remote_identity

from .conftest import make_slice

NAMES = MapNames("products")


@pytest.fixture(scope="module")
def s3():
    """A real S3-compatible server on a free local port, and the storage options that reach it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"endpoint_url": f"http://{host}:{port}", "key": "test", "secret": "test"}
    boto3.client("s3", endpoint_url=options["endpoint_url"], aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket="maps")
    yield options
    server.stop()


def put(fs, local: Path, url: str) -> None:
    fs.put_file(str(local), url)


class CountingReader(io.BufferedReader):
    """A file that counts the bytes read from it."""

    def __init__(self, raw):
        super().__init__(raw)
        self.read_bytes = 0

    def read(self, size=-1):
        data = super().read(size)
        self.read_bytes += len(data)
        return data


def test_a_look_reads_the_footer_when_the_store_gives_a_checksum_and_everything_when_not(tmp_path):
    path = make_slice(tmp_path / "big.parquet", n=20_000, dim=32)
    size = path.stat().st_size
    with CountingReader(io.FileIO(path)) as fh:
        with_etag = remote_identity(fh, size, "ETag=abc")
    assert with_etag.startswith(f"{size}:ETag=abc:footer=") and fh.read_bytes < 20_000 < size // 50
    with CountingReader(io.FileIO(path)) as fh:
        assert remote_identity(fh, size, None) == file_identity(path)  # same as the local file's identity
    assert fh.read_bytes >= size
    with open(path, "rb") as whole:
        cut = io.BytesIO(whole.read()[: size // 2])
    assert remote_identity(cut, size // 2, "ETag=abc") is None  # still being written: no footer


def test_an_s3_folder_knows_its_files_by_size_etag_and_footer(s3, tmp_path):
    fs = fsspec.filesystem("s3", **s3)
    source = Source("s3://maps/known", s3)
    put(fs, make_slice(tmp_path / "a.parquet", n=300, seed=1), "maps/known/a.parquet")
    fs.pipe("maps/known/notes.txt", b"not a slice")
    fs.pipe(f"maps/known/.b.parquet.tmp-1-{uuid.uuid4().hex[:8]}", b"PAR1")
    fs.pipe("maps/known/partial.parquet", b"PAR1 still being written")
    first = source.look()
    assert set(first) == {"a.parquet", "partial.parquet"} and first["partial.parquet"] is None
    size, etag, footer = first["a.parquet"].split(":")
    assert int(size) == fs.info("maps/known/a.parquet")["size"] and etag.startswith("ETag=")
    assert footer.startswith("footer=")
    fs.copy("maps/known/a.parquet", "maps/known/copy.parquet")
    assert source.look()["copy.parquet"] == first["a.parquet"]  # a copy has the content's identity
    put(fs, make_slice(tmp_path / "a2.parquet", n=300, seed=2), "maps/known/a.parquet")
    assert source.look()["a.parquet"] != first["a.parquet"]  # replaced in place: a new identity
    assert source.where("a.parquet") == "s3://maps/known/a.parquet" and source.names_for_key("copy") == ["copy.parquet"]
    other_writer = boto3.client("s3", endpoint_url=s3["endpoint_url"], aws_access_key_id="test",
                                aws_secret_access_key="test", region_name="us-east-1")
    other_writer.put_object(Bucket="maps", Key="known/late.parquet", Body=(tmp_path / "a.parquet").read_bytes())
    assert source.look()["late.parquet"] == first["a.parquet"]  # written by another client: no stale listing


def test_a_store_without_checksums_gives_the_identity_of_the_whole_content(tmp_path):
    fs = fsspec.filesystem("memory")
    path = make_slice(tmp_path / "m.parquet", n=200)
    fs.pipe("/in-memory-source/m.parquet", path.read_bytes())
    assert Source("memory://in-memory-source").look() == {"m.parquet": file_identity(path)}


def ingest_all(defs: dg.Definitions, instance, names: MapNames, cursor: str | None = None):
    """The map's ``new_slices_sensor`` at its source, then each ingest it asks for; the results and the cursor."""
    sensor = next(s for s in defs.sensors if s.name == names.sensor("new_slices_sensor"))
    given = {names.resource_key("warehouse"): defs.resources[names.resource_key("warehouse")]}
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=given))
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    job = defs.resolve_job_def(names.job(INGEST_JOB))
    runs = [job.execute_in_process(partition_key=r.partition_key, tags=r.tags, instance=instance, raise_on_error=False)
            for r in result.run_requests]
    return runs, result.cursor


def test_a_map_over_an_s3_bucket_ingests_its_slices_and_knows_renames(s3, tmp_path):
    fs = fsspec.filesystem("s3", **s3)
    for i in range(2):
        put(fs, make_slice(tmp_path / f"p{i}.parquet", n=200, seed=i, id_start=1000 * i), f"maps/products/p{i}.parquet")
    home = tmp_path / "home"
    defs = dg.component_defs(component=UmapMap(name="products", home=str(home), sensors_on=[],
                                               source={"path": "s3://maps/products", "storage_options": s3}))
    with dg.instance_for_test() as instance:
        runs, cursor = ingest_all(defs, instance, NAMES)
        assert runs == []  # the first look only notes each file: it must be the same at the next
        runs, cursor = ingest_all(defs, instance, NAMES, cursor)
        assert [r.success for r in runs] == [True, True]
        for i in range(2):
            meta = latest(instance, NAMES.asset_key("raw_slices"), f"p{i}").asset_materialization.metadata
            assert meta["source"].value == f"s3://maps/products/p{i}.parquet"
            assert meta[SOURCE_IDENTITY].value == Source("s3://maps/products", s3).look()[f"p{i}.parquet"]
            assert pq.read_metadata(home / "warehouse" / "raw_slices" / f"p{i}.parquet").num_rows == 200
        catalog = json.loads((home / "warehouse" / "catalog" / "p0.json").read_text())
        assert catalog["source"] == "s3://maps/products/p0.parquet"
        assert not list((home / "cache" / "sources").iterdir()), "each local copy is deleted after its ingest"

        fs.copy("maps/products/p0.parquet", "maps/products/p0_renamed.parquet")
        fs.rm("maps/products/p0.parquet")
        put(fs, make_slice(tmp_path / "bad.parquet", n=50, dim=5, id_start=5000), "maps/products/bad.parquet")
        runs, cursor = ingest_all(defs, instance, NAMES, cursor)
        runs, cursor = ingest_all(defs, instance, NAMES, cursor)
        assert [r.dagster_run.tags["dagster/partition"] for r in runs] == ["bad"]  # the renamed file is up to date
        failure = runs[0].get_step_failure_events()[0].step_failure_data.error.message
        assert "slice 'bad' rejected: bad.parquet:" in failure and "s3://" not in failure.splitlines()[0][:30]
        assert sorted(instance.get_dynamic_partitions(NAMES.partitions)) == ["bad", "p0", "p1"]


def vectors_asset(folder: Path) -> dg.AssetsDefinition:
    """A user's asset that writes each materialization's vectors as a new Parquet file of ``folder``."""

    @dg.asset(key=["shop", "vectors"], group_name="shop")
    def vectors(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        runs = len(list(folder.glob("*.parquet")))
        with atomic_path(folder / f"batch_{runs:03d}.parquet") as tmp:
            make_slice(tmp, n=150, seed=runs, id_start=10_000 * runs)
        return dg.MaterializeResult(metadata={"dagster/row_count": 150})

    return vectors


def test_an_upstream_assets_materializations_become_slices_of_the_map_downstream_of_it(tmp_path):
    folder = tmp_path / "shop_vectors"
    folder.mkdir()
    vectors = vectors_asset(folder)
    component = UmapMap(name="products", home=str(tmp_path / "home"), sensors_on=[],
                        source={"path": folder.as_uri(), "asset": "shop/vectors"})
    defs = dg.Definitions.merge(dg.Definitions(assets=[vectors]), dg.component_defs(component=component))
    graph = defs.resolve_asset_graph()
    assert graph.get(NAMES.asset_key("raw_slices")).parent_keys == {dg.AssetKey(["shop", "vectors"])}
    with dg.instance_for_test() as instance:
        for _ in range(2):
            assert dg.materialize([vectors], instance=instance).success
        runs, cursor = ingest_all(defs, instance, NAMES)
        runs, cursor = ingest_all(defs, instance, NAMES, cursor)
        assert [r.success for r in runs] == [True, True]
        assert dg.materialize([vectors], instance=instance).success  # a new materialization: a new slice
        runs, cursor = ingest_all(defs, instance, NAMES, cursor)
        runs, cursor = ingest_all(defs, instance, NAMES, cursor)
        assert [r.dagster_run.tags["dagster/partition"] for r in runs] == ["batch_002"]
        assert sorted(instance.get_dynamic_partitions(NAMES.partitions)) == ["batch_000", "batch_001", "batch_002"]
        meta = latest(instance, NAMES.asset_key("raw_slices"), "batch_002").asset_materialization.metadata
        assert meta["source"].value == str(folder / "batch_002.parquet")


def test_a_source_this_environment_cannot_read_is_refused_in_one_line(tmp_path):
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="UmapMap 'default': source.path nosuch://b/v: ") as e:
        dg.component_defs(component=UmapMap(home=str(tmp_path), source={"path": "nosuch://b/v"}))
    assert "\n" not in str(e.value)


def test_an_upstream_asset_without_the_folder_it_writes_is_refused_in_one_line(tmp_path):
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="source.asset 'shop/vectors': set source.path") as e:
        dg.component_defs(component=UmapMap(home=str(tmp_path), source={"asset": "shop/vectors"}))
    assert "\n" not in str(e.value)
