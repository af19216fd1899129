"""The quality report of one candidate artifact: what was measured, and each gate's verdict.

:class:`Report` is what the blocking checks and the promotion read; ``to_dict`` is the layout of
``reports/quality_report.json``, the copy a person reads (the product never reads that copy back).
Fields: ``artifact_version``, ``student_version`` and ``teacher_version`` (what was measured);
``validation_rows`` and ``k``; ``metrics`` (per model: ``teacher``, ``student``, ``artifact``);
``gates`` (:class:`Gate`); ``per_class`` (the labelled rows, per label); ``labelled_rows`` (of the
validation rows); ``unmeasured`` (a gate that was not measured, and why: kNN accuracy without enough
labelled rows); ``stability`` against the model served when it was measured
(:class:`Stability`, or None). A report is named by a hash of its JSON and written once.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import atomic_write_bytes

KIND = "report"
MODELS = ("teacher", "student", "artifact")


@dataclass(frozen=True)
class Gate:
    name: str
    versus: str  # the reference: teacher or student
    artifact: float
    reference: float
    floor: float
    margin: float
    margin_ci95: list[float] | None
    passed: bool

    def line(self) -> str:
        """The one line a person reads: artifact, reference, floor, margin (with its interval)."""
        ci = f" [95% CI {self.margin_ci95[0]:+.4f}, {self.margin_ci95[1]:+.4f}]" if self.margin_ci95 else ""
        return (f"{self.name}: artifact {self.artifact:.4f}, {self.versus} {self.reference:.4f}, floor {self.floor:.4f}, "
                f"margin {self.margin:+.4f}{ci}: {'passed' if self.passed else 'FAILED'}")


@dataclass(frozen=True)
class Stability:
    previous_version: str
    median_displacement: float
    knn_overlap: float


@dataclass(frozen=True)
class Report:
    artifact_version: str
    student_version: str
    teacher_version: str
    validation_rows: int
    k: int
    metrics: dict[str, dict]
    gates: list[Gate]
    per_class: list[dict] = field(default_factory=list)
    stability: Stability | None = None
    labelled_rows: int = 0
    unmeasured: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, report: dict) -> "Report":
        """From the layout of ``quality_report.json``."""
        stability = report.get("stability")
        return cls(artifact_version=report["artifact"]["version"], student_version=report.get("student_version", ""),
                   teacher_version=report.get("teacher_version", ""), validation_rows=int(report["validation_rows"]),
                   k=int(report["k"]), metrics={m: dict(report[m]) for m in MODELS},
                   gates=[Gate(**g) for g in report["gates"]], per_class=list(report.get("per_class", [])),
                   stability=None if stability is None else Stability(**stability),
                   labelled_rows=int(report.get("labelled_rows", 0)), unmeasured=dict(report.get("unmeasured", {})))

    def to_dict(self) -> dict:
        out = {m: self.metrics[m] for m in MODELS}
        out.update(validation_rows=self.validation_rows, k=self.k, gates=[asdict(g) for g in self.gates],
                   per_class=self.per_class, student_version=self.student_version,
                   teacher_version=self.teacher_version, labelled_rows=self.labelled_rows, unmeasured=self.unmeasured)
        if self.stability is not None:
            out["stability"] = asdict(self.stability)
        return out

    def gate(self, name: str) -> Gate | None:
        return next((g for g in self.gates if g.name == name), None)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def _json(self) -> bytes:
        return json.dumps({"kind": KIND, **self.to_dict()}, indent=2, sort_keys=True).encode()

    @functools.cached_property
    def version(self) -> str:
        import hashlib

        return hashlib.sha256(self._json()).hexdigest()[:16]

    @staticmethod
    def path(directory: Path, version: str) -> Path:
        return Path(directory) / f"{version}.json"

    def save(self, directory: Path) -> Path:
        path = self.path(directory, self.version)
        if not path.exists():
            atomic_write_bytes(path, self._json())
        return path

    @classmethod
    def load(cls, directory: Path, version: str) -> "Report":
        path = cls.path(directory, version)
        if not path.exists():
            raise FileNotFoundError(f"no report {version} at {path}; materialize `quality_report` first")
        data = json.loads(path.read_text())
        if data.pop("kind", None) != KIND:
            raise ValueError(f"{path} is not a quality report")
        return cls.from_dict(data)
