"""The explorer of ``umap-assets map`` (issue 33), in headless Chromium over a trained digits home.

The home is test_home_state's: trained twice (two promoted versions, both maps on disk), so the page
can compare versions. Every check reads what the page shows (its text, its canvas's pixels, the file
it downloads) against the home's own files, read with DuckDB or pyarrow. Set
``UMAP_ASSETS_SCREENSHOTS=DIR`` to save the README's screenshots there.
"""

import csv
import json
import math
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from umap_assets import map_explore
from umap_assets.home import Layout
from umap_assets.map_index import Region
from umap_assets.map_server import MapData
from umap_assets.warehouse import Warehouse, connect, published_embeddings
from umap_assets_tests.conftest import running_map
from umap_assets_tests.test_home_state import trained  # noqa: F401 - the module's trained home (a fixture)

VIEWPORT = {"width": 1100, "height": 650}
CANVAS_STATS = """() => { const c = document.getElementById('map'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0, ink = 0, red = 0;
  for (let i = 0; i < d.length; i += 4) { h = (h * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) >>> 0;
    if (d[i] + d[i + 1] + d[i + 2] < 700) ink++; if (d[i] > 140 && d[i + 1] < 120 && d[i + 2] < 120) red++; }
  return [h, ink, red]; }"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); CI installs it")
    return path


@pytest.fixture(scope="module")
def served(trained):  # noqa: F811 - the imported fixture
    """The map server over the trained home (read only: nothing here writes to it)."""
    wh = Warehouse.of(Layout.at(trained))
    with running_map(MapData.load(wh, max_points=200_000)) as base:
        yield base, wh


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module. Tests that also need the trained home ask for it first (``page``):
    Dagster's runs then happen before playwright's event loop starts, never inside it."""
    executable = chromium()
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright").sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(served, browser):
    base, _ = served
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(base + "/")
    pg.wait_for_selector("body[data-ready='1']", timeout=20_000)
    settle(pg)
    yield pg
    context.close()
    assert errors == []


def settle(pg) -> None:
    """Wait for the page's next two frames (it draws in requestAnimationFrame)."""
    pg.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def stats(pg) -> tuple[int, int, int]:
    settle(pg)
    return tuple(pg.evaluate(CANVAS_STATS))


def view(pg) -> tuple[float, float, float]:
    """``(zoom, cx, cy)`` as the page writes them under the map."""
    settle(pg)
    text = pg.inner_text("#viewinfo")
    z, cx, cy = re.match(r"zoom ([\d.]+)× · centre (-?[\d.]+), (-?[\d.]+)", text).groups()
    return float(z), float(cx), float(cy)


def label_names(pg) -> list[str]:
    settle(pg)
    return pg.eval_on_selector_all("#labels div", "ds => ds.map(d => d.textContent)")


def canvas_box(pg) -> dict:
    return pg.evaluate("(() => { const r = document.getElementById('map').getBoundingClientRect();"
                       " return {left: r.left, top: r.top, width: r.width, height: r.height}; })()")


