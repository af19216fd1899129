"""Stratified sampling with a floor per stratum, and a held-out validation split.

Each stratum gets ``max(floor, round(rate * n_stratum))`` rows, capped at ``n_stratum``; with
``max_rows``, the rate is first lowered to ``max_rows / n`` so that a large slice's sample stays
bounded (:func:`effective_rate`). Strata are
the labels when there are any; otherwise MiniBatchKMeans clusters on a PCA projection. A fixed
fraction of every stratum's sample is marked ``validation``: those rows never train a model.
Everything is drawn from a seed derived from the partition key, so a re-run is identical.

Which rows may be validation rows is a function of each row's id alone (:func:`held_out_ids`):
a copy of a row lands in the same split whatever slice it arrives in, so a validation row is never
a training row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


def derive_seed(base_seed: int, key: str) -> int:
    """A 32-bit seed that depends on both the configured seed and the partition key.

    Parameters
    ----------
    base_seed : int
        The configured seed.
    key : str
        The partition key.

    Returns
    -------
    int
        In [0, 2**32): the first 4 bytes, little-endian, of the SHA-256 of ``f"{base_seed}:{key}"``.
    """
    digest = hashlib.sha256(f"{base_seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN, _BYTE_PRIME = np.uint64(0x9E3779B97F4A7C15), np.uint64(0x100000001B3)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every bit of ``x`` (uint64) moves every bit of the result."""
    with np.errstate(over="ignore"):
        x = x.copy()
        x ^= x >> np.uint64(30)
        x *= _MIX1
        x ^= x >> np.uint64(27)
        x *= _MIX2
        x ^= x >> np.uint64(31)
    return x


