"""A candidate: one artifact version and the report that measured it.

The artifact is the file ``artifact`` wrote under its version (``models/artifacts/<version>.uart``,
checksummed, optionally signed: :mod:`umap_assets.runtime`); the report is a :class:`Report` whose
``artifact_version`` names it. ``model`` promotes a candidate whose report's gates passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .report import Report


@dataclass(frozen=True)
class Candidate:
    version: str
    artifact_path: Path
    report: Report

    @classmethod
    def load(cls, artifacts: Path, reports: Path, report_version: str) -> "Candidate":
        """The candidate that report ``report_version`` measured; fails when its artifact is gone."""
        report = Report.load(reports, report_version)
        path = Path(artifacts) / f"{report.artifact_version}.uart"
        if not path.exists():
            raise FileNotFoundError(f"artifact {report.artifact_version} is gone from {path}; "
                                    "re-materialize `artifact` and `quality_report`")
        return cls(report.artifact_version, path, report)

    def projector(self):
        """The artifact, checked (checksum, signature) as the runtime reads it."""
        from ..runtime import Projector

        projector = Projector.load(self.artifact_path)
        if projector.version != self.version:
            raise ValueError(f"{self.artifact_path} holds artifact {projector.version}, not {self.version}")
        return projector