def screenshot(pg, name: str) -> None:
    out = os.environ.get("UMAP_ASSETS_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        from PIL import Image  # the map extra's datashader brings Pillow

        pg.mouse.move(0, 0)
        settle(pg)
        path = Path(out) / name
        pg.screenshot(path=str(path))
        Image.open(path).convert("RGB").quantize(colors=96).save(path, optimize=True)  # a small PNG for the README


def world_of(pg, meta: dict, px: float, py: float) -> tuple[float, float]:
    """A canvas pixel in map units, at the fitted view (the page's fit, written again here)."""
    box = canvas_box(pg)
    x0, x1, y0, y1 = meta["image_extent"]
    s = min(box["width"] / (x1 - x0), box["height"] / (y1 - y0))
    return (x0 + x1) / 2 + (px - box["width"] / 2) / s, (y0 + y1) / 2 - (py - box["height"] / 2) / s


def drag(pg, points: list[tuple[float, float]]) -> None:
    box = canvas_box(pg)
    pg.mouse.move(box["left"] + points[0][0], box["top"] + points[0][1])
    pg.mouse.down()
    for x, y in points[1:]:
        pg.mouse.move(box["left"] + x, box["top"] + y, steps=4)
    pg.mouse.up()


def shown_counts(pg) -> dict[str, int]:
    pg.wait_for_selector("#selcounts")
    rows = pg.eval_on_selector_all("#selcounts tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    return {name: int(n) for name, n in rows}


def pasted(sql: str) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """The query the page shows, run as a user pastes it (DuckDB, no catalog): its count per label and its rows."""
    import duckdb

    with duckdb.connect() as con:
        rows = con.execute(f"SELECT slice, CAST(id AS VARCHAR), COALESCE(CAST(label AS VARCHAR), 'unlabelled') "
                           f"FROM ({sql})").fetchall()
    counts: dict[str, int] = {}
    for _, _, label in rows:
        counts[label] = counts.get(label, 0) + 1
    assert len({(s, i) for s, i, _ in rows}) == len(rows), "each row once"
    return counts, {(s, i) for s, i, _ in rows}


def every_row(wh: Warehouse) -> pa.Table:
    """Every row of the served version, with its slice (the file's name)."""
    return pa.concat_tables([pq.read_table(f).append_column("slice", pa.array([f.stem] * pq.read_metadata(f).num_rows))
                             for f in wh.embedding_files(published_embeddings(wh)["current"])], promote_options="default")


def exported(pg) -> set[tuple[str, str]]:
    with pg.expect_download() as info:
        pg.click("#csv")
    with open(info.value.path(), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows, "the export holds the selected rows"
    assert {"slice", "id"} <= set(rows[0]), "every exported row names its slice and id"
    return {(r["slice"], r["id"]) for r in rows}


def meta_of(base: str) -> dict:
    with urllib.request.urlopen(base + "/api/meta", timeout=30) as r:
        return json.loads(r.read())


# ---- the page in the browser ------------------------------------------------------------------


def test_pan_zoom_and_the_zoom_buttons_move_the_map(page):
    z0, cx0, cy0 = view(page)
    before = stats(page)
    assert z0 == 1.0 and before[1] > 1_000, "the fitted map shows its points"
    drag(page, [(400, 300), (500, 340)])
    z, cx, cy = view(page)
    box, meta = canvas_box(page), meta_of(page.url.rstrip("/"))
    s = min(box["width"] / (meta["image_extent"][1] - meta["image_extent"][0]),
            box["height"] / (meta["image_extent"][3] - meta["image_extent"][2]))
    assert (cx, cy) == pytest.approx((cx0 - 100 / s, cy0 + 40 / s), abs=2e-3) and z == 1.0
    assert stats(page)[0] != before[0], "the points moved on the canvas"
    page.mouse.move(box["left"] + 300, box["top"] + 300)
    page.mouse.wheel(0, -400)
    assert view(page)[0] == pytest.approx(math.exp(400 / 500), abs=0.01)
    page.click("#zoomin")
    assert view(page)[0] == pytest.approx(math.exp(400 / 500) * 1.5, abs=0.01)
    page.click("#zoomout")
    page.click("#zoomout")
    assert view(page)[0] == pytest.approx(math.exp(400 / 500) / 1.5, abs=0.01)
    page.click("#fit")
    assert view(page) == (z0, cx0, cy0) and stats(page)[0] == before[0], "fit draws the first picture again"


def test_colour_by_changes_the_points_and_the_legend(page, served):
    _, wh = served
    by_label = stats(page)
    assert page.inner_text("#legend").split() == [str(d) for d in range(10)]
    page.select_option("#colour", "slice")
    assert page.inner_text("#legend").split() == wh.embedded_keys(published_embeddings(wh)["current"])
    by_slice = stats(page)
    page.select_option("#colour", "coverage")
    assert page.inner_text("#legend").startswith("1 like the training rows")
    assert len({by_label[0], by_slice[0], stats(page)[0]}) == 3, "each colouring draws another picture"


def test_find_centres_a_row_lists_its_neighbours_and_hover_names_it(page, served):
    _, wh = served
    with connect(wh) as con:
        x, y, label = con.execute("SELECT x, y, CAST(label AS VARCHAR) FROM embeddings "
                                  "WHERE slice = 'digits_001' AND id = 105").fetchone()
    page.fill("#rowid", "105")
    page.fill("#slice", "digits_001")
    page.click("#search button")
    page.wait_for_selector("#row table")
    assert len(page.query_selector_all("#row table:nth-of-type(2) tr")) == 10
    z, cx, cy = view(page)
    assert z >= 4 and (cx, cy) == pytest.approx((x, y), abs=1e-3), "the row is at the centre"
    box = canvas_box(page)
    page.mouse.move(box["left"] + box["width"] / 2, box["top"] + box["height"] / 2)
    page.wait_for_selector("#tip", state="visible")
    tip = page.inner_text("#tip").splitlines()
    assert "id 105" in tip and "slice digits_001" in tip and f"label {label}" in tip
    assert any(line.startswith("coverage ") for line in tip) and any(line.startswith("moved ") for line in tip)


def test_a_box_selection_counts_what_duckdb_counts_and_exports_those_ids(page, served):
    base, wh = served
    meta = meta_of(base)
    corners = [(250, 180), (520, 420)]
    page.click("#box")
    drag(page, corners)
    counts = shown_counts(page)
    (ax, ay), (bx, by) = (world_of(page, meta, *c) for c in corners)
    sql = page.input_value("#sql")
    numbers = [float(v) for v in re.findall(r"BETWEEN (\S+) AND (\S+)", sql) for v in v]
    assert numbers == pytest.approx([ax, bx, by, ay], rel=1e-9, abs=1e-9), "the query is the box the user drew"
    with connect(wh) as con:
        ours = dict(con.execute("SELECT CAST(label AS VARCHAR), count(*) FROM embeddings "
                                "WHERE x BETWEEN ? AND ? AND y BETWEEN ? AND ? GROUP BY 1", [ax, bx, by, ay]).fetchall())
        ids = {(s, str(i)) for s, i in con.execute("SELECT slice, id FROM embeddings WHERE x BETWEEN ? AND ? "
                                                   "AND y BETWEEN ? AND ?", [ax, bx, by, ay]).fetchall()}
    assert counts == ours and sum(ours.values()) > 20
    assert pasted(sql) == (ours, ids), "the pasted query returns exactly the counted rows"
    assert page.inner_text("#seltotal").startswith(f"{sum(ours.values()):,} rows in the box, over every row")
    assert exported(page) == ids
    screenshot(page, "explore_box.png")


def test_a_lasso_selection_agrees_with_its_query_and_with_every_row(page, served):
    _, wh = served
    path = [(300, 200), (470, 170), (560, 330), (430, 470), (290, 400), (350, 300), (305, 210)]
    page.click("#lasso")
    drag(page, path)
    counts = shown_counts(page)
    sql = page.input_value("#sql")
    # every row of the served map, tested in numpy by map_index's rule against the polygon the page sent
    sent = [float(v) for v in page.evaluate("selection.q.polygon").split(",")]
    assert len(sent) >= 2 * len(path), "the lasso follows the pointer"
    table = every_row(wh)
    hit = Region(polygon=tuple(zip(sent[0::2], sent[1::2]))).contains(table.column("x").to_numpy().astype(float),
                                                                         table.column("y").to_numpy().astype(float))
    rows = {(s, str(i)) for s, i in zip(np.asarray(table.column("slice"))[hit], np.asarray(table.column("id"))[hit])}
    labels = [str(v) for v in np.asarray(table.column("label"), dtype=object)[hit]]
    assert counts == {name: labels.count(name) for name in set(labels)} and hit.sum() == sum(counts.values()) > 20
    assert pasted(sql) == (counts, rows), "the pasted query returns exactly the counted rows"
    assert page.inner_text("#seltotal").startswith(f"{len(rows):,} rows in the lasso, over every row")
    assert exported(page) == rows
    with page.expect_download() as info:
        page.click("#parquet")
    got = pq.read_table(info.value.path(), columns=["slice", "id"])
    assert got.num_rows == len(rows) and {(s, str(i)) for s, i in zip(*got.to_pydict().values())} == rows
    assert int(page.evaluate("document.getElementById('map').classList.contains('select') ? 1 : 0")) == 1
    screenshot(page, "explore_lasso.png")


def test_labels_sit_where_their_rows_are_and_more_appear_deeper(page, served):
    base, _ = served
    names = label_names(page)
    assert sorted(names) == [str(d) for d in range(10)], "each label once on the whole map"
    screenshot(page, "explore.png")
    with urllib.request.urlopen(base + "/api/labels", timeout=30) as r:
        levels = json.loads(r.read())["levels"]
    assert [len(level) for level in levels] == sorted(len(level) for level in levels) and len(levels[-1]) > len(levels[0])
    for _ in range(5):
        page.click("#zoomin")  # 7.6x: level 3
    deeper = label_names(page)
    assert view(page)[0] == pytest.approx(1.5 ** 5, abs=0.01)
    in_view_at_0 = page.evaluate(
        "(levels) => levels[0].filter(p => { const [sx, sy] = toScreen(p.x, p.y);"
        " return sx >= 0 && sy >= 0 && sx <= canvas.width && sy <= canvas.height; }).length", levels)
    assert len(deeper) > in_view_at_0, (deeper, in_view_at_0)
    page.uncheck("#showlabels")
    assert label_names(page) == []


def test_compare_versions_switches_maps_and_shows_each_rows_displacement(page, served):
    _, wh = served
    current, previous = published_embeddings(wh)["current"], published_embeddings(wh)["history"][-2]

    def frame(version):
        return pa.concat_tables([pq.read_table(f, columns=["id", "x", "y"]).append_column(
            "slice", pa.array([f.stem] * pq.read_metadata(f).num_rows)) for f in wh.embedding_files(version)]).to_pandas()

    both = frame(current).merge(frame(previous), on=["slice", "id"], suffixes=("", "_prev"))
    moved = np.hypot(both.x - both.x_prev, both.y - both.y_prev)
    shown = dict(page.eval_on_selector_all("#cmptable tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"))
    assert shown["previous"] == previous and int(shown["rows in both"]) == len(both)
    assert float(shown["median displacement"]) == pytest.approx(np.median(moved), abs=2e-4)
    served_picture = stats(page)
    page.select_option("#version", "previous")
    settle(page)
    assert "previous version " + previous in page.inner_text("#viewinfo")
    assert stats(page)[0] != served_picture[0] and label_names(page) == []
    page.select_option("#version", "served")
    plain_red = stats(page)[2]
    page.check("#moves")
    page.select_option("#colour", "displacement")
    assert stats(page)[2] > plain_red + 500, "a red line from each row's previous place"
    assert page.inner_text("#legend").startswith("light: not moved")
    screenshot(page, "explore_compare.png")


# ---- map_explore without a browser ----------------------------------------------------------


def test_label_placements_put_each_name_on_its_densest_place_and_add_more_deeper():
    rng = np.random.default_rng(0)
    centres = {0: [(0, 0), (8, 8)], 1: [(8, 0)], 2: [(0, 8)]}  # label 0 has two clusters, the first fuller
    xs, ys, codes = [], [], []
    for code, places in centres.items():
        for k, (cx, cy) in enumerate(places):
            n = 300 if k == 0 else 150
            xy = rng.normal(size=(n, 2)) * 0.4 + (cx, cy)
            xs += list(xy[:, 0]); ys += list(xy[:, 1]); codes += [code] * n
    xs += [4.0] * 50; ys += [4.0] * 50; codes += [3] * 50  # unlabelled rows, never written
    x, y, codes = np.array(xs), np.array(ys), np.array(codes)
    levels = map_explore.label_placements(x, y, codes, ["a", "b", "c", "unlabelled"], (-2, 10, -2, 10))
    first = {p.name: (p.x, p.y) for p in levels[0]}
    assert sorted(first) == ["a", "b", "c"] and len(levels[0]) == 3
    assert first["a"] == pytest.approx((0, 0), abs=0.5) and first["b"] == pytest.approx((8, 0), abs=0.5)
    assert any(p.name == "a" and abs(p.x - 8) < 0.8 and abs(p.y - 8) < 0.8 for p in levels[1]), "a's second cluster"
    sizes = [len(level) for level in levels]
    assert sizes == sorted(sizes) and all(set(levels[i]) <= set(levels[i + 1]) for i in range(len(levels) - 1))


def test_displacement_joins_rows_by_slice_and_id(tmp_path):
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "x": [0.0, 1.0, 2.0], "y": [0.0, 0.0, 0.0]}), path)
    px, py, moved = map_explore.displacement(["3", "1", "9"], ["s", "s", "s"], np.array([2.0, 3.0, 0.0]),
                                             np.array([0.0, 4.0, 0.0]), [path])
    assert px[:2].tolist() == [2.0, 0.0] and moved[:2].tolist() == [0.0, 5.0] and np.isnan(moved[2])


