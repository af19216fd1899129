"""Stratified sampling with a floor per stratum, and a held-out validation split.

Each stratum gets ``max(floor, round(rate * n_stratum))`` rows, capped at ``n_stratum``. Strata are
the labels when there are any; otherwise MiniBatchKMeans clusters on a PCA projection. A fixed
fraction of every stratum's sample is marked ``validation``: those rows never train a model.
Everything is drawn from a seed derived from the partition key, so a re-run is identical.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


def derive_seed(base_seed: int, key: str) -> int:
    """A 32-bit seed that depends on both the configured seed and the partition key."""
    digest = hashlib.sha256(f"{base_seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class ClusterStrata:
    """Strata for unlabelled rows: MiniBatchKMeans on a PCA projection.

    Fit it on a subsample, then :meth:`predict` batch by batch, so a slice never has to be in
    memory at once.
    """

    def __init__(self, n_clusters: int = 10, pca_dim: int = 16, seed: int = 0):
        self.n_clusters = n_clusters
        self.pca_dim = pca_dim
        self.seed = seed

    def fit(self, X: np.ndarray) -> ClusterStrata:
        from sklearn.cluster import MiniBatchKMeans
        from sklearn.decomposition import PCA

        n = X.shape[0]
        self.n_clusters_ = max(1, min(self.n_clusters, n))
        self.pca_ = self.kmeans_ = None
        if self.n_clusters_ == 1:
            return self
        n_comp = max(1, min(self.pca_dim, X.shape[1], n - 1))
        self.pca_ = PCA(n_components=n_comp, random_state=self.seed,
                        svd_solver="randomized" if n_comp < X.shape[1] else "full").fit(X)
        self.kmeans_ = MiniBatchKMeans(n_clusters=self.n_clusters_, random_state=self.seed, n_init=3, batch_size=4096)
        self.kmeans_.fit(self.pca_.transform(X).astype(np.float32))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.kmeans_ is None:
            return np.zeros(X.shape[0], dtype=np.int64)
        return self.kmeans_.predict(self.pca_.transform(X).astype(np.float32)).astype(np.int64)


def fit_rows(n: int, max_fit_rows: int, seed: int) -> np.ndarray:
    """Positions of the seeded subsample the strata are fitted on, in draw order (every row when n is small)."""
    if n <= max_fit_rows:
        return np.arange(n)
    return np.random.default_rng(seed).choice(n, size=max_fit_rows, replace=False)


def cluster_strata(
    X: np.ndarray, n_clusters: int = 10, pca_dim: int = 16, seed: int = 0, max_fit_rows: int = 50_000
) -> np.ndarray:
    """Strata of the rows of ``X``: :class:`ClusterStrata` fitted on a subsample of at most ``max_fit_rows``."""
    model = ClusterStrata(n_clusters, pca_dim, seed).fit(X[fit_rows(len(X), max_fit_rows, seed)])
    return model.predict(X)


@dataclass
class StratifiedSample:
    """Row positions chosen from a slice, and which of them are held out for validation."""

    indices: np.ndarray  # sorted row positions into the slice
    validation: np.ndarray  # bool, same length as indices
    counts: dict[str, dict[str, int]]  # stratum -> {"rows", "sampled", "validation"}

    @property
    def n_validation(self) -> int:
        return int(self.validation.sum())


def stratum_quota(n_stratum: int, rate: float, floor: int) -> int:
    """``max(floor, round(rate * n))``, capped at ``n``."""
    return int(min(n_stratum, max(floor, round(rate * n_stratum))))


def stratified_sample(
    strata: np.ndarray,
    *,
    rate: float,
    floor: int = 0,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> StratifiedSample:
    """Draw a stratified sample of row positions; see the module docstring for the rule."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    if floor < 0:
        raise ValueError(f"floor must be >= 0, got {floor}")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    values, inverse = np.unique(strata, return_inverse=True)
    chosen: list[np.ndarray] = []
    held: list[np.ndarray] = []
    counts: dict[str, dict[str, int]] = {}
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(values) + 1))
    for s, value in enumerate(values):
        members = order[bounds[s] : bounds[s + 1]]
        quota = stratum_quota(len(members), rate, floor)
        picked = rng.choice(members, size=quota, replace=False)
        n_val = int(round(validation_fraction * quota))
        if validation_fraction > 0 and quota >= 2:
            n_val = min(max(n_val, 1), quota - 1)
        chosen.append(picked)
        flags = np.zeros(quota, dtype=bool)
        flags[:n_val] = True  # picked is already in random order
        held.append(flags)
        counts[str(value)] = {"rows": int(len(members)), "sampled": int(quota), "validation": n_val}
    indices = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    validation = np.concatenate(held) if held else np.empty(0, dtype=bool)
    sort = np.argsort(indices, kind="stable")
    return StratifiedSample(indices=indices[sort].astype(np.int64), validation=validation[sort], counts=counts)
