"""The map server's routes at any scale (issue 33): tiles, viewport, neighbours, selection, on a real server."""

import io
import json
import urllib.error
import urllib.request

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from umap_assets.atomic import temp_path_for
from umap_assets.map_server import MapData
from umap_assets.spatial import version_frame, write_ordered
from umap_assets.tiles import merge_low_zooms, write_partial_tiles
from umap_assets.warehouse import Warehouse, publish_embeddings, record_slice
from umap_assets_tests.conftest import running_map


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def write_ordered_version(wh: Warehouse, version: str, sizes: dict[str, int], seed: int = 0) -> None:
    """A version as the embed job leaves it: each slice in curve order with its id index, then its tiles."""
    rng = np.random.default_rng(seed)
    first = 0
    for key, n in sizes.items():
        label = rng.integers(0, 3, n)
        xy = rng.normal(size=(n, 2)) + 5.0 * label[:, None]
        destination = wh.embeddings_path(version, key)
        destination.parent.mkdir(parents=True, exist_ok=True)
        staged = temp_path_for(destination)
        pq.write_table(pa.table({"id": np.arange(first, first + n), "x": xy[:, 0].astype(np.float32),
                                 "y": xy[:, 1].astype(np.float32), "label": label.astype(str),
                                 "artifact_version": [version] * n}), staged)
        frame = version_frame(destination.parent, first_file=staged)
        write_ordered(staged, destination, frame, row_group_rows=256)
        staged.unlink()
        write_partial_tiles(destination, frame, max_zoom=3)
        record_slice(wh, key, {"rows": n, "dim": 4, "bytes": 1, "path": f"warehouse/raw_slices/{key}.parquet",
                               "source": f"incoming/{key}.parquet"})
        merge_low_zooms(destination.parent)
        first += n
    assert publish_embeddings(wh, version, list(sizes), keep=2)


@pytest.fixture
def scaled(tmp_path):
    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    write_ordered_version(wh, "v1", {"a": 3000, "b": 2000})
    with running_map(MapData.load(wh, max_points=400)) as base:
        yield base, wh


def _rows(wh: Warehouse):
    return duckdb.sql(f"SELECT * FROM read_parquet('{wh.embeddings_dir('v1')}/*.parquet')").df()


def test_tiles_and_the_frame_come_from_the_served_version(scaled):
    base, wh = scaled
    frame = json.loads(get(base + "/api/frame")[2])
    assert frame["version"] == "v1" and frame["rows"] == 5000 and frame["tiled_slices"] == ["a", "b"]
    top = json.loads(get(base + "/api/tile?z=0&x=0&y=0")[2])
    assert top["version"] == "v1" and sum(top["count"]) == 5000 and sorted(top["labels"]) == ["0", "1", "2"]
    assert sum(top["label_totals"]) == 5000 and len(top["bx"]) == len(top["top"]) == len(top["count"])
    quarters = [json.loads(get(base + f"/api/tile?z=1&x={x}&y={y}")[2]) for x in (0, 1) for y in (0, 1)]
    assert sum(sum(q["count"]) for q in quarters) == 5000, "each zoom level holds every row once"


def test_viewport_and_neighbours_answer_like_a_full_scan(scaled):
    base, wh = scaled
    rows = _rows(wh)
    status, _, body = get(base + "/api/viewport?x0=-1&y0=-1&x1=1&y1=1&cap=5000")
    got = json.loads(body)
    want = rows[(rows.x >= -1) & (rows.x <= 1) & (rows.y >= -1) & (rows.y <= 1)]
    assert status == 200 and got["rows"] == len(want) > 100 and got["complete"]
    assert sorted(got["columns"]["id"]) == sorted(want.id) and set(got["columns"]) >= {"slice", "id", "x", "y", "label"}
    assert got["groups_read"] < got["groups_total"] / 2, "the row groups out of view are not read"
    found = json.loads(get(base + "/api/neighbours?id=42&k=5")[2])
    me = rows[rows.id == 42].iloc[0]
    d = np.hypot(rows.x.to_numpy(np.float64) - me.x, rows.y.to_numpy(np.float64) - me.y)
    d[(rows.id == 42).to_numpy()] = np.inf
    assert found["row"]["id"] == 42 and [n["id"] for n in found["neighbours"]] == list(rows.id.to_numpy()[np.argsort(d)[:5]])
    assert get(base + "/api/neighbours?id=99999999")[0] == 404