def test_a_malformed_selection_is_one_line_and_a_400(tmp_path):
    """The cases of /api/select that test_map_scale_server's table of bad parameters leaves out."""
    from umap_assets_tests.test_map_server import write_version

    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    write_version(wh, "v1", {"a": 50})
    with running_map(MapData.load(wh, max_points=100)) as base:
        for query, words in [("", "give one of"), ("box=1,2,3,nan", "finite"), ("box=a,b,c,d", "comma-separated"),
                             ("box=1,1,0,0", "x0 <= x1"), ("polygon=" + ",".join(["1"] * 130), "3 to 64"),
                             ("box=0,0,1,1&x=1", "unknown"), ("box=0,0,1,1&box=0,0,1,1", "repeated"),
                             ("lasso=0,0,1,1,1,0", "unknown")]:
            try:
                urllib.request.urlopen(f"{base}/api/select?{query}", timeout=30)
                raise AssertionError(query)
            except urllib.error.HTTPError as err:
                assert err.code == 400 and words in json.loads(err.read())["error"], query
        for gone in ("/api/selection?box=0,0,1,1",):  # one selection: the explorer's own route is gone
            try:
                urllib.request.urlopen(base + gone, timeout=30)
                raise AssertionError(gone)
            except urllib.error.HTTPError as err:
                assert err.code == 404, gone


