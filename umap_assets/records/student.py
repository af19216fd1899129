"""The student: the distilled MLP's weights, its preprocessing, and what it was trained on.

Fields of :class:`Student`:

- ``weights``: the MLP's ``state_dict`` as float32 arrays (``build_mlp(inputs, hidden, n_components)``);
- ``prep``: the input and output maps (:class:`~umap_assets.numerics.distill.Preprocessing`);
- ``config``: the :class:`~umap_assets.numerics.distill.StudentConfig` it was trained with, as a dict;
- ``history``, ``steps``: the training record;
- ``a``, ``b``: the teacher's curve parameters used by the graph term;
- ``uids``: the real rows it was distilled on (coreset first), and ``targets``: the teacher's map of
  them, in the served model's frame (the layout a retraining keeps);
- ``teacher_version``: the :class:`~umap_assets.records.Teacher` it was distilled from.

Its version hashes everything but ``history`` (which holds wall-clock seconds), so the same data and
config give the same version on any machine. Weights load with ``numpy.load(allow_pickle=False)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..numerics.distill import Preprocessing, StudentResult
from ._files import content_version, read, strings, write_once

KIND = "student"
_PREP_ARRAYS = ("mean", "components", "y_mean")


@dataclass(frozen=True, eq=False)
class Student:
    weights: dict[str, np.ndarray]
    prep: Preprocessing
    config: dict
    steps: int
    a: float
    b: float
    uids: list[str]
    targets: np.ndarray
    teacher_version: str
    history: list[dict] = field(default_factory=list)

    @classmethod
    def from_result(cls, result: StudentResult, *, a: float, b: float, uids: list[str], targets: np.ndarray,
                    teacher_version: str) -> "Student":
        weights = {name: t.detach().cpu().numpy().astype(np.float32) for name, t in result.model.state_dict().items()}
        return cls(weights=weights, prep=result.prep, config=dict(result.config), steps=int(result.steps),
                   a=float(a), b=float(b), uids=list(uids), targets=np.asarray(targets, np.float32),
                   teacher_version=teacher_version, history=list(result.history))

    @property
    def input_dim(self) -> int:
        return int(self.prep.mean.shape[0])

    @property
    def n_components(self) -> int:
        return int(self.targets.shape[1])

    def result(self) -> StudentResult:
        """The trained network, ready to ``transform`` (in eval mode)."""
        import torch

        from ..numerics.distill import build_mlp

        model = build_mlp(self.prep.components.shape[0], tuple(self.config["hidden"]), self.n_components)
        model.load_state_dict({name: torch.from_numpy(np.array(w)) for name, w in self.weights.items()})
        model.eval()
        return StudentResult(model=model, prep=self.prep, history=self.history, steps=self.steps, config=self.config)

    def _arrays_and_header(self, with_history: bool = True) -> tuple[dict[str, np.ndarray], dict]:
        arrays = {f"weights/{name}": w for name, w in self.weights.items()}
        arrays.update({f"prep/{name}": np.asarray(getattr(self.prep, name), np.float32) for name in _PREP_ARRAYS})
        arrays.update(uids=strings(self.uids), targets=self.targets)
        header = {"kind": KIND, "config": self.config, "steps": self.steps, "a": self.a, "b": self.b,
                  "teacher_version": self.teacher_version, "weight_names": list(self.weights),
                  "prep_scale": float(self.prep.scale), "prep_y_scale": float(self.prep.y_scale)}
        if with_history:
            header["history"] = self.history
        return arrays, header

    @functools.cached_property
    def version(self) -> str:
        return content_version(*self._arrays_and_header(with_history=False))

    @staticmethod
    def path(directory: Path, version: str) -> Path:
        return Path(directory) / f"{version}.npz"

    def save(self, directory: Path) -> int:
        """Write ``<directory>/<version>.npz`` once; return its size in bytes."""
        return write_once(self.path(directory, self.version), *self._arrays_and_header())

    @classmethod
    def load(cls, directory: Path, version: str) -> "Student":
        arrays, h = read(cls.path(directory, version), KIND)
        prep = Preprocessing(mean=arrays["prep/mean"], components=arrays["prep/components"], scale=h["prep_scale"],
                             y_mean=arrays["prep/y_mean"], y_scale=h["prep_y_scale"])
        return cls(weights={name: arrays[f"weights/{name}"] for name in h["weight_names"]}, prep=prep,
                   config=h["config"], steps=h["steps"], a=h["a"], b=h["b"], uids=arrays["uids"].tolist(),
                   targets=arrays["targets"], teacher_version=h["teacher_version"], history=h.get("history", []))