def test_a_selection_is_counted_and_exported_as_parquet_csv_or_sql(scaled):
    base, wh = scaled
    rows = _rows(wh)
    want = rows[(rows.x >= 0) & (rows.x <= 6) & (rows.y >= 0) & (rows.y <= 6)]
    got = json.loads(get(base + "/api/select?box=0,0,6,6")[2])
    assert got["count"] == len(want) and dict(got["per_label"]) == {str(k): int(v) for k, v in want.label.value_counts().items()}
    status, kind, body = get(base + "/api/select?box=0,0,6,6&format=parquet")
    assert status == 200 and sorted(pq.read_table(io.BytesIO(body)).column("id").to_pylist()) == sorted(want.id)
    status, kind, body = get(base + "/api/select?box=0,0,6,6&format=csv")
    assert kind.startswith("text/csv") and len(body.decode().splitlines()) == len(want) + 1
    sql = get(base + "/api/select?polygon=0,0,6,0,6,6&format=sql")[2].decode()
    triangle = rows[(rows.x >= 0) & (rows.x <= 6) & (rows.y >= 0) & (rows.y <= 6) & (rows.y < rows.x)]
    assert sorted(duckdb.sql(sql).df().id) == sorted(triangle.id), "the pasted query returns the polygon's rows"
    assert json.loads(get(base + "/api/select?polygon=0,0,6,0,6,6")[2])["count"] == len(triangle)


@pytest.mark.parametrize("path, says", [
    ("/api/tile?z=13&x=0&y=0", "z must be an integer from 0 to 12"),
    ("/api/tile?z=2&x=4&y=0", "x must be an integer from 0 to 3"),
    ("/api/tile?z=1&x=0", "y must be an integer"),
    ("/api/viewport?x0=0&y0=0&x1=nan&y1=1", "x1 must be a finite number"),
    ("/api/viewport?x0=2&y0=0&x1=1&y1=1", "x0 <= x1"),
    ("/api/viewport?x0=0&y0=0&x1=1&y1=1&cap=0", "cap must be an integer from 1 to 200000"),
    ("/api/viewport?x0=0&y0=0&x1=1&y1=1&zoom=3", "unknown parameter 'zoom'"),
    ("/api/neighbours?id=1&k=5000", "k must be an integer from 1 to 1000"),
    ("/api/select?box=0,0,1", "box must be x0,y0,x1,y1"),
    ("/api/select?polygon=0,0,1,1", "polygon must be 3 to 64"),
    ("/api/select?box=0,0,1,1&polygon=0,0,1,1,2,2", "give one of box"),
    ("/api/select?box=0,0,1,1&format=xlsx", "format must be json, parquet, csv or sql"),
    ("/api/select?polygon=" + ",".join(["1.0"] * 1500), "polygon must be at most 4000 characters"),
])
def test_every_bad_parameter_gets_one_clear_400_line(scaled, path, says):
    status, kind, body = get(scaled[0] + path)
    assert status == 400 and kind == "application/json"
    error = json.loads(body)["error"]
    assert says in error and "\n" not in error


def test_a_damaged_tile_file_is_named_in_one_line(scaled):
    base, wh = scaled
    path = wh.embeddings_dir("v1") / "tiles" / "b.parquet"
    table = pq.read_table(path)
    pq.write_table(table, path, write_page_checksum=True, compression="none", use_dictionary=False)  # no longer
    # the partial the merged low zooms name: tiles are summed from the partials, this one included
    with open(path, "r+b") as fh:  # zero the middle of the data pages: the footer still reads
        fh.seek(path.stat().st_size // 3)
        fh.write(b"\0" * 200)
    status, kind, body = get(base + "/api/tile?z=0&x=0&y=0")
    error = json.loads(body)["error"]
    assert status == 500 and error.startswith("warehouse/embeddings/v1/tiles/b.parquet is damaged") and "\n" not in error


def test_a_tiled_map_larger_than_its_sample_reads_no_row_at_start_and_a_bounded_sample_later(tmp_path):
    """A tiled version of 5,000 rows served with 400 points: nothing drawn at load; the legends come
    from the tiles and the files; the sample is 400 rows of a few whole row groups (256 rows each),
    every one a real row; the density image and the label places come from the tiles."""
    from umap_assets import map_explore

    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    write_ordered_version(wh, "v1", {"a": 3000, "b": 2000})
    data = MapData.load(wh, max_points=400)
    assert data.tiled and data.rows == 5000 and data._sample is None, "nothing sampled at load"
    meta = data.meta()
    assert data._sample is None and meta["shown"] == 400
    assert meta["legends"] == {"label": ["0", "1", "2"], "slice": ["a", "b"], "artifact_version": ["v1"]}
    sample = data.sample
    assert len(sample["x"]) == 400 and sample["categories"]["slice"]["legend"] == ["a", "b"]
    rows = _rows(wh)
    by_id = dict(zip(rows.id.astype(str), zip(rows.x.round(4), rows.y.round(4))))
    assert all(by_id[i] == pytest.approx((x, y), abs=1e-4) for i, x, y in zip(sample["id"], sample["x"], sample["y"]))
    assert len(set(sample["id"])) == 400
    png = data.density_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    levels = map_explore.answer("/api/labels", {}, data)["levels"]
    assert sorted({p["name"] for p in levels[0]}) == ["0", "1", "2"]
    assert sum(p["rows"] for p in levels[0]) > 400, "placed from every row's tiles, not from the 400 drawn"