def test_a_sampled_map_selects_every_row_and_a_lone_version_has_nothing_to_compare(tmp_path):
    """On a map larger than its sample /api/select counts every row, not the drawn ones; with one
    version on disk, /api/compare answers that there is no previous one."""
    from umap_assets_tests.test_map_server import write_version

    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    write_version(wh, "v1", {"a": 600, "b": 500})
    sampled = MapData.load(wh, max_points=300)
    with running_map(sampled) as base:
        with urllib.request.urlopen(base + "/api/select?box=-1,-1,6,6", timeout=30) as r:
            got = json.loads(r.read())
        with urllib.request.urlopen(base + "/api/compare", timeout=30) as r:
            compared = json.loads(r.read())
    table = pa.concat_tables([pq.read_table(f, columns=["x", "y"]) for f in wh.embedding_files("v1")])
    every = Region(box=(-1.0, -1.0, 6.0, 6.0)).contains(table.column("x").to_numpy(), table.column("y").to_numpy()).sum()
    drawn = Region(box=(-1.0, -1.0, 6.0, 6.0)).contains(np.asarray(sampled.sample["x"]), np.asarray(sampled.sample["y"])).sum()
    assert got["count"] == every == sum(n for _, n in got["per_label"]) > drawn > 0
    assert compared["previous"] is None and map_explore.answer("/api/compare", {}, sampled)["previous"] is None


