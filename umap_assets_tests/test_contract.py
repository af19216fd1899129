"""The canonical form of a slice: float32 bytes, row groups that readers split evenly, the writers' encodings."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from umap_assets.contract import (SliceError, SliceSpec, canonical_batch, check_schema, features_list, features_matrix,
                                  iter_chunks, iter_validated_batches, parquet_reader, vector_field, write_options)
from umap_assets.demo_data import write_slice
from umap_assets.warehouse import regrouped, write_canonical_slice


def _rows(n, d=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_the_canonical_copy_holds_the_same_floats_as_bytes_and_reads_them_without_a_copy(tmp_path):
    X = _rows(1000)
    src = write_slice(tmp_path / "user.parquet", np.arange(1000), X, np.arange(1000) % 3)
    dest = tmp_path / "canonical.parquet"
    summary = write_canonical_slice(src, dest, batch_rows=256)
    assert summary.rows == 1000 and summary.dim == 5
    pf = pq.ParquetFile(dest)
    assert pf.schema_arrow.field("features").equals(vector_field("features", 5), check_metadata=True)
    assert [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)] == [256, 256, 256, 232]
    batches = list(iter_validated_batches(dest, batch_rows=256))
    np.testing.assert_array_equal(np.concatenate([b.features for b in batches]), X)
    assert not batches[0].features.flags.owndata, "a view of Arrow's buffer, not a copy"
    np.testing.assert_array_equal(features_matrix(pq.read_table(dest).column("features")), X)


def test_bytes_without_the_float32_marker_are_refused_with_the_expected_form(tmp_path):
    X = _rows(4)
    plain = pa.FixedSizeBinaryArray.from_buffers(pa.binary(20), 4, [None, pa.py_buffer(X)])
    path = tmp_path / "blob.parquet"
    pq.write_table(pa.table({"id": np.arange(4), "features": plain}), path)
    with pytest.raises(SliceError, match=r"blob.parquet: column 'features' has type fixed_size_binary\[20\]; "
                                         r"expected a fixed-size list of float32"):
        check_schema(path, pq.ParquetFile(path).schema_arrow, SliceSpec())


def test_chunks_split_each_row_group_evenly(tmp_path):
    path = tmp_path / "groups.parquet"
    pq.write_table(pa.table({"id": np.arange(25_000), "features": features_list(_rows(25_000, 3))}), path,
                   row_group_size=10_000)
    sizes = [b.num_rows for b in iter_chunks(parquet_reader(path), ["id", "features"], batch_rows=8_192)]
    assert sizes == [5_000, 5_000, 5_000, 5_000, 5_000], "10k-row groups in halves, never across a boundary"
    sizes = [b.num_rows for b in iter_chunks(parquet_reader(path), ["id"], batch_rows=20_000)]
    assert sizes == [10_000, 10_000, 5_000]


def test_regrouped_gives_whole_groups_whatever_the_batches():
    batches = [pa.record_batch({"a": np.arange(s, s + n)}) for s, n in ((0, 3), (3, 10), (13, 1), (14, 6))]
    tables = list(regrouped(batches, 7))
    assert [t.num_rows for t in tables] == [7, 7, 6]
    assert np.concatenate([t.column("a").to_numpy() for t in tables]).tolist() == list(range(20))


def test_feature_bytes_are_plain_floats_split_and_the_rest_zstd_with_a_dictionary():
    batch = canonical_batch(pa.array(np.arange(3)), _rows(3), pa.array([1, 2, 3]))
    opts = write_options(batch.schema)
    assert opts["compression"] == {"id": "zstd", "features": "none", "label": "zstd"}
    assert opts["use_dictionary"] == ["id", "label"] and opts["use_byte_stream_split"] == []
    listed = pa.schema([pa.field("id", pa.int64()), pa.field("features", features_list(_rows(2)).type)])
    assert write_options(listed)["use_byte_stream_split"] == ["features.list.element"]
    assert write_options(listed)["compression"]["features.list.element"] == "lz4"
    coords = pa.schema([pa.field("id", pa.int64()), pa.field("x", pa.float32()), pa.field("label", pa.string())])
    assert write_options(coords)["use_dictionary"] == ["id", "label"]
    assert write_options(coords)["use_byte_stream_split"] == ["x"], "floats are split, not dictionary-encoded"


def test_the_quick_finite_check_still_names_the_row_and_lets_huge_finite_values_through(tmp_path):
    X = np.full((6, 4), 3e38, np.float32)  # finite, but their float32 sum overflows
    path = write_slice(tmp_path / "huge.parquet", np.arange(6), X, None)
    assert sum(b.features.shape[0] for b in iter_validated_batches(path)) == 6
    for bad in (np.inf, -np.inf, np.nan):
        X = _rows(6, 4)
        X[4, 1] = bad
        path = write_slice(tmp_path / "bad.parquet", np.arange(6), X, None)
        with pytest.raises(SliceError, match=f"features hold {bad} at row 4 \\(id 4\\)"):
            list(iter_validated_batches(path))


def test_one_decoder_reads_every_form_of_the_features_and_travels_alone():
    """``features_matrix`` reads the stored bytes, the variable-width bytes and lists Spark hands over, and
    a fixed-size list, alike (sliced too); the Spark engine ships its module, which imports numpy and
    pyarrow and nothing of this package."""
    import subprocess
    import sys

    from umap_assets.engines import shipped_module

    X = _rows(50, d=6)
    stored = canonical_batch(pa.array(np.arange(50)), X, None).column(1)
    spark_bytes = pa.array([row.tobytes() for row in X], pa.binary())
    spark_lists = pa.array(X.tolist(), pa.list_(pa.float32()))
    for column in (stored, spark_bytes, spark_lists, features_list(X)):
        np.testing.assert_array_equal(features_matrix(column), X)
        np.testing.assert_array_equal(features_matrix(column.slice(10, 20)), X[10:30])
    with pytest.raises(ValueError, match="different lengths"):
        features_matrix(pa.array([X[0].tobytes(), X[1, :3].tobytes()], pa.binary()))
    shipped = shipped_module("features")
    code = (f"import sys; sys.path.insert(0, {str(shipped.parent)!r}); import numpy as np, pyarrow as pa; "
            "import umap_assets_features as f; "
            "assert f.features_matrix(pa.array([np.ones(3, '<f4').tobytes()], pa.binary())).shape == (1, 3); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('umap_assets', 'torch', 'dagster', 'sklearn')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    assert shipped.name == "umap_assets_features.py"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
