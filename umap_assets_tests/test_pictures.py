"""Pictures of maps (umap_assets.pictures): streamed density of a slice's map, at any size."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from umap_assets.pictures import density_grid, density_png, map_extent, scatter_png

PNG = b"\x89PNG\r\n\x1a\n"


def _write(path, x, y, **kwargs):
    pq.write_table(pa.table({"id": np.arange(len(x)), "x": x.astype(np.float32), "y": y.astype(np.float32)}),
                   path, row_group_size=1000, **kwargs)
    return path


def test_density_counts_every_row_in_its_cell_and_reads_the_extent_from_statistics(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-3, 5, 3500), rng.uniform(10, 12, 3500)
    x[:100], y[:100] = -3.0, 12.0  # a dense corner: least x, greatest y
    with_stats = _write(tmp_path / "a.parquet", x, y)
    without = _write(tmp_path / "b.parquet", x, y, write_statistics=False)
    expected = (np.float32(x).min(), np.float32(x).max(), np.float32(y).min(), np.float32(y).max())
    assert np.allclose(map_extent(with_stats), expected) and np.allclose(map_extent(without), expected)
    counts, extent = density_grid(with_stats, bins=10)
    assert counts.shape == (10, 10) and counts.sum() == 3500
    assert counts[0, -1] == counts.max() and counts[0, -1] >= 100  # the corner: x on the first axis
    assert density_png(with_stats, title="a").startswith(PNG)


def test_an_empty_map_has_no_picture_and_the_scatter_draws_side_by_side(tmp_path):
    empty = _write(tmp_path / "empty.parquet", np.empty(0), np.empty(0))
    assert map_extent(empty) is None and density_grid(empty) is None and density_png(empty) is None
    E = np.random.default_rng(1).normal(size=(50, 2))
    assert scatter_png({"a": E, "b": E + 1}, np.arange(50) % 3).startswith(PNG)


def test_scatter_colours_rows_without_a_label_as_unlabelled():
    """A validation row without a label (None) is drawn, coloured as one more label, never refused."""
    E = np.random.default_rng(0).normal(size=(60, 2))
    labels = np.array(["a", None, "b"] * 20, dtype=object)
    assert scatter_png({"a": E}, labels).startswith(PNG)