def test_markup_in_labels_and_ids_stays_text_in_the_explorers_panels(tmp_path, browser):
    """The labels drawn on the map, the tooltip and the selection's counts insert every value as text,
    with the page's CSP bypassed (as test_map_server's test of the legend and the row panel)."""
    from umap_assets_tests.test_map_server import HOSTILE, write_hostile_version

    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    write_hostile_version(wh)
    with running_map(MapData.load(wh, max_points=400)) as base:
        context = browser.new_context(viewport=VIEWPORT, bypass_csp=True)
        pg = context.new_page()
        pg.goto(f"{base}/")
        pg.wait_for_selector("body[data-ready='1']", timeout=20_000)
        placed = label_names(pg)
        pg.click("#box")
        box = canvas_box(pg)
        drag(pg, [(2, 2), (box["width"] - 4, box["height"] - 4)])
        pg.wait_for_selector("#selcounts")
        selection = pg.inner_text("#selection")
        pg.click("#pan")
        found = pg.evaluate("(() => { for (let i = 0; i < pts.x.length; i++) { const [sx, sy] = toScreen(pts.x[i], pts.y[i]);"
                            " if (sx > 5 && sy > 5 && sx < canvas.width - 5 && sy < canvas.height - 5) return [sx, sy, pts.id[i]]; } })()")
        pg.mouse.move(box["left"] + found[0], box["top"] + found[1])
        pg.wait_for_selector("#tip", state="visible")
        tip = pg.inner_text("#tip")
        made = pg.evaluate("['img', 'script'].map(t => document.querySelectorAll('#labels ' + t + ', #selection ' + t"
                           " + ', #tip ' + t + ', #sql ' + t).length)")
        pwned = pg.evaluate("window.__pwned")
        context.close()
    assert sorted(placed) == sorted(HOSTILE), "each label's markup written as its name"
    assert all(value in selection for value in HOSTILE) and "30 rows in the box" in selection
    assert f"id {found[2]}" in tip and made == [0, 0] and pwned is None


