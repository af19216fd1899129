"""``umap-assets map``: the server on a free port, its page, its data and its density image."""

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from umap_assets.map_server import MapData, MapUnavailable, make_server
from umap_assets.warehouse import Warehouse, publish_embeddings, record_slice


def write_version(wh: Warehouse, version: str, sizes: dict[str, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    wh.embeddings_dir(version).mkdir(parents=True, exist_ok=True)
    for key, n in sizes.items():
        label = rng.integers(0, 3, n)
        xy = rng.normal(size=(n, 2)) + 5.0 * label[:, None]
        pq.write_table(pa.table({"id": np.arange(n), "x": xy[:, 0].astype(np.float32), "y": xy[:, 1].astype(np.float32),
                                 "label": label, "artifact_version": [version] * n}), wh.embeddings_path(version, key))
        record_slice(wh, key, {"rows": n, "dim": 4, "bytes": 1, "path": f"warehouse/raw_slices/{key}.parquet",
                               "source": f"incoming/{key}.parquet"})
    assert publish_embeddings(wh, version, list(sizes), keep=2)


@pytest.fixture
def served(tmp_path):
    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    write_version(wh, "v1", {"a": 600, "b": 500})
    server = make_server(MapData.load(wh, max_points=400), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", wh
    server.shutdown()
    server.server_close()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def test_the_map_serves_its_page_its_sample_and_every_row_as_density(served):
    base, _ = served
    status, kind, body = get(base + "/")
    assert status == 200 and kind.startswith("text/html") and b"/api/points" in body and b"<canvas" in body
    meta = json.loads(get(base + "/api/meta")[2])
    assert meta["version"] == "v1" and meta["rows"] == 1100 and meta["shown"] == 400
    assert meta["categories"] == ["label", "slice", "artifact_version"]
    assert meta["legends"]["slice"] == ["a", "b"] and meta["legends"]["label"] == ["0", "1", "2"]
    points = json.loads(get(base + "/api/points")[2])
    assert len(points["x"]) == len(points["y"]) == len(points["id"]) == 400
    assert max(points["categories"]["label"]["codes"]) == 2
    status, kind, png = get(base + "/density.png")
    assert status == 200 and kind == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert get(base + "/nothing")[0] == 404


def test_the_map_finds_a_row_and_its_nearest_neighbours_over_every_row(served):
    base, wh = served
    row = json.loads(get(base + "/api/find?id=7&slice=b&k=5")[2])
    assert (row["slice"], row["id"]) == ("b", "7") and len(row["neighbours"]) == 5
    table = pq.read_table(wh.embeddings_path("v1", "b")).to_pandas()
    everything = pa.concat_tables([pq.read_table(wh.embeddings_path("v1", k)) for k in "ab"]).to_pandas()
    x, y = table.loc[7, "x"], table.loc[7, "y"]
    d = np.sqrt((everything.x - x) ** 2 + (everything.y - y) ** 2).sort_values()
    np.testing.assert_allclose([n["distance"] for n in row["neighbours"]], d.iloc[1:6], rtol=1e-4, atol=1e-5)
    status, _, body = get(base + "/api/find?id=99999")
    assert status == 404 and "99999" in json.loads(body)["error"]


def test_the_map_says_what_is_missing_before_anything_is_embedded(tmp_path):
    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    with pytest.raises(MapUnavailable, match="umap-assets run"):
        MapData.load(wh, max_points=10)
