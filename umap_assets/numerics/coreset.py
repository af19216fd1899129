"""Greedy k-center coresets (Gonzalez 1985), chunked so no N x N matrix is ever formed.

For each point we keep ``min_dist``, its squared distance to the nearest chosen center. Each step
picks the point with the largest ``min_dist`` and lowers ``min_dist`` with the distances to the new
center: O(N * k * d) in float32. For large N, centers are added in blocks: a block of ``b``
centers is chosen greedily from the ``4b`` farthest candidates, then every point is updated with
one matrix product against the whole block. The covering radius ``sqrt(max(min_dist))`` never
grows as centers are added, and a warm start seeds ``min_dist`` from an earlier coreset's centers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class KCenterResult:
    """A k-center coreset: the chosen rows and how well they cover the data.

    Distances are Euclidean, in the units of the rows that were covered.

    Attributes
    ----------
    indices : ndarray of int64, shape (k,)
        Chosen rows: the warm-start rows first (sorted), then the rest in pick order.
    radius : float
        Covering radius: the largest distance from any row to its nearest center (0.0 for no rows).
    radii : ndarray of float64, shape (n_picks,)
        Covering radius before each center picked by the greedy loop (warm-start rows and the random
        first center have none). Non-increasing when centers are picked one at a time; within a block,
        entries after the first are the radius over that block's candidate rows.
    n_initial : int
        Number of warm-start rows at the front of ``indices``.
    distances : ndarray of float32, shape (n,)
        Every row's distance to its nearest center (0 for the centers).
    """

    indices: np.ndarray  # chosen rows, warm-start rows first, then in pick order
    radius: float  # covering radius: max distance from any row to its nearest center
    radii: np.ndarray  # covering radius before each newly picked center (non-increasing)
    n_initial: int
    distances: np.ndarray  # every row's distance to its nearest center (0 for the centers)


def _row_norms(Z: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", Z, Z)


def min_sq_dist_to(Z: np.ndarray, centers: np.ndarray, norms: np.ndarray | None = None,
                   chunk_elems: int = 1 << 24) -> np.ndarray:
    """Squared distance from every row of ``Z`` to its nearest row of ``centers`` (chunked).

    Parameters
    ----------
    Z : array_like of shape (n, d)
        Rows; converted to float32.
    centers : array_like of shape (m, d)
        At least one row; converted to float32.
    norms : ndarray of shape (n,), optional
        Squared norms of the rows of ``Z``, when already known.
    chunk_elems : int, default 2**24
        About how many distances one chunk computes (``chunk_elems // m`` rows of ``Z`` at a time),
        which bounds the memory used.

    Returns
    -------
    ndarray of float32, shape (n,)
        Squared Euclidean distances, clipped at 0 (the expansion ``|z|^2 - 2 z.c + |c|^2`` can round
        below zero).
    """
    Z = np.asarray(Z, dtype=np.float32)
    centers = np.asarray(centers, dtype=np.float32)
    norms = _row_norms(Z) if norms is None else norms
    c_norms = _row_norms(centers)
    out = np.empty(len(Z), dtype=np.float32)
    rows = max(1, chunk_elems // max(len(centers), 1))
    for start in range(0, len(Z), rows):
        stop = min(start + rows, len(Z))
        d = norms[start:stop, None] - 2.0 * (Z[start:stop] @ centers.T) + c_norms[None, :]
        out[start:stop] = np.maximum(d.min(axis=1), 0.0)
    return out


def k_center_greedy(
    Z: np.ndarray,
    budget: int,
    *,
    initial: np.ndarray | None = None,
    block_size: int | None = None,
    seed: int = 0,
) -> KCenterResult:
    """Choose up to ``budget`` rows of ``Z`` that cover it, starting from ``initial`` rows if given.

    Parameters
    ----------
    Z : array_like of shape (n, d)
        The rows to cover; converted to float32.
    budget : int
        Rows to choose, capped at ``n``. Fewer are chosen when every row is already a center
        (duplicate rows).
    initial : array_like of int, optional
        Warm-start rows. Duplicates and positions outside [0, n) are dropped, and at most ``budget``
        are kept. Without them the first center is a random row.
    block_size : int, optional
        Centers added per block (see the module docstring). By default 1 (exact greedy) when
        ``n * budget <= 1.25e8``, else 64.
    seed : int, default 0
        Seed of the random first center.

    Returns
    -------
    KCenterResult
    """
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    n = len(Z)
    budget = int(min(budget, n))
    initial = np.unique(np.asarray(initial if initial is not None else [], dtype=np.int64))
    initial = initial[(initial >= 0) & (initial < n)][:budget]
    norms = _row_norms(Z)
    if block_size is None:
        block_size = 1 if n * budget <= 4e9 / 32 else 64
    chosen = list(initial.tolist())
    if len(initial):
        min_dist = min_sq_dist_to(Z, Z[initial], norms)
    else:
        first = int(np.random.default_rng(seed).integers(n)) if n else 0
        chosen.append(first)
        min_dist = np.maximum(norms - 2.0 * (Z @ Z[first]) + norms[first], 0.0).astype(np.float32)
    min_dist[chosen] = 0.0
    radii: list[float] = []
    while len(chosen) < budget:
        b = min(block_size, budget - len(chosen))
        picks = _greedy_pick(Z, norms, min_dist, radii) if b == 1 else _block_picks(Z, norms, min_dist, b, radii)
        if not picks:
            break  # every row is a center already (duplicates)
        chosen.extend(picks)
        np.minimum(min_dist, min_sq_dist_to(Z, Z[picks], norms), out=min_dist)
        min_dist[picks] = 0.0
    return KCenterResult(
        indices=np.asarray(chosen, dtype=np.int64),
        radius=float(np.sqrt(min_dist.max())) if n else 0.0,
        radii=np.sqrt(np.asarray(radii, dtype=np.float64)),
        n_initial=int(len(initial)),
        distances=np.sqrt(min_dist),
    )



def _greedy_pick(Z: np.ndarray, norms: np.ndarray, min_dist: np.ndarray, radii: list[float]) -> list[int]:
    """The farthest row from the chosen centers (none when every row is a center)."""
    i = int(np.argmax(min_dist))
    radii.append(float(min_dist[i]))
    return [i] if min_dist[i] > 0.0 else []


def _block_picks(Z: np.ndarray, norms: np.ndarray, min_dist: np.ndarray, b: int, radii: list[float]) -> list[int]:
    """``b`` greedy picks made exactly among the ``4b`` farthest rows, for one update of every row after."""
    n = len(Z)
    cand = np.argpartition(min_dist, -min(4 * b, n))[-min(4 * b, n):]
    cd = min_dist[cand].copy()
    cand_norms = _row_norms(Z[cand])
    picks: list[int] = []
    for _ in range(b):
        j = int(np.argmax(cd))
        if cd[j] <= 0.0:
            break
        radii.append(float(min_dist.max()) if not picks else float(cd[j]))
        picks.append(int(cand[j]))
        dj = cand_norms - 2.0 * (Z[cand] @ Z[cand[j]]) + norms[cand[j]]
        np.minimum(cd, np.maximum(dj, 0.0), out=cd)
        cd[j] = 0.0
    return picks

def density_coverage_coreset(
    Z: np.ndarray,
    budget: int,
    *,
    density_fraction: float,
    initial: np.ndarray | None = None,
    seed: int = 0,
) -> KCenterResult:
    """A coreset that keeps the data's density and covers its fringe.

    ``density_fraction`` of the budget is a uniform random draw of the rows (warm-start
    ``initial`` rows count towards it), so dense regions keep their weight; greedy k-center then
    spends the rest on the rows farthest from everything chosen, so sparse regions and outliers
    are covered too. A pure k-center set over-represents the fringe: on Fashion-MNIST, a teacher
    fitted on it scores lower on held-out rows than one fitted on a random set of the same size
    (bench/RESULTS.md).

    Parameters
    ----------
    Z : ndarray of shape (n, d)
        The candidate rows (for example a PCA projection).
    budget : int
        Rows to choose.
    density_fraction : float
        Share of the budget drawn at random, in [0, 1].
    initial : ndarray of int, optional
        Rows to keep (a previous coreset's rows that are still present).
    seed : int
        Seed of the random draw and of k-center's first pick.

    Returns
    -------
    KCenterResult
        ``n_initial`` counts the warm-start and random rows together.

    Raises
    ------
    ValueError
        If ``density_fraction`` is not in [0, 1].
    """
    if not 0.0 <= density_fraction <= 1.0:
        raise ValueError(f"density_fraction must be in [0, 1], got {density_fraction}")
    n = len(Z)
    budget = int(min(budget, n))
    keep = np.unique(np.asarray(initial if initial is not None else [], dtype=np.int64))
    keep = keep[(keep >= 0) & (keep < n)][:budget]
    n_random = max(0, int(round(density_fraction * budget)) - len(keep))
    if n_random:
        rest = np.setdiff1d(np.arange(n), keep, assume_unique=True)
        drawn = np.random.default_rng(seed).choice(rest, size=min(n_random, len(rest)), replace=False)
        keep = np.concatenate([keep, np.sort(drawn)])
    return k_center_greedy(Z, budget, initial=keep if len(keep) else None, seed=seed)


def fit_pca_projection(X: np.ndarray, n_components: int, seed: int = 0, max_fit_rows: int = 50_000):
    """A PCA fitted on at most ``max_fit_rows`` rows (randomized SVD); returns the fitted estimator.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    n_components : int
        Components to keep; capped at ``min(d, n)``, at least 1.
    seed : int, default 0
        Seed of the row subsample and of the randomized SVD.
    max_fit_rows : int, default 50_000
        When ``n`` is larger, the PCA is fitted on this many rows drawn without replacement.

    Returns
    -------
    sklearn.decomposition.PCA
        Fitted with the randomized solver when fewer components are kept than ``min`` of the fit
        rows and ``d``, else the full SVD.
    """
    from sklearn.decomposition import PCA

    n, d = X.shape
    k = max(1, min(n_components, d, n))
    rng = np.random.default_rng(seed)
    fit = X[rng.choice(n, size=max_fit_rows, replace=False)] if n > max_fit_rows else X
    pca = PCA(n_components=k, svd_solver="randomized" if k < min(fit.shape) else "full", random_state=seed)
    pca.fit(fit)
    return pca