def test_an_unlabelled_map_names_its_clusters_by_a_text_column_and_hover_shows_carried_columns(tmp_path, browser):
    """A map without labels whose rows carry a word, a title and a URL (``SliceContract.carry``): the page
    names its clusters by the first text column, lists them, shows the carried columns on hover, and
    the row panel links the URL (http(s) only, ``rel=noopener``)."""
    from umap_assets_tests.test_map_clusters import WORDS, nearest_word, write_worded_version

    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    write_worded_version(wh)
    with running_map(MapData.load(wh, max_points=500)) as base:
        context = browser.new_context(viewport=VIEWPORT)
        pg = context.new_page()
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(f"{base}/")
        pg.wait_for_selector("body[data-ready='1']", timeout=30_000)
        names = label_names(pg)
        placed = pg.evaluate("labels[0].map(p => [p.name, p.x, p.y])")
        listed = pg.eval_on_selector_all("#clustertable tr", "rows => rows.map(r => r.cells[0].textContent)")
        chosen = pg.input_value("#clustercol")
        box = canvas_box(pg)
        found = pg.evaluate("(() => { for (let i = 0; i < pts.x.length; i++) { const [sx, sy] = toScreen(pts.x[i], pts.y[i]);"
                            " if (sx > 5 && sy > 5 && sx < canvas.width - 5 && sy < canvas.height - 5) return [sx, sy, pts.id[i]]; } })()")
        pg.mouse.move(box["left"] + found[0], box["top"] + found[1])
        pg.wait_for_selector("#tip", state="visible")
        tip = pg.inner_text("#tip").splitlines()
        screenshot(pg, "explore_clusters.png")
        pg.mouse.click(box["left"] + found[0], box["top"] + found[1])
        pg.wait_for_selector("#rowtable a")
        link = pg.eval_on_selector("#rowtable a", "a => [a.getAttribute('href'), a.rel, a.textContent]")
        context.close()
    assert chosen == "kind" and sorted(names) == sorted(WORDS) and listed[1:] and sorted(listed[1:]) == sorted(WORDS)
    assert all(nearest_word(x, y) == name for name, x, y in placed), "each name sits on its cluster"
    row_id = int(found[2])
    row = pq.read_table(wh.embeddings_path("v1", "a" if row_id < 2000 else "b")).to_pandas().set_index("id").loc[row_id]
    assert f"title {row['title']}" in tip and f"url https://example.org/{row_id}" in tip and f"kind {row['kind']}" in tip
    assert link == [f"https://example.org/{row_id}", "noopener noreferrer", f"https://example.org/{row_id}"]
    assert errors == []


def test_the_digits_map_without_its_labels_names_each_cluster_by_its_rows_digit_word(trained, tmp_path):  # noqa: F811
    """The trained digits home's served map, its labels dropped and each row given its digit's word
    (``kind``), written as an unlabelled tiled version: every cluster found is named by the word most
    of its rows carry (counted here over every row), and at least 7 words name a cluster."""
    from umap_assets import map_clusters
    from umap_assets_tests.test_map_clusters import WORDS, write_tiled_version

    wh = Warehouse.of(Layout.at(trained))
    tables = {}
    for f in wh.embedding_files(published_embeddings(wh)["current"]):
        table = pq.read_table(f)
        words = [WORDS[int(v)] for v in table.column("label").to_pylist()]
        tables[f.stem] = table.drop_columns(["label"]).append_column("kind", pa.array(words))
    out = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    write_tiled_version(out, "v1", tables)
    data = MapData.load(out, max_points=500)
    assert data.tiled and data.rows == 1797 > 500 and "label" not in data.meta()["categories"]
    found = map_clusters.cluster_labels(data, "kind", "values")
    grid = map_clusters.find_clusters(*map_clusters.weighted_points(data), data.extent)
    every = pa.concat_tables(tables.values())
    cluster = grid.cluster_of(every.column("x").to_numpy(), every.column("y").to_numpy())
    words = np.asarray(every.column("kind").to_pylist())
    counts = [{w: int(((cluster == k) & (words == w)).sum()) for w in WORDS} for k in range(len(found.clusters))]
    named = [c.name.split(" · ")[0] for c in found.clusters]
    assert all(count[name] == max(count.values()) > 0 for name, count in zip(named, counts)), (named, counts)
    assert len(set(named)) >= 7, named  # this short-trained map runs 1, 3, 8 and 9 into one dense region
    assert {p["name"] if isinstance(p, dict) else p.name for p in found.levels[0]} == {c.name for c in found.clusters}
