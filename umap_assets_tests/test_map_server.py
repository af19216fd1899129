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
from umap_assets_tests.conftest import running_map


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
    with running_map(MapData.load(wh, max_points=400)) as base:
        yield base, wh


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


def test_the_map_colours_by_coverage_when_the_embeddings_carry_it(tmp_path):
    """Each row's coverage figure (written by ``embed``) becomes a colour: binned from like the training rows to far beyond."""
    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    wh.embeddings_dir("v1").mkdir(parents=True, exist_ok=True)
    coverage = np.array([0.9, 1.1, 1.3, 1.7, 2.5, 9.0] * 50, np.float32)
    pq.write_table(pa.table({"id": np.arange(300), "x": np.arange(300, dtype=np.float32), "y": coverage,
                             "coverage": coverage, "artifact_version": ["v1"] * 300}), wh.embeddings_path("v1", "a"))
    record_slice(wh, "a", {"rows": 300, "dim": 4, "bytes": 1, "path": "warehouse/raw_slices/a.parquet", "source": "incoming/a.parquet"})
    assert publish_embeddings(wh, "v1", ["a"], keep=2)
    data = MapData.load(wh, max_points=1_000)
    assert data.meta()["categories"] == ["slice", "artifact_version", "coverage"]
    legend = data.meta()["legends"]["coverage"]
    assert [name[0] for name in legend] == ["1", "2", "3", "4"]
    codes = np.array(data.sample["categories"]["coverage"]["codes"])
    by_value = dict(zip(np.round(data.sample["y"], 1), codes))
    assert [by_value[v] for v in (0.9, 1.1, 1.3, 1.7, 2.5, 9.0)] == [0, 0, 1, 2, 3, 3]


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


# --- hostile input: parameters, Host headers, tokens, and data that carries markup ------------------

HOSTILE = ['<img src=x onerror="window.__pwned=1">', "<script>window.__pwned=2</script>", "a&amp;b </td><b>bold</b>"]
HOSTILE_URL = "javascript:window.__pwned=3"  # a carried URL column's value: text, never a link


def write_hostile_version(wh: Warehouse) -> None:
    """One slice whose string ids and labels carry markup and script."""
    wh.embeddings_dir("v1").mkdir(parents=True, exist_ok=True)
    n = 30
    xy = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    ids = [HOSTILE[i % 3] + str(i) for i in range(n)]
    urls = [HOSTILE_URL if i % 3 == 0 else f"https://example.org/{i}" for i in range(n)]  # carried columns too
    pq.write_table(pa.table({"id": ids, "x": xy[:, 0], "y": xy[:, 1], "label": [HOSTILE[i % 3] for i in range(n)],
                             "note": [HOSTILE[(i + 1) % 3] for i in range(n)], "url": urls,
                             "artifact_version": ["v1"] * n}), wh.embeddings_path("v1", "evil"))
    record_slice(wh, "evil", {"rows": n, "dim": 4, "bytes": 1, "path": "warehouse/raw_slices/evil.parquet",
                              "source": "incoming/evil.parquet"})
    assert publish_embeddings(wh, "v1", ["evil"], keep=2)


