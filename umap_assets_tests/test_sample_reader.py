"""Reading only the rows a step uses: ``take_rows`` and ``read_sample_rows``."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from umap_assets.sample_rows import read_sample_rows
from umap_assets.warehouse import Warehouse, take_rows


def _table(n: int, start: int = 0) -> pa.Table:
    X = np.arange(start, start + n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    return pa.table({"id": np.arange(start, start + n), "features": pa.FixedSizeListArray.from_arrays(X.ravel(), 3)})


def test_take_rows_matches_take_across_row_groups_and_batches(tmp_path):
    path = tmp_path / "t.parquet"
    table = _table(1000)
    pq.write_table(table, path, row_group_size=128)  # 8 row groups
    positions = np.array([0, 1, 127, 128, 300, 301, 640, 999])
    got = take_rows(path, positions, batch_rows=50)  # batches smaller than a row group
    assert got.equals(table.take(pa.array(positions)))
    assert take_rows(path, positions, ["id"]).column_names == ["id"]
    assert take_rows(path, np.empty(0, np.int64)).num_rows == 0


def test_take_rows_rejects_unsorted_or_out_of_range_positions(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(_table(10), path)
    for bad in ([3, 1], [1, 1], [10]):
        with pytest.raises(ValueError, match="sorted, unique and below 10"):
            take_rows(path, np.array(bad))


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    """Three sample files of 100 rows; rows with id % 5 == 0 are validation rows."""
    wh = Warehouse(root=tmp_path / "warehouse", duckdb_path=tmp_path / "w.duckdb")
    (wh.root / "samples").mkdir(parents=True)
    for s, key in enumerate(["a", "b", "c"]):
        t = _table(100, start=1000 * s)
        ids = t.column("id").to_numpy()
        t = t.add_column(0, "slice", pa.array([key] * 100))
        t = t.append_column("label", pa.array(ids % 3))
        t = t.append_column("split", pa.array(np.where(ids % 5 == 0, "validation", "train")))
        pq.write_table(t, wh.table_path("samples", key), row_group_size=32)
    return wh


def test_requested_uids_come_first_in_their_order_then_a_seeded_subsample(warehouse):
    uids = ["c/2007", "a/1", "b/1042"]
    rows = read_sample_rows(warehouse, "train", uids=uids, fill_to=50, seed=7)
    table = rows.table
    assert table.num_rows == 50 and rows.n_requested == 3 and rows.available == 240
    assert table.column("uid").to_pylist()[:3] == uids
    assert read_sample_rows(warehouse, "train", uids=uids).table.column("uid").to_pylist() == uids  # no extras
    extras = table.column("uid").to_pylist()[3:]
    assert len(set(extras)) == 47 and not set(extras) & set(uids)
    assert set(table.column("split").to_pylist()) == {"train"}
    # features travel with their ids, and labels come back as strings
    ids = table.column("id").to_numpy()
    X = np.asarray(table.column("features").to_pylist())
    assert np.array_equal(X[:, 0], ids)
    assert table.column("label").to_pylist()[0] == str(2007 % 3)
    # the same seed gives the same rows; another seed other rows
    assert read_sample_rows(warehouse, "train", uids=uids, fill_to=50, seed=7).table.equals(table)
    assert read_sample_rows(warehouse, "train", uids=uids, fill_to=50, seed=8).table.column("uid").to_pylist() != \
        table.column("uid").to_pylist()


def test_fill_to_none_reads_every_row_of_the_split(warehouse):
    rows = read_sample_rows(warehouse, "validation", fill_to=None)
    assert rows.table.num_rows == rows.available == 60
    assert all(int(u.split("/")[1]) % 5 == 0 for u in rows.table.column("uid").to_pylist())


def test_missing_uids_raise_or_are_skipped(warehouse):
    # "a/5" exists but is a validation row, "z/1" names no slice, "a/77777" no row
    uids = ["a/1", "a/5", "z/1", "a/77777"]
    with pytest.raises(KeyError, match="3 of the requested rows are no longer in the 'train' samples "
                                       r"\(for example 'a/5'\)"):
        read_sample_rows(warehouse, "train", uids=uids)
    rows = read_sample_rows(warehouse, "train", uids=uids, fill_to=1, missing="skip")
    assert rows.table.column("uid").to_pylist() == ["a/1"] and rows.n_requested == 1


def test_duplicate_uids_are_refused_and_an_empty_read_keeps_the_schema(warehouse):
    with pytest.raises(ValueError, match="1 duplicates"):
        read_sample_rows(warehouse, "train", uids=["a/1", "a/1"])
    empty = read_sample_rows(warehouse, "train").table  # no uids, fill_to 0
    assert empty.num_rows == 0 and empty.schema.field("label").type == pa.string() and "uid" in empty.column_names


def test_no_samples_is_a_clear_error(tmp_path):
    wh = Warehouse(root=tmp_path / "empty", duckdb_path=tmp_path / "w.duckdb")
    with pytest.raises(FileNotFoundError, match="no samples under .*ingest a slice first"):
        read_sample_rows(wh, "train")
