"""Where the training chain keeps its files, and how to read them back.

Plain Python, no Dagster: the assets, the asset checks, the CLI and the benchmarks share it.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .atomic import atomic_path
from .contract import features_matrix
from .home import Layout
from .warehouse import Warehouse


@dataclass(frozen=True)
class ModelStore:
    layout: Layout

    @property
    def coreset_path(self) -> Path:
        return self.layout.warehouse / "coreset" / "coreset.parquet"

    @property
    def teacher_path(self) -> Path:
        return self.layout.models / "teacher.pkl"

    @property
    def student_path(self) -> Path:
        return self.layout.models / "student.pt"

    @property
    def candidate_path(self) -> Path:
        """The newest artifact, before its quality gates have passed."""
        return self.layout.models / "candidate.uart"

    @property
    def artifact_path(self) -> Path:
        """The promoted artifact: the newest one that passed its blocking checks."""
        return self.layout.models / "artifact.uart"

    def promote_candidate(self) -> Path:
        """Make the candidate the artifact that ``embeddings`` and the report use."""
        from .atomic import atomic_write_bytes

        return atomic_write_bytes(self.artifact_path, self.candidate_path.read_bytes())

    def versioned_artifact_path(self, version: str) -> Path:
        return self.layout.models / "artifacts" / f"{version}.uart"

    def save_teacher(self, teacher) -> int:
        with atomic_path(self.teacher_path) as tmp:
            with open(tmp, "wb") as fh:
                pickle.dump(teacher, fh, protocol=pickle.HIGHEST_PROTOCOL)
        return self.teacher_path.stat().st_size

    def load_teacher(self):
        if not self.teacher_path.exists():
            raise FileNotFoundError(f"no teacher at {self.teacher_path}; materialize `teacher` first")
        with open(self.teacher_path, "rb") as fh:
            return pickle.load(fh)

    def save_student(self, payload: dict) -> int:
        import torch

        with atomic_path(self.student_path) as tmp:
            torch.save(payload, tmp)
        return self.student_path.stat().st_size

    def load_student(self) -> dict:
        import torch

        if not self.student_path.exists():
            raise FileNotFoundError(f"no student at {self.student_path}; materialize `student` first")
        return torch.load(self.student_path, weights_only=False)


def load_sample_rows(warehouse: Warehouse, split: str | None = None) -> pa.Table:
    """The union of every slice's sample (optionally one split), with a ``uid`` column ``slice/id``."""
    tables = []
    for path in warehouse.files("samples"):
        t = pq.read_table(path)
        if split is not None:
            t = t.filter(pc.equal(t.column("split"), split))
        if "label" in t.column_names:
            t = t.set_column(t.column_names.index("label"), "label", t.column("label").cast(pa.string()))
        tables.append(t)
    if not tables:
        raise FileNotFoundError(f"no samples under {warehouse.table_dir('samples')}; ingest a slice first")
    table = pa.concat_tables(tables, promote_options="default")
    uid = pc.binary_join_element_wise(table.column("slice"), table.column("id").cast(pa.string()), "/")
    return table.append_column("uid", uid)


def labels_of(table: pa.Table) -> np.ndarray | None:
    if "label" not in table.column_names:
        return None
    return np.asarray(table.column("label").to_pylist(), dtype=object).astype(str)


def rows_by_uid(table: pa.Table, uids: list[str] | np.ndarray) -> pa.Table:
    """Rows of ``table`` in the order of ``uids`` (every uid must be present)."""
    wanted = pa.array(list(uids), type=pa.string())
    positions = pc.index_in(wanted, value_set=table.column("uid"))
    if positions.null_count:
        first = wanted[int(np.flatnonzero(positions.is_null().to_numpy(zero_copy_only=False))[0])].as_py()
        raise KeyError(f"{positions.null_count} rows are no longer in the samples (for example {first!r})")
    return table.take(positions)


def uid_mask(table: pa.Table, uids: list[str]) -> np.ndarray:
    """Boolean mask of the rows of ``table`` whose ``uid`` is in ``uids`` (vectorised, no Python loop)."""
    value_set = pa.array(list(uids), type=pa.string())
    return pc.is_in(table.column("uid"), value_set=value_set).to_numpy(zero_copy_only=False)


def feature_rows(table: pa.Table) -> np.ndarray:
    return features_matrix(table.column("features"))