def start(wh: Warehouse, **kwargs):
    server = make_server(MapData.load(wh, max_points=400), port=0, **kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def request(port: int, path: str, host: str | None = None) -> tuple[int, dict | bytes]:
    import http.client

    con = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    con.request("GET", path, headers={"Host": host or f"127.0.0.1:{port}"})
    r = con.getresponse()
    body = r.read()
    con.close()
    return r.status, json.loads(body) if r.getheader("Content-Type") == "application/json" else body


def test_every_malformed_request_gets_a_json_answer_and_no_traceback(served, capfd):
    base, _ = served
    port = int(base.rsplit(":", 1)[1])
    for query in ["k=abc", "k=-1", "k=1e20", "k=1001", "k=0", "k=", "k=%00", "", "id=", "id=7&id=8", "id=7&bogus=1",
                  "id=" + "9" * 2000]:
        status, body = request(port, "/api/find?" + ("id=7&" if not query.startswith("id") and query else "") + query)
        assert status == 400 and isinstance(body, dict) and body["error"], (query, status, body)
    status, body = request(port, "/api/find?id=7&slice=b&k=1000")
    assert status == 200 and len(body["neighbours"]) == 1000
    status, body = request(port, "/api/find?id=7&k=1000000000")
    assert status == 400 and "from 1 to 1000" in body["error"]
    assert capfd.readouterr().err == ""


def test_an_internal_error_is_one_json_line_not_a_traceback(tmp_path, capfd, monkeypatch):
    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    write_version(wh, "v1", {"a": 50})
    server, port = start(wh)
    monkeypatch.setattr(MapData, "find", lambda *a: 1 / 0)
    try:
        assert request(port, "/api/find?id=1") == (500, {"error": "internal error (ZeroDivisionError)"})
    finally:
        server.shutdown()
        server.server_close()
    assert capfd.readouterr().err == ""


def test_only_loopback_host_headers_are_answered(served):
    base, _ = served
    port = int(base.rsplit(":", 1)[1])
    for host in [f"127.0.0.1:{port}", f"localhost:{port}"]:
        assert request(port, "/api/meta", host)[0] == 200
    for host in ["evil.example", f"evil.example:{port}", "127.0.0.1", f"localhost:{port + 1}", f"rebind.me:{port}"]:
        status, body = request(port, "/api/meta", host)
        assert status == 403 and "Host" in body["error"], host


def test_a_token_guards_every_path(tmp_path):
    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    write_version(wh, "v1", {"a": 50})
    server, port = start(wh, token="s3cret-token")
    try:
        for path in ["/", "/api/meta", "/api/points", "/api/find?id=1", "/density.png"]:
            sep = "&" if "?" in path else "?"
            assert request(port, path)[0] == 403
            assert request(port, path + sep + "token=wrong-token")[0] == 403
            assert request(port, path + sep + "token=s3cret-token")[0] == 200, path
    finally:
        server.shutdown()
        server.server_close()


def test_serving_off_loopback_needs_public_and_then_a_token(tmp_path):
    from umap_assets.map_server import serve

    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    write_version(wh, "v1", {"a": 50})
    with pytest.raises(MapUnavailable, match="not a loopback address.*--public"):
        serve(wh, host="0.0.0.0", port=0, open_browser=False)
    said = []

    def say(line):
        said.append(line)
        if "Ctrl-C" in line:
            raise KeyboardInterrupt  # stop before serving: serve closes the server

    serve(wh, host="0.0.0.0", port=0, open_browser=False, public=True, say=say)
    assert said[0].startswith("warning: the map is served on 0.0.0.0, open to the network")
    assert "/?token=" in said[1] and len(said[1].split("token=")[1].split()[0]) >= 20
    said.clear()
    serve(wh, host="0.0.0.0", port=0, open_browser=False, public=True, token="chosen-token", say=say)
    assert "/?token=chosen-token " in said[1]


def test_the_page_shows_markup_in_the_data_as_text_in_a_real_browser(tmp_path):
    """Headless Chromium with the page's CSP bypassed: the page itself must insert every value as text.

    (With the page as it was, innerHTML, the legend read 'a&b bold' and the payloads became elements.)
    """
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); CI installs it")
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright").sync_playwright
    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    write_hostile_version(wh)
    server, port = start(wh, token="page-token")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            context = browser.new_context(bypass_csp=True)
            page = context.new_page()
            requests, dialogs = [], []
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"http://127.0.0.1:{port}/?token=page-token")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('model')")
            page.select_option("#colour", "label")
            legend = page.inner_text("#legend")
            page.fill("#rowid", HOSTILE[0] + "0")
            page.click("#search button")
            page.wait_for_selector("#row table")
            row = page.inner_text("#row")
            counts = page.evaluate("['img', 'script', 'b'].map(t => document.querySelectorAll("
                                   "'#legend ' + t + ', #row ' + t + ', #colour ' + t).length)")
            links = page.eval_on_selector_all("#row a", "as => as.map(a => a.getAttribute('href'))")
            pwned = page.evaluate("window.__pwned")
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    for value in HOSTILE:
        assert value in legend, (value, legend)
    assert HOSTILE[0] + "0" in row and HOSTILE[1] in row and HOSTILE[2] in row
    assert HOSTILE_URL in row and links == [], "a carried javascript: URL is shown as text, never linked"
    assert counts == [0, 0, 0] and pwned is None and dialogs == []
    assert not [u for u in requests if u.split("?")[0].endswith("/x")], "the <img src=x> must never load"


def test_the_page_has_no_innerhtml_and_a_strict_content_security_policy(served):
    from umap_assets.map_server import page

    html = page().decode()
    for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"]:
        assert sink not in html, sink
    base, _ = served
    with urllib.request.urlopen(base + "/", timeout=30) as r:
        policy = r.headers["Content-Security-Policy"]
    assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]


# --- a new model published while the map is served (issue 30) ----------------------------------------


def _coords(wh: Warehouse, version: str, key: str, row_id: int) -> tuple[float, float]:
    table = pq.read_table(wh.embeddings_path(version, key)).to_pandas().set_index("id")
    return float(table.loc[row_id, "x"]), float(table.loc[row_id, "y"])


