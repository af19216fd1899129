"""Clusters found on an unlabelled map and named by a carried text column (issue 33, ``/api/clusters``).

The map is digits-like: ten clusters, one per digit, its rows carrying the digit's word (``kind``), a
title made of the word and the row's id, and a URL; no label. It is written as the embed job leaves a
version (each slice in curve order with its id index and partial tiles), so the tiled path (names
from the tiles' bins and a bounded read of rows per cluster) and the sampled path are both real.
"""

import json
import urllib.error
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from umap_assets import map_clusters
from umap_assets.atomic import temp_path_for
from umap_assets.map_explore import BadQuery, cluster_parameters
from umap_assets.map_server import MapData
from umap_assets.spatial import version_frame, write_ordered
from umap_assets.tiles import merge_low_zooms, write_partial_tiles
from umap_assets.warehouse import Warehouse, publish_embeddings, record_slice
from umap_assets_tests.conftest import running_map

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CENTRES = {w: (10 * np.cos(2 * np.pi * k / 10), 10 * np.sin(2 * np.pi * k / 10)) for k, w in enumerate(WORDS)}


def write_tiled_version(wh: Warehouse, version: str, tables: dict[str, pa.Table]) -> None:
    """A version as the embed job leaves it: each slice's rows in curve order with its id index and
    partial tiles, then published."""
    for key, table in tables.items():
        destination = wh.embeddings_path(version, key)
        destination.parent.mkdir(parents=True, exist_ok=True)
        staged = temp_path_for(destination)
        pq.write_table(table, staged)
        frame = version_frame(destination.parent, first_file=staged)
        write_ordered(staged, destination, frame, row_group_rows=256)
        staged.unlink()
        write_partial_tiles(destination, frame, max_zoom=3)
        record_slice(wh, key, {"rows": table.num_rows, "dim": 4, "bytes": 1, "path": f"warehouse/raw_slices/{key}.parquet",
                               "source": f"incoming/{key}.parquet"})
        merge_low_zooms(destination.parent)
    assert publish_embeddings(wh, version, list(tables), keep=2)


def write_worded_version(wh: Warehouse, version: str = "v1", sizes: dict[str, int] | None = None, seed: int = 0) -> None:
    """Slices of an unlabelled map: rows around each word's centre, 10% of their texts another word's."""
    rng = np.random.default_rng(seed)
    first, tables = 0, {}
    for key, n in (sizes or {"a": 2000, "b": 1500}).items():
        digit = rng.integers(0, 10, n)
        xy = np.array([CENTRES[WORDS[d]] for d in digit]) + rng.normal(scale=0.7, size=(n, 2))
        said = np.where(rng.random(n) < 0.1, rng.integers(0, 10, n), digit)  # the noise a real column has
        ids = np.arange(first, first + n)
        tables[key] = pa.table({"id": ids, "x": xy[:, 0].astype(np.float32), "y": xy[:, 1].astype(np.float32),
                                "kind": [WORDS[d] for d in said], "title": [f"the {WORDS[d]} of row {i}" for d, i in zip(said, ids)],
                                "url": [f"https://example.org/{i}" for i in ids], "artifact_version": [version] * n})
        first += n
    write_tiled_version(wh, version, tables)


@pytest.fixture
def worded(tmp_path):
    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "warehouse.duckdb")
    write_worded_version(wh)
    return wh


def nearest_word(x: float, y: float) -> str:
    return min(WORDS, key=lambda w: np.hypot(CENTRES[w][0] - x, CENTRES[w][1] - y))


@pytest.mark.parametrize("max_points, column, mode", [(500, "title", "terms"), (5000, "kind", "values")])
def test_each_cluster_is_found_and_named_by_the_words_of_its_rows(worded, max_points, column, mode):
    """From the tiles' bins and rows read per cluster (a map larger than its sample), and from the sample."""
    data = MapData.load(worded, max_points=max_points)
    assert data.tiled and (data.rows > max_points) == (max_points == 500)
    found = map_clusters.cluster_labels(data, column, mode)
    names = [c.name for c in found.clusters]
    assert sorted(names) == sorted(WORDS), names
    assert all(c.read > 100 for c in found.clusters) and sum(c.rows for c in found.clusters) > 0.9 * data.rows
    first = {p.name: (p.x, p.y) for p in found.levels[0]}
    assert sorted(first) == sorted(WORDS) and all(nearest_word(x, y) == name for name, (x, y) in first.items())
    sizes = [len(level) for level in found.levels]
    assert sizes == sorted(sizes) and all(nearest_word(p.x, p.y) == p.name for level in found.levels for p in level)


def test_terms_are_the_words_a_cluster_has_and_the_others_lack():
    tops = map_clusters.top_terms([["the red fox 1", "the red hen 2", "a red fox"], ["the blue sea 7", "blue sky"]])
    assert tops[0][0][0] == "red" and tops[1][0][0] == "blue" and all(t not in ("1", "2", "7", "a") for top in tops for t, _ in top)
    assert map_clusters.top_values(["b", "a", "a", " b ", "c"]) == [("a", 2.0), ("b", 2.0)]
    assert map_clusters.top_terms([["1 2"], ["a 7"]]) == [[], []], "numbers and one-letter words name nothing"


def test_the_clusters_route_answers_and_refuses_bad_parameters_in_one_line(worded):
    data = MapData.load(worded, max_points=500)
    assert data.meta()["text_columns"] == ["kind", "title", "url"] and data.meta()["carried"] == ["kind", "title", "url"]
    with running_map(data) as root:
        base = root + "/api/clusters?"
        with urllib.request.urlopen(base + "column=kind&mode=values&clusters=12", timeout=60) as r:
            body = json.loads(r.read())
        for query, words in [("", "carried text columns ['kind', 'title', 'url']"), ("column=nope", "not 'nope'"),
                             ("column=kind&mode=lda", "mode must be one of ['terms', 'values']"),
                             ("column=kind&clusters=1", "from 2 to 50"), ("column=kind&clusters=99999", "from 2 to 50"),
                             ("column=kind&k=3", "unknown parameter 'k'"), ("column=kind&column=title", "repeated")]:
            try:
                urllib.request.urlopen(base + query, timeout=30)
                raise AssertionError(query)
            except urllib.error.HTTPError as err:
                message = json.loads(err.read())["error"]
                assert err.code == 400 and words in message and "\n" not in message, (query, message)
    assert body["version"] == "v1" and body["column"] == "kind" and sorted(c["name"] for c in body["clusters"]) == sorted(WORDS)
    assert {p["name"] for p in body["levels"][0]} == set(WORDS)
    with pytest.raises(BadQuery, match="carried text columns"):
        cluster_parameters({"column": ["x"]}, MapData.load(worded, max_points=500))
