"""Where the training chain keeps its files: the one module that owns the paths under ``models/``.

Plain Python, no Dagster: the assets, the asset checks, the CLI and the benchmarks share it. The
records themselves save and load in :mod:`umap_assets.records`; sample rows are read by
:mod:`umap_assets.sample_rows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .contract import features_matrix, parquet_reader, read_verified
from .home import Layout
from .numerics.drift import CoverageReference
from .records import Candidate, Student, Teacher


#: Key of the coreset file's schema metadata that holds the drift reference.
COVERAGE_KEY = b"umap_assets.coverage"


@dataclass(frozen=True)
class ModelStore:
    layout: Layout

    @property
    def coreset_path(self) -> Path:
        return self.layout.warehouse / "coreset" / "coreset.parquet"

    @property
    def teachers_dir(self) -> Path:
        """:class:`~umap_assets.records.Teacher` records, one ``<version>.npz`` each."""
        return self.layout.models / "teachers"

    @property
    def students_dir(self) -> Path:
        """:class:`~umap_assets.records.Student` records, one ``<version>.npz`` each."""
        return self.layout.models / "students"

    @property
    def reports_dir(self) -> Path:
        """:class:`~umap_assets.records.Report` records, one ``<version>.json`` each."""
        return self.layout.models / "reports"

    @property
    def artifacts_dir(self) -> Path:
        """Every artifact ``artifact`` built, as ``<version>.uart``, with its layout and coverage beside it."""
        return self.layout.models / "artifacts"

    def teacher_path(self, version: str) -> Path:
        return Teacher.path(self.teachers_dir, version)

    def student_path(self, version: str) -> Path:
        return Student.path(self.students_dir, version)

    def teacher(self, version: str) -> Teacher:
        return Teacher.load(self.teachers_dir, version)

    def student(self, version: str) -> Student:
        return Student.load(self.students_dir, version)

    def candidate(self, report_version: str) -> Candidate:
        return Candidate.load(self.artifacts_dir, self.reports_dir, report_version)

    @property
    def artifact_path(self) -> Path:
        """The promoted artifact: the newest one that passed its blocking checks."""
        return self.layout.models / "artifact.uart"

    @property
    def coverage_path(self) -> Path:
        """The drift reference of the promoted artifact's training data (written with the promotion)."""
        return self.layout.models / "coverage.npz"

    def promote(self, version: str) -> Path:
        """Make stored artifact ``version`` the one that ``embeddings`` and ``drift`` use.

        The coverage of the coreset it was trained on is promoted with it, so ``drift`` always
        measures against the training data of the model that is served: the copy kept beside the
        version when it was first promoted (a rollback), else the current coreset's, which is then
        kept beside it. The artifact is written first: a run killed in between leaves the older
        coverage, which errs on the side of one retraining too many, never of a served model that
        misses a region.
        """
        from .atomic import atomic_write_bytes

        path = atomic_write_bytes(self.artifact_path, self.versioned_artifact_path(version).read_bytes())
        kept = self.versioned_coverage_path(version)
        if kept.exists():
            atomic_write_bytes(self.coverage_path, kept.read_bytes())
            return path
        try:
            blob = self.coreset_coverage().to_bytes(include_centers=True)
        except FileNotFoundError:
            self.coverage_path.unlink(missing_ok=True)  # no reference is better than a stale one
        else:
            atomic_write_bytes(kept, blob)
            atomic_write_bytes(self.coverage_path, blob)
        return path

    def versioned_coverage_path(self, version: str) -> Path:
        return self.artifacts_dir / f"{version}.coverage.npz"

    def versioned_layout_path(self, version: str) -> Path:
        """The teacher's coordinates of the rows artifact ``version`` was distilled on, in its frame."""
        return self.artifacts_dir / f"{version}.layout.parquet"

    def save_layout(self, version: str, uids: Sequence[str], Y: np.ndarray) -> int:
        from .warehouse import write_table

        Y = np.asarray(Y, np.float32)
        columns = {"uid": pa.array(list(uids), pa.string())}
        columns.update({f"c{j}": pa.array(Y[:, j]) for j in range(Y.shape[1])})
        return write_table(pa.table(columns), self.versioned_layout_path(version))

    def load_layout(self, version: str) -> tuple[list[str], np.ndarray] | None:
        """``(uids, Y)`` saved for artifact ``version``, or None (a version built before layouts were kept)."""
        path = self.versioned_layout_path(version)
        if not path.exists():
            return None
        table = read_verified(path)
        coords = [name for name in table.column_names if name != "uid"]
        return table.column("uid").to_pylist(), np.column_stack([table.column(c).to_numpy() for c in coords])

    def versioned_artifact_path(self, version: str) -> Path:
        return self.artifacts_dir / f"{version}.uart"

    def coreset_coverage(self) -> CoverageReference:
        """The drift reference stored in the current coreset file (the newest training run's)."""
        if not self.coreset_path.exists():
            raise FileNotFoundError(f"no coreset at {self.coreset_path}; materialize `coreset` first")
        pf = parquet_reader(self.coreset_path)
        blob = (pf.schema_arrow.metadata or {}).get(COVERAGE_KEY)
        if blob is None:
            raise FileNotFoundError(f"{self.coreset_path} holds no coverage reference; re-materialize `coreset`")
        return CoverageReference.from_bytes(blob, features_matrix(read_verified(self.coreset_path, ["features"])
                                                                  .column("features")))

    def load_coverage(self) -> CoverageReference:
        """The drift reference of the promoted artifact: the coverage of the data it was trained on."""
        if not self.coverage_path.exists():
            raise FileNotFoundError(f"no coverage for the promoted model at {self.coverage_path}; "
                                    "train a model whose checks pass (`train_model`)")
        return CoverageReference.from_bytes(self.coverage_path.read_bytes())


def served_projector(store: ModelStore, input_dim: int, *, excluding: str | None = None):
    """The model served now (a :class:`~umap_assets.runtime.Projector`), when there is one, it reads
    rows of ``input_dim`` features and its version is not ``excluding``; else None."""
    from .runtime import Projector

    if not store.artifact_path.exists():
        return None
    served = Projector.load(store.artifact_path)
    return None if served.version == excluding or served.input_dim != input_dim else served
