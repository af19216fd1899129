"""Keep a retrained map where the previous one was: similarity transforms and anchored targets.

A new UMAP layout of the same data is the old one up to a rotation, a reflection, a translation, a
scale, and local rearrangements. :func:`fit_similarity` finds the first four in closed form
(Umeyama 1991, with reflections allowed: a mirrored map is the same map); :func:`anchored_targets`
pulls the student's targets towards where the previous model put the same rows, which is what
removes the rest; :func:`align_student` folds a similarity into a student's output, so the
artifact built from it maps straight into the previous model's frame at no cost at run time.
Trustworthiness, continuity and kNN accuracy are invariant under a similarity, so the fold costs
no quality; the anchor is measured (bench/alignment.py, bench/RESULTS.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch only where a student is aligned: the model store reads alignments without it
    from .distill import StudentResult


@dataclass(frozen=True)
class Similarity:
    """``y -> scale * y @ rotation + translation`` on row vectors.

    Attributes
    ----------
    scale : float
        Positive.
    rotation : ndarray of float64, shape (m, m)
        Orthogonal; its determinant is -1 when the map is mirrored.
    translation : ndarray of float64, shape (m,)
    """

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    @classmethod
    def identity(cls, m: int) -> "Similarity":
        return cls(1.0, np.eye(m), np.zeros(m))

    def apply(self, Y: np.ndarray) -> np.ndarray:
        return (self.scale * (np.asarray(Y, np.float64) @ self.rotation) + self.translation).astype(np.float32)

    def inverse(self) -> "Similarity":
        return Similarity(1.0 / self.scale, self.rotation.T, -(self.translation @ self.rotation.T) / self.scale)

    def to_dict(self) -> dict:
        return {"scale": float(self.scale), "rotation": self.rotation.tolist(), "translation": self.translation.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Similarity":
        return cls(float(d["scale"]), np.asarray(d["rotation"], np.float64), np.asarray(d["translation"], np.float64))


def fit_similarity(source: np.ndarray, target: np.ndarray, *, with_scale: bool = True) -> Similarity:
    """The similarity that maps ``source`` rows closest to ``target`` rows in least squares.

    Parameters
    ----------
    source, target : ndarray of shape (n, m)
        The same rows in two maps, in the same order; n >= 1.
    with_scale : bool, default True
        False fixes the scale at 1 (a rigid motion).

    Returns
    -------
    Similarity
        Minimises ``sum ||scale * source_i @ R + t - target_i||^2`` over orthogonal ``R`` (reflections
        included), ``t`` and, with ``with_scale``, ``scale > 0``. A source without spread gives the
        translation between the centroids.
    """
    S, T = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if S.shape != T.shape or S.ndim != 2 or not len(S):
        raise ValueError(f"source and target must be matching (n, m) arrays with n >= 1, got {S.shape} and {T.shape}")
    mu_s, mu_t = S.mean(0), T.mean(0)
    Sc, Tc = S - mu_s, T - mu_t
    U, sigma, Vt = np.linalg.svd(Sc.T @ Tc)
    R = U @ Vt
    var = float((Sc ** 2).sum())
    scale = float(sigma.sum() / var) if with_scale and var > 0 else 1.0
    return Similarity(scale, R, mu_t - scale * mu_s @ R)


def anchored_targets(Y: np.ndarray, previous: np.ndarray, to_native: Similarity, weight: float,
                     radius: float | None = None) -> np.ndarray:
    """Teacher coordinates pulled towards the previous model's: ``(1 - w_i) Y_i + w_i P_i``.

    ``P = to_native(previous)`` is the previous model's map in the teacher's frame. Without
    ``radius`` every row has ``w_i = weight``. With it, a row's pull fades with how far the teacher
    moved it: ``w_i = weight * exp(-(d_i / (radius * median(d)))^2)``, ``d_i = ||Y_i - P_i||``. The
    usual jitter of a refit (a few times the median move) is held in place, while rows the teacher
    places somewhere else entirely (a region the previous model did not know) follow the teacher.

    Parameters
    ----------
    Y : ndarray of shape (n, m)
        The new teacher's coordinates of the rows, in its own frame.
    previous : ndarray of shape (n, m)
        The previous model's coordinates of the same rows, in its frame.
    to_native : Similarity
        From the previous model's frame to the teacher's (the inverse of the teacher's alignment).
    weight : float
        In [0, 1]: 0 keeps the teacher's coordinates, 1 copies the previous model's (where held).
    radius : float, optional
        Positive: the move, in median moves, at which a row's pull has fallen to ``weight / e``.

    Returns
    -------
    ndarray of float32, shape (n, m)
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the anchor weight must lie in [0, 1], got {weight}")
    if radius is not None and radius <= 0:
        raise ValueError(f"the anchor radius must be positive, got {radius}")
    Y = np.asarray(Y, np.float64)
    if weight == 0.0:
        return Y.astype(np.float32)
    P = np.asarray(to_native.apply(previous), np.float64)
    w = np.full((len(Y), 1), weight)
    if radius is not None:
        d = np.linalg.norm(Y - P, axis=1)
        scale = radius * float(np.median(d))
        if scale > 0:
            w = weight * np.exp(-((d / scale) ** 2))[:, None]
    return ((1.0 - w) * Y + w * P).astype(np.float32)


def align_student(result: "StudentResult", similarity: Similarity) -> "StudentResult":
    """A copy of ``result`` whose map is ``similarity`` applied to the original's.

    The output layer and the output mean absorb it exactly: ``predict`` is
    ``out * y_scale + y_mean`` with ``out = h @ W.T + b``, so ``W <- s R.T W``, ``b <- s b R`` and
    ``y_mean <- s y_mean R + t`` (row vectors) give ``s (out * y_scale + y_mean) R + t``.
    """
    import torch

    aligned = copy.deepcopy(result)
    last = [m for m in aligned.model if isinstance(m, torch.nn.Linear)][-1]
    s, R = similarity.scale, torch.from_numpy(similarity.rotation.astype(np.float32))
    with torch.no_grad():
        last.weight.copy_(s * R.T @ last.weight)
        last.bias.copy_(s * last.bias @ R)
    prep = aligned.prep
    prep.y_mean = (s * prep.y_mean.astype(np.float64) @ similarity.rotation + similarity.translation).astype(np.float32)
    return aligned
