"""Keep a retrained map where the previous one was: kept layouts, similarity transforms, anchored targets.

A new UMAP layout of the same data is the old one up to a rotation, a reflection, a translation, a
scale, and local rearrangements; on a small data set its clusters may also be laid out anew. The
surest way to keep a map is to keep its layout: the previous teacher's coordinates of the rows it
knew, with :func:`place_new_rows` placing the others against them, and :func:`layout_trust_cost`
to say what that costs against a fresh layout. Otherwise :func:`fit_similarity` finds the first
four in closed form (Umeyama 1991, with reflections allowed: a mirrored map is the same map),
:func:`anchored_targets` pulls the student's targets towards where the previous model put the
same rows, and :func:`align_student` folds a similarity into a student's output, so the artifact
built from it maps straight into the previous model's frame at no cost at run time.
Trustworthiness, continuity and kNN accuracy are invariant under a similarity, so the fold costs
no quality; the rest is measured (bench/alignment.py, bench/RESULTS.md).
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


@dataclass(frozen=True)
class LayoutCost:
    """What a carried layout costs in trustworthiness against a fresh one (negative: it gains).

    ``cost`` is the difference of the two trustworthiness figures; ``low`` and ``high`` bound it
    (a paired bootstrap over the rows, 95%): on a few hundred rows a difference of a few
    thousandths is within the noise."""

    cost: float
    low: float
    high: float


def layout_trust_cost(X: np.ndarray, fresh: np.ndarray, carried: np.ndarray, k: int = 15,
                      max_rows: int = 5_000, seed: int = 0) -> LayoutCost:
    """The trustworthiness at ``k`` that the ``carried`` layout of the rows ``X`` loses against the
    ``fresh`` one, with its interval, on a seeded sample of at most ``max_rows`` rows.

    Both are scored on the same rows and neighbourhoods, row by row, so the difference is far less
    noisy than either figure. ``k`` is clipped to what the sample allows (trustworthiness needs
    k < n / 2).
    """
    from . import metrics  # scikit-learn, only where a layout is scored

    rows = metrics.subsample(len(X), max_rows, seed=seed)
    k = min(k, (len(rows) - 1) // 2)
    if k < 1:
        return LayoutCost(0.0, 0.0, 0.0)
    Xs = np.asarray(X)[rows]
    fresh_rows, carried_rows = (metrics.trustworthiness_row_scores(metrics.trustworthiness_penalties(Xs, E, k), k)
                                for E in (np.asarray(fresh)[rows], np.asarray(carried)[rows]))
    difference = fresh_rows - carried_rows
    low, high = metrics.bootstrap_interval(difference, seed=seed)
    return LayoutCost(float(difference.mean()), low, high)


def place_new_rows(graph, layout: np.ndarray, known: np.ndarray, a: float, b: float, *, n_epochs: int,
                   learning_rate: float, negative_sample_rate: float = 5.0, seed: int = 0) -> np.ndarray:
    """``layout`` with the rows not ``known`` placed by UMAP's own SGD against the known ones, which stay put.

    This is how umap-learn's ``transform`` places new rows (each starts at the membership-weighted
    mean of its known neighbours; then SGD on the edges from them, the known rows fixed, negative
    samples drawn from every row), except that the new rows move together, so edges between two new
    rows count too. A new row with no known neighbour starts where ``layout`` puts it.

    Parameters
    ----------
    graph : sparse matrix of shape (n, n)
        The fuzzy graph of every row (a fitted ``UMAP``'s ``graph_``).
    layout : ndarray of shape (n, m)
        Every row's starting coordinates; the known rows' are kept.
    known : ndarray of bool, shape (n,)
    a, b : float
        The curve of the low-dimensional similarities (``UMAP._a``, ``UMAP._b``).
    n_epochs, learning_rate : int, float
        The schedule: umap-learn's ``transform`` uses 100 epochs (30 past 10,000 rows) at a quarter
        of the fit's learning rate.
    negative_sample_rate : float, default 5.0
    seed : int, default 0
        Seeds the edge and negative sampling: the same inputs give the same layout.

    Returns
    -------
    ndarray of float32, shape (n, m)
    """

    known = np.asarray(known, bool)
    out = np.ascontiguousarray(layout, dtype=np.float32).copy()
    n_known = int(known.sum())
    if n_known in (0, len(known)) or n_epochs < 1:
        return out
    order = np.concatenate([np.flatnonzero(known), np.flatnonzero(~known)])  # the new rows last
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    g = graph.tocsr()
    to_known = g[~known][:, known]
    weights = np.asarray(to_known.sum(axis=1)).ravel()
    start = np.flatnonzero(weights > 0)
    new_rows = np.flatnonzero(~known)
    out[new_rows[start]] = (to_known[start] @ out[known]) / weights[start, None]
    emb = np.ascontiguousarray(out[order])
    g = g.tocoo()
    head, tail, weight = position[g.row], position[g.col], g.data
    keep = (head >= n_known) & (weight >= weight.max() / float(n_epochs))
    head, tail, weight = head[keep] - n_known, tail[keep], weight[keep]
    if len(weight):
        _umap_sgd(emb[n_known:], emb, head, tail, weight, a, b, n_epochs=n_epochs, learning_rate=learning_rate,
                  negative_sample_rate=negative_sample_rate, seed=seed, move_other=False)
    return emb[position]


def refine_layout(graph, layout: np.ndarray, a: float, b: float, *, n_epochs: int, learning_rate: float,
                  negative_sample_rate: float = 5.0, seed: int = 0) -> np.ndarray:
    """``layout`` refined by a short run of UMAP's own SGD on ``graph``, every row free.

    umap-learn's ``fit`` from ``init=layout``, without its rescaling to a 10 x 10 box and with a
    schedule short and slow enough (a few tens of epochs at a small fraction of the fit's learning
    rate) that the rows rearrange locally to fit the new graph while the map as a whole stays where
    it was. Edges sampled less than once in ``n_epochs`` are dropped, as the fit does. Seeded.

    Returns
    -------
    ndarray of float32, shape (n, m)
    """

    out = np.ascontiguousarray(layout, dtype=np.float32).copy()
    if n_epochs < 1:
        return out
    g = graph.tocoo()
    keep = g.data >= g.data.max() / float(n_epochs)
    _umap_sgd(out, out, g.row[keep], g.col[keep], g.data[keep], a, b, n_epochs=n_epochs, learning_rate=learning_rate,
              negative_sample_rate=negative_sample_rate, seed=seed, move_other=True)
    return out


def _umap_sgd(head_embedding: np.ndarray, tail_embedding: np.ndarray, head, tail, weight, a: float, b: float, *,
              n_epochs: int, learning_rate: float, negative_sample_rate: float, seed: int, move_other: bool) -> None:
    """umap-learn's layout SGD (``optimize_layout_euclidean``) in place on ``head_embedding``, on the
    edges ``head -> tail`` sampled in proportion to ``weight``, single-threaded and seeded."""
    from umap.layouts import optimize_layout_euclidean
    from umap.umap_ import make_epochs_per_sample

    rng_state = np.random.RandomState(seed).randint(np.iinfo(np.int32).min + 1, np.iinfo(np.int32).max - 1, 3)
    optimize_layout_euclidean(head_embedding, tail_embedding, np.asarray(head, np.int32), np.asarray(tail, np.int32),
                              n_epochs, len(tail_embedding), make_epochs_per_sample(weight, n_epochs), a, b,
                              rng_state.astype(np.int64), 1.0, learning_rate, negative_sample_rate,
                              parallel=False, move_other=move_other)


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
