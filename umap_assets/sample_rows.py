"""Reading the rows of the ``samples`` tables that a training step uses, one sample file at a time.

Plain Python, no Dagster: ``coreset``, ``teacher``, ``student``, ``artifact`` and ``quality_report``
read their rows here (and declare ``samples`` among their deps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .contract import features_matrix, read_verified
from .warehouse import Warehouse, take_rows


@dataclass
class SampleRows:
    """Rows read from the samples: the ``uids`` asked for first (in that order), then the extras."""

    table: pa.Table  # with a ``uid`` column ``slice/id``; ``label`` as string when present
    available: int  # rows of the split across every sample file
    n_requested: int  # how many of the rows are the requested uids


def read_sample_rows(
    warehouse: Warehouse,
    split: str | None = None,
    *,
    uids: Sequence[str] = (),
    fill_to: int | None = 0,
    seed: int = 0,
    missing: str = "raise",
) -> SampleRows:
    """Read only the sample rows a step uses, one sample file at a time.

    The rows named by ``uids`` (``slice/id``) come first, in the order given; then other rows of
    the split, a seeded random subsample, until there are ``fill_to`` rows in all (``fill_to=None``
    adds every other row; the default 0 adds none). A first pass reads only the ``id`` and
    ``split`` columns; the second reads the chosen rows batch by batch, so memory holds what is
    returned, one Parquet batch and a boolean per sample row, never every sample's features.
    ``missing="skip"`` drops requested uids that are gone (or not in ``split``) instead of raising
    ``KeyError``.
    """
    files = warehouse.files("samples")
    if not files:
        raise FileNotFoundError(f"no samples under {warehouse.table_dir('samples')}; ingest a slice first")
    if len(set(uids)) != len(uids):
        raise ValueError(f"the requested uids hold {len(uids) - len(set(uids))} duplicates; ask for each row once")
    wanted = _uids_by_slice(uids)
    plans = [_plan_file(path, split, wanted.pop(path.stem, None)) for path in files]
    found_orders = np.zeros(len(uids), bool)
    for plan in plans:
        found_orders[plan.orders] = True
    n_found = int(found_orders.sum())
    if n_found < len(uids) and missing == "raise":
        example = uids[int(np.flatnonzero(~found_orders)[0])]
        raise KeyError(f"{len(uids) - n_found} of the requested rows are no longer in the {split!r} samples "
                       f"(for example {example!r}): the samples changed after the step that chose them; "
                       "re-materialize it")
    n_others = sum(plan.n_others for plan in plans)
    n_extra = n_others if fill_to is None else max(0, min(fill_to - n_found, n_others))
    rng = np.random.default_rng(seed)
    extra = np.sort(rng.choice(n_others, size=n_extra, replace=False)) if n_extra < n_others else np.arange(n_others)
    available = sum(plan.n_in_split for plan in plans)
    table = _read_plans(plans, extra, len(uids))
    if table is None:
        empty = _labels_as_strings(pq.read_schema(files[0]).empty_table())
        return SampleRows(empty.append_column("uid", pa.array([], pa.string())), available, 0)
    uid = pc.binary_join_element_wise(table.column("slice"), table.column("id").cast(pa.string()), "/")
    return SampleRows(table.append_column("uid", uid), available, n_found)


def _uids_by_slice(uids: Sequence[str]) -> dict[str, tuple[list[str], list[int]]]:
    """``slice/id`` uids grouped by slice: the ids, and their positions in ``uids``."""
    wanted: dict[str, tuple[list[str], list[int]]] = {}
    for order, uid in enumerate(uids):
        key, _, row_id = uid.partition("/")
        ids, orders = wanted.setdefault(key, ([], []))
        ids.append(row_id)
        orders.append(order)
    return wanted


@dataclass
class _FilePlan:
    """What to read from one sample file: the requested rows (``local``, at ``orders`` in the uids)
    and a mask of the split's other rows, from which the random fill draws."""

    path: Path
    local: np.ndarray
    orders: np.ndarray
    others: np.ndarray
    n_in_split: int

    @property
    def n_others(self) -> int:
        return int(self.others.sum())


def _plan_file(path: Path, split: str | None, wanted: tuple[list[str], list[int]] | None) -> _FilePlan:
    """Read one file's ``id`` and ``split`` columns and find the requested rows in it."""
    head = read_verified(path, columns=["id", "split"])
    in_split = (np.ones(head.num_rows, bool) if split is None
                else pc.equal(head.column("split"), split).to_numpy(zero_copy_only=False))
    n_in_split = int(in_split.sum())
    local = orders = np.empty(0, np.int64)
    if wanted is not None:
        ids, order_list = wanted
        found = pc.index_in(pa.array(ids, pa.string()), value_set=head.column("id").cast(pa.string()))
        found = pc.fill_null(found, -1).to_numpy().astype(np.int64)
        ok = found >= 0
        ok[ok] = in_split[found[ok]]
        local, orders = found[ok], np.asarray(order_list, np.int64)[ok]
        in_split[local] = False
    return _FilePlan(path, local, orders, in_split, n_in_split)


def _read_plans(plans: list[_FilePlan], extra: np.ndarray, n_uids: int) -> pa.Table | None:
    """Read the planned rows file by file: requested rows in their order, then the drawn ``extra``
    positions (numbered over all files' other rows); ``None`` when there is nothing to read."""
    pieces, keys = [], []
    first = 0
    for plan in plans:
        lo, hi = np.searchsorted(extra, [first, first + plan.n_others])
        extra_local = np.flatnonzero(plan.others)[extra[lo:hi] - first] if hi > lo else np.empty(0, np.int64)
        first += plan.n_others
        if not len(plan.local) and not len(extra_local):
            continue
        positions = np.union1d(plan.local, extra_local)
        key = np.empty(len(positions), np.int64)
        at_local = np.searchsorted(positions, plan.local)
        is_extra = np.ones(len(positions), bool)
        is_extra[at_local] = False
        key[at_local] = plan.orders
        key[is_extra] = n_uids + lo + np.arange(len(extra_local))
        pieces.append(_labels_as_strings(take_rows(plan.path, positions)))
        keys.append(key)
    if not pieces:
        return None
    table = pa.concat_tables(pieces, promote_options="default")
    return table.take(pa.array(np.argsort(np.concatenate(keys), kind="stable")))


def _labels_as_strings(table: pa.Table) -> pa.Table:
    """Slices may label with ints or strings; across slices the samples' labels are strings."""
    if "label" not in table.column_names:
        return table
    return table.set_column(table.column_names.index("label"), "label", table.column("label").cast(pa.string()))


def labels_of(table: pa.Table) -> np.ndarray | None:
    """Each row's label as a string (an object array), ``None`` for a row without one (its label is
    null, or its slice has no label column); ``None`` when no row has a label."""
    if "label" not in table.column_names or table.column("label").null_count == table.num_rows:
        return None
    return np.asarray([None if v is None else str(v) for v in table.column("label").to_pylist()], dtype=object)


def labelled(labels: np.ndarray | None) -> np.ndarray:
    """Which rows of :func:`labels_of`'s answer have a label (none when it is ``None``)."""
    if labels is None:
        return np.zeros(0, bool)
    return np.fromiter((v is not None for v in labels), bool, count=len(labels))


def feature_rows(table: pa.Table) -> np.ndarray:
    return features_matrix(table.column("features"))