def test_the_server_reloads_a_new_published_map_and_answers_each_request_from_one_model(tmp_path):
    """While ``umap-assets map`` serves, a retraining publishes a new map: the next requests see it
    whole (meta, points and /api/find name the same model, and find's coordinates are that model's);
    a server that has not looked again yet still answers every request from the model it shows."""
    from umap_assets.map_server import MapSource

    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    write_version(wh, "v1", {"a": 600, "b": 500})
    watching = make_server(MapSource(MapData.load(wh, max_points=400), check_every_s=0.0), port=0)
    sleeping = make_server(MapSource(MapData.load(wh, max_points=400), check_every_s=3600.0), port=0)
    for server in (watching, sleeping):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    urls = [f"http://127.0.0.1:{s.server_address[1]}" for s in (watching, sleeping)]
    try:
        assert [json.loads(get(u + "/api/meta")[2])["version"] for u in urls] == ["v1", "v1"]
        write_version(wh, "v2", {"a": 600, "b": 500}, seed=1)  # publishes v2: the DuckDB view now reads it

        new, old = urls
        assert json.loads(get(new + "/api/meta")[2])["version"] == "v2"
        assert json.loads(get(new + "/api/points")[2])["version"] == "v2"
        found = json.loads(get(new + "/api/find?id=7&slice=a")[2])
        assert found["version"] == "v2" and (found["x"], found["y"]) == pytest.approx(_coords(wh, "v2", "a", 7))

        assert json.loads(get(old + "/api/meta")[2])["version"] == "v1"
        found = json.loads(get(old + "/api/find?id=7&slice=a")[2])
        assert found["version"] == "v1" and (found["x"], found["y"]) == pytest.approx(_coords(wh, "v1", "a", 7))
        assert _coords(wh, "v1", "a", 7) != pytest.approx(_coords(wh, "v2", "a", 7))
    finally:
        for server in (watching, sleeping):
            server.shutdown()
            server.server_close()


def test_a_damaged_file_is_named_and_the_served_map_stays(tmp_path):
    """DuckDB reads a page whose bytes were zeroed as if it were sound; the map checks every page's
    checksum first: a damaged map is never loaded, and a server keeps the one it had, saying why."""
    import duckdb

    from umap_assets.map_server import MapSource

    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    write_version(wh, "v1", {"a": 600})
    source = MapSource(MapData.load(wh, max_points=400), check_every_s=0.0)
    wh.embeddings_dir("v2").mkdir(parents=True)
    table = pq.read_table(wh.embeddings_path("v1", "a"))
    path = wh.embeddings_path("v2", "a")
    pq.write_table(table.set_column(4, "artifact_version", pa.array(["v2"] * 600)), path, write_page_checksum=True,
                   compression="none", use_dictionary=False)
    assert publish_embeddings(wh, "v2", ["a"], keep=2)
    with open(path, "r+b") as fh:
        fh.seek(path.stat().st_size // 3)
        fh.write(b"\0" * 1_000)
    with duckdb.connect() as con:
        assert con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()[0] == 600
    with pytest.raises(MapUnavailable, match=r"^warehouse/embeddings/v2/a\.parquet is damaged: a page no longer "
                                             r"matches its checksum.*`umap-assets run` embeds it again$"):
        MapData.load(wh, max_points=400)
    assert source.current().version == "v1"
    assert "warehouse/embeddings/v2/a.parquet is damaged" in source.problem


def test_rows_without_a_label_show_as_unlabelled(tmp_path):
    """A null label, or a slice without a label column among labelled ones, is ``unlabelled`` in the
    legend and in what ``/api/find`` answers, never ``None``."""
    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    wh.embeddings_dir("v1").mkdir(parents=True, exist_ok=True)
    xy = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    labelled = pa.table({"id": np.arange(100), "x": xy[:100, 0], "y": xy[:100, 1],
                         "label": pa.array([None if i % 4 == 0 else i % 2 for i in range(100)], pa.int64()),
                         "artifact_version": ["v1"] * 100})
    pq.write_table(labelled, wh.embeddings_path("v1", "a"))
    pq.write_table(pa.table({"id": np.arange(100, 200), "x": xy[100:, 0], "y": xy[100:, 1],
                             "artifact_version": ["v1"] * 100}), wh.embeddings_path("v1", "b"))
    for key in ("a", "b"):
        record_slice(wh, key, {"rows": 100, "dim": 4, "bytes": 1, "path": f"warehouse/raw_slices/{key}.parquet",
                               "source": f"incoming/{key}.parquet"})
    assert publish_embeddings(wh, "v1", ["a", "b"], keep=2)
    data = MapData.load(wh, max_points=1_000)
    legend = data.meta()["legends"]["label"]
    assert legend == ["0", "1", "unlabelled"]
    codes = np.array(data.sample["categories"]["label"]["codes"])
    assert (codes == legend.index("unlabelled")).sum() == 25 + 100
    assert data.find("0", "a", 1)["label"] == "unlabelled" and data.find("150", "b", 1)["label"] == "unlabelled"
    assert data.find("1", "a", 1)["label"] == "1"