def _string_hashes(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """A 64-bit polynomial hash of each string (its bytes ``data[offsets[i]:offsets[i+1]]``), vectorised."""
    lengths = np.diff(offsets)
    n = len(lengths)
    if data.size == 0:
        return np.zeros(n, np.uint64)
    row = np.repeat(np.arange(n), lengths)
    from_end = (offsets[1:][row] - 1 - (np.arange(offsets[0], offsets[-1]))).astype(np.int64)
    powers = np.ones(int(lengths.max()), np.uint64)
    with np.errstate(over="ignore"):
        for k in range(1, len(powers)):
            powers[k] = powers[k - 1] * _BYTE_PRIME
        terms = (data[offsets[0]:offsets[-1]].astype(np.uint64) + np.uint64(1)) * powers[from_end]
    sums = np.zeros(n, np.uint64)
    np.add.at(sums, row, terms)
    with np.errstate(over="ignore"):
        return sums ^ (lengths.astype(np.uint64) * _GOLDEN)


def id_fractions(ids, salt: int = 0) -> np.ndarray:
    """A number in [0, 1) for each id, a function of the id and ``salt`` alone.

    Parameters
    ----------
    ids : pyarrow Array or ChunkedArray of int64 or string, or ndarray of int64
        Row ids.
    salt : int, default 0
        The configured seed: another salt draws another split.

    Returns
    -------
    ndarray of float64, shape (n,)
        Uniform over ids: splitmix64 of the id (integers) or of a polynomial hash of its UTF-8 bytes.
    """
    import pyarrow as pa

    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if isinstance(ids, pa.Array) and (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
        width = np.int64 if pa.types.is_large_string(ids.type) else np.int32
        _, off_buf, data_buf = ids.buffers()
        offsets = np.frombuffer(off_buf, dtype=width, count=len(ids) + 1, offset=ids.offset * np.dtype(width).itemsize)
        data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
        keys = _string_hashes(offsets.astype(np.int64), data)
    else:
        values = ids.to_numpy(zero_copy_only=False) if isinstance(ids, pa.Array) else np.asarray(ids)
        keys = values.astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        salted = _mix64(np.array([salt % (1 << 64)], dtype=np.uint64) + _GOLDEN)[0]
        mixed = _mix64(_mix64(keys ^ salted) + _GOLDEN)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def held_out_ids(ids, validation_fraction: float, salt: int = 0) -> np.ndarray:
    """Whether each row's id belongs to the validation split: ``id_fractions(ids, salt) < validation_fraction``."""
    return id_fractions(ids, salt) < validation_fraction


class ClusterStrata:
    """Strata for unlabelled rows: MiniBatchKMeans on a PCA projection.

    Fit it on a subsample, then :meth:`predict` batch by batch, so a slice never has to be in
    memory at once.

    Parameters
    ----------
    n_clusters : int, default 10
        Strata wanted; capped at the number of rows :meth:`fit` sees.
    pca_dim : int, default 16
        PCA components; capped at the number of features and at one less than the number of rows.
    seed : int, default 0
        Seed of the PCA and of MiniBatchKMeans.

    Attributes
    ----------
    n_clusters_ : int
        Strata used, after :meth:`fit`.
    pca_ : sklearn.decomposition.PCA or None
    kmeans_ : sklearn.cluster.MiniBatchKMeans or None
        Both None when ``n_clusters_ == 1``; :meth:`predict` (int64 labels of shape (n,)) then puts
        every row in stratum 0.
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
    """Positions of the seeded subsample the strata are fitted on, in draw order (every row when n is small).

    Parameters
    ----------
    n : int
        Rows in the slice.
    max_fit_rows : int
        Rows to draw, without replacement, when ``n`` is larger.
    seed : int
        Seed of the draw.

    Returns
    -------
    ndarray of int64, shape (min(n, max_fit_rows),)
    """
    if n <= max_fit_rows:
        return np.arange(n)
    return np.random.default_rng(seed).choice(n, size=max_fit_rows, replace=False)


def cluster_strata(
    X: np.ndarray, n_clusters: int = 10, pca_dim: int = 16, seed: int = 0, max_fit_rows: int = 50_000
) -> np.ndarray:
    """Strata of the rows of ``X``: :class:`ClusterStrata` fitted on a subsample of at most ``max_fit_rows``.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    n_clusters : int, default 10
        As for :class:`ClusterStrata`.
    pca_dim : int, default 16
        As for :class:`ClusterStrata`.
    seed : int, default 0
        Seed of the subsample (:func:`fit_rows`) and of the fit.
    max_fit_rows : int, default 50_000
        Most rows the strata are fitted on.

    Returns
    -------
    ndarray of int64, shape (n,)
        The stratum of each row.
    """
    model = ClusterStrata(n_clusters, pca_dim, seed).fit(X[fit_rows(len(X), max_fit_rows, seed)])
    return model.predict(X)


@dataclass
class StratifiedSample:
    """Row positions chosen from a slice, and which of them are held out for validation.

    Attributes
    ----------
    indices : ndarray of int64, shape (n_sampled,)
        Sorted row positions into the slice.
    validation : ndarray of bool, shape (n_sampled,)
        True for the rows held out for validation.
    counts : dict of str to dict of str to int
        Per stratum (``str`` of its value): ``{"rows": rows in the stratum, "sampled": rows drawn,
        "validation": drawn rows held out}``.
    n_validation : int
        Number of validation rows (read-only property).
    """

    indices: np.ndarray  # sorted row positions into the slice
    validation: np.ndarray  # bool, same length as indices
    counts: dict[str, dict[str, int]]  # stratum -> {"rows", "sampled", "validation"}

    @property
    def n_validation(self) -> int:
        return int(self.validation.sum())


def effective_rate(n_rows: int, rate: float, max_rows: int | None) -> float:
    """``rate``, lowered so that about ``max_rows`` of ``n_rows`` rows are drawn (no cap when ``None``).

    Parameters
    ----------
    n_rows : int
        Rows in the slice.
    rate : float
        The configured sampling rate, in (0, 1].
    max_rows : int or None
        The most rows to draw from one slice (before the per-stratum floors).

    Returns
    -------
    float
        The rate to draw at.

    Raises
    ------
    ValueError
        If ``max_rows < 1`` (and ``n_rows > 0``).
    """
    if max_rows is None or n_rows <= 0:
        return rate
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    return min(rate, max_rows / n_rows)


def stratum_quota(n_stratum: int, rate: float, floor: int) -> int:
    """Rows to draw from one stratum: ``max(floor, round(rate * n))``, capped at ``n``.

    Parameters
    ----------
    n_stratum : int
        Rows in the stratum (``n``).
    rate : float
        Sampling rate.
    floor : int
        Fewest rows to draw from a stratum that has them.

    Returns
    -------
    int
        ``round`` is Python's: halves go to the even neighbour.
    """
    return int(min(n_stratum, max(floor, round(rate * n_stratum))))


def stratified_sample(
    strata: np.ndarray,
    *,
    rate: float,
    floor: int = 0,
    validation_fraction: float = 0.1,
    seed: int = 0,
    held_out: np.ndarray | None = None,
) -> StratifiedSample:
    """Draw a stratified sample of row positions; see the module docstring for the rule.

    Within each stratum the rows are drawn without replacement, and a random ``validation_fraction``
    of them (rounded) is held out. With a positive fraction, a stratum that draws at least 2 rows
    holds out at least 1 and keeps at least 1 for training.

    Parameters
    ----------
    strata : array_like of shape (n,)
        Stratum of each row of the slice (labels, or :func:`cluster_strata`).
    rate : float
        Sampling rate, in (0, 1] (see :func:`effective_rate`).
    floor : int, default 0
        Fewest rows per stratum (:func:`stratum_quota`), at least 0.
    validation_fraction : float, default 0.1
        Share of each stratum's sample held out, in [0, 1).
    seed : int, default 0
        Seed of the draw, for example from :func:`derive_seed`.
    held_out : ndarray of bool, shape (n,), optional
        Rows that can only be validation rows; the others only training rows (for example
        :func:`held_out_ids`). Each stratum then draws its validation rows among the held-out ones
        and its training rows among the rest, as many as it has of each kind (the floor of one
        validation row holds when the stratum has one). Without it, the validation rows are drawn
        among the stratum's sample.

    Returns
    -------
    StratifiedSample

    Raises
    ------
    ValueError
        If ``rate`` is not in (0, 1], ``floor`` is negative, or ``validation_fraction`` is not in [0, 1).
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    if floor < 0:
        raise ValueError(f"floor must be >= 0, got {floor}")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    strata = np.asarray(strata)
    if held_out is not None and len(held_out) != len(strata):
        raise ValueError(f"held_out has {len(held_out)} rows, strata {len(strata)}")
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
        n_val = int(round(validation_fraction * quota))
        if validation_fraction > 0 and quota >= 2:
            n_val = min(max(n_val, 1), quota - 1)
        if held_out is None:
            picked = rng.choice(members, size=quota, replace=False)
        else:
            picked, n_val = _draw_by_split(rng, members, held_out[members], quota, n_val)
        chosen.append(picked)
        flags = np.zeros(quota, dtype=bool)
        flags[:n_val] = True  # picked is already in random order
        held.append(flags)
        counts[str(value)] = {"rows": int(len(members)), "sampled": int(quota), "validation": n_val}
    indices = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    validation = np.concatenate(held) if held else np.empty(0, dtype=bool)
    sort = np.argsort(indices, kind="stable")
    return StratifiedSample(indices=indices[sort].astype(np.int64), validation=validation[sort], counts=counts)


def _draw_by_split(rng: np.random.Generator, members: np.ndarray, held: np.ndarray, quota: int,
                   n_val: int) -> tuple[np.ndarray, int]:
    """``quota`` of ``members``: ``n_val`` among the held-out ones first, the rest among the others,
    each kind making up for the other's shortfall; the validation rows first, and how many."""
    validation, training = members[held], members[~held]
    n_val = min(n_val, len(validation))
    n_train = min(quota - n_val, len(training))
    n_val = min(quota - n_train, len(validation))
    picked = np.concatenate([rng.choice(validation, size=n_val, replace=False),
                             rng.choice(training, size=n_train, replace=False)])
    return picked, n_val
