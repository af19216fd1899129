"""Quality metrics for an embedding, each on a seeded subsample of at most 10k rows.

* trustworthiness (scikit-learn's value, computed in row blocks) and continuity (the same with
  the two spaces swapped), at k;
* kNN recall@k: the mean fraction of each row's high-dimensional neighbours kept in the map;
* kNN classifier accuracy in the map (fit on training rows, scored on held-out rows);
* Spearman correlation of distances over random pairs;
* agreement of two maps: overlap of their kNN sets, and mean displacement relative to the spread.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import pairwise_distances_chunked
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors


def subsample(n: int, max_rows: int = 10_000, seed: int = 0) -> np.ndarray:
    """Sorted row positions of a seeded subsample (all rows when ``n <= max_rows``).

    Parameters
    ----------
    n : int
        Number of rows.
    max_rows : int, default 10_000
        Rows to draw, without replacement, when ``n`` is larger.
    seed : int, default 0
        Seed of the draw.

    Returns
    -------
    ndarray of int64, shape (min(n, max_rows),)
    """
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def rank_penalties(X: np.ndarray, neighbour_sets: list[np.ndarray], *, working_memory: int = 64) -> list[np.ndarray]:
    """Each row's penalty for each set of neighbours: how far past ``k`` they rank among its nearest rows in ``X``.

    The penalty of a row is the sum over its ``k`` given neighbours of ``max(rank - k, 0)``, where
    ``rank`` (1-based) orders the other rows by their distance in ``X``; equal distances are ranked
    by row index, as a stable sort would. With the neighbours of a map this is the trustworthiness
    penalty; with the input's own neighbours and the map as ``X``, the continuity penalty. Several
    sets (maps, or values of ``k``) share one pass over the distances.

    The distances are computed and sorted in blocks of rows
    (``sklearn.metrics.pairwise_distances_chunked``), so memory stays near ``working_memory`` MiB.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The space the ranks are taken in.
    neighbour_sets : list of ndarray of int, each of shape (n, k_i)
        Each row's neighbours (row positions, not the row itself), one array per set.
    working_memory : int, default 64
        Memory for one block of distances, in MiB.

    Returns
    -------
    list of ndarray of int64, shape (n,)
        One per set, in order.
    """
    n = len(X)
    columns = np.arange(n)
    widths = [s.shape[1] for s in neighbour_sets]
    cuts = np.cumsum(widths)[:-1]

    def block(D: np.ndarray, start: int) -> np.ndarray:
        rows = np.arange(len(D))
        D[rows, start + rows] = np.inf  # a row is not its own neighbour
        nbrs = np.concatenate([s[start : start + len(D)] for s in neighbour_sets], axis=1)
        d = np.take_along_axis(D, nbrs, axis=1)
        S = np.sort(D, axis=1)
        below, equal = np.empty_like(nbrs), np.empty_like(nbrs)
        for i in range(len(D)):
            below[i] = np.searchsorted(S[i], d[i], "left")
            equal[i] = np.searchsorted(S[i], d[i], "right") - below[i]
        rank = below + 1
        for i, j in zip(*np.nonzero(equal > 1)):  # ties: the ones with a lower row index rank first
            rank[i, j] += int(((D[i] == d[i, j]) & (columns < nbrs[i, j])).sum())
        return np.stack([np.maximum(r - k, 0).sum(axis=1) for r, k in zip(np.split(rank, cuts, axis=1), widths)], 1)

    blocks = list(pairwise_distances_chunked(X, reduce_func=block, working_memory=working_memory))
    out = np.concatenate(blocks).astype(np.int64)
    return [out[:, i] for i in range(len(neighbour_sets))]


def trustworthiness_penalties(X: np.ndarray, E: np.ndarray, k: int = 15, *, working_memory: int = 64) -> np.ndarray:
    """Each row's trustworthiness penalty.

    The penalty is the sum over the row's ``k`` map neighbours of how far past ``k`` they rank
    among its true neighbours (0 when every map neighbour is a true neighbour); see
    :func:`rank_penalties`, which computes it in row blocks and ranks equal distances by row index
    (scikit-learn leaves their order to its sort).

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The rows in the input space.
    E : ndarray of shape (n, m)
        The same rows on the map.
    k : int, default 15
        Neighbourhood size, ``0 < k < n / 2``.
    working_memory : int, default 64
        Memory for one block of distances, in MiB.

    Returns
    -------
    ndarray of int64, shape (n,)

    Raises
    ------
    ValueError
        If ``k`` is not in (0, n / 2).
    """
    check_k(len(X), k)
    return rank_penalties(X, [knn_indices(E, k)], working_memory=working_memory)[0]


def check_k(n: int, k: int) -> None:
    """Check a neighbourhood size for trustworthiness, which is defined for ``0 < k < n / 2``.

    Parameters
    ----------
    n : int
        Rows.
    k : int
        Neighbours.

    Raises
    ------
    ValueError
        Unless ``0 < k < n / 2``.
    """
    if not 0 < k < n / 2:
        raise ValueError(f"k must be in (0, n/2) for n={n} rows, got {k}")


def trustworthiness_row_scores(penalties: np.ndarray, k: int) -> np.ndarray:
    """Per-row trustworthiness: their mean over the ``n`` rows is the trustworthiness.

    Lets a subset (one class, one region) or a bootstrap resample be scored against the
    neighbourhoods of the whole set.

    Parameters
    ----------
    penalties : ndarray of shape (n,)
        Per-row penalties from :func:`trustworthiness_penalties`.
    k : int
        The neighbourhood size they were computed with.

    Returns
    -------
    ndarray of float64, shape (n,)
        ``1 - penalties * 2 / (k * (2n - 3k - 1))``.
    """
    n = len(penalties)
    return 1.0 - penalties * (2.0 / (k * (2.0 * n - 3.0 * k - 1.0)))


def trustworthiness_from_penalties(penalties: np.ndarray, k: int) -> float:
    """Venna and Kaski's trustworthiness of ``n`` rows from their per-row penalties.

    Parameters
    ----------
    penalties : ndarray of shape (n,)
        Per-row penalties from :func:`trustworthiness_penalties`.
    k : int
        The neighbourhood size they were computed with.

    Returns
    -------
    float
        Trustworthiness in [0, 1].
    """
    return float(trustworthiness_row_scores(penalties, k).mean())


def trustworthiness(X: np.ndarray, E: np.ndarray, k: int = 15, *, working_memory: int = 64) -> float:
    """How far the map's neighbours are from being true neighbours (1 = all are).

    Venna and Kaski's measure, the value of :func:`sklearn.manifold.trustworthiness`, computed in
    row blocks by :func:`trustworthiness_penalties`.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The rows in the input space.
    E : ndarray of shape (n, m)
        The same rows on the map.
    k : int
        Neighbourhood size, ``0 < k < n / 2``.
    working_memory : int, default 64
        Memory for one block of distances, in MiB.

    Returns
    -------
    float
        Trustworthiness in [0, 1].

    Raises
    ------
    ValueError
        If ``k`` is not in (0, n / 2).
    """
    return trustworthiness_from_penalties(trustworthiness_penalties(X, E, k, working_memory=working_memory), k)


def continuity(X: np.ndarray, E: np.ndarray, k: int = 15) -> float:
    """How many true neighbours the map keeps close (trustworthiness with the roles swapped).

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The rows in the input space.
    E : ndarray of shape (n, m)
        The same rows on the map.
    k : int, default 15
        Neighbourhood size, ``0 < k < n / 2``.

    Returns
    -------
    float
        Continuity in [0, 1].

    Raises
    ------
    ValueError
        If ``k`` is not in (0, n / 2).
    """
    return trustworthiness(E, X, k)


def neighbourhood_scores(X: np.ndarray, maps: dict[str, np.ndarray], k: int = 15, k_small: int = 5) -> dict[str, dict]:
    """Trustworthiness at ``k`` and ``k_small``, continuity and kNN recall of several maps of the same rows.

    The same values as :func:`trustworthiness`, :func:`continuity` and :func:`knn_recall`, for a
    fraction of the cost: the input's distances are computed and sorted once for every map and both
    values of ``k``, and its kNN once.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The rows in the input space.
    maps : dict of str to ndarray of shape (n, m)
        Maps of the same rows, by name.
    k : int, default 15
        Neighbourhood size, ``0 < k < n / 2``.
    k_small : int, default 5
        The second neighbourhood size for trustworthiness (capped at ``k``).

    Returns
    -------
    dict of str to dict
        For each map: ``"trust_penalties"`` (per-row penalties at ``k``, for
        :func:`trustworthiness_row_scores`), ``"trustworthiness"``, ``"trustworthiness@5"`` (at
        ``k_small``), ``"continuity"`` and ``"knn_recall"``.
    """
    check_k(len(X), k)
    k_small = min(k_small, k)
    near = {name: knn_indices(E, k) for name, E in maps.items()}
    sets = [s for name in maps for s in (near[name], near[name][:, :k_small])]
    penalties = rank_penalties(X, sets)
    true_near = knn_indices(X, k)
    out = {}
    for i, (name, E) in enumerate(maps.items()):
        p_k, p_small = penalties[2 * i], penalties[2 * i + 1]
        out[name] = {"trust_penalties": p_k, "trustworthiness": trustworthiness_from_penalties(p_k, k),
                     "trustworthiness@5": trustworthiness_from_penalties(p_small, k_small),
                     "continuity": trustworthiness_from_penalties(rank_penalties(E, [true_near])[0], k),
                     "knn_recall": set_overlap(true_near, near[name])}
    return out


def knn_indices(A: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` nearest other rows (Euclidean), nearest first.

    Parameters
    ----------
    A : ndarray of shape (n, d)
    k : int
        Neighbours per row, less than ``n``.

    Returns
    -------
    ndarray of int64, shape (n, k)
        Row positions into ``A``; a row is not its own neighbour.
    """
    nn = NearestNeighbors(n_neighbors=k + 1).fit(A)
    idx = nn.kneighbors(A, return_distance=False)
    return _drop_self(idx, k)


def _drop_self(idx: np.ndarray, k: int) -> np.ndarray:
    rows = np.arange(len(idx))[:, None]
    mask = idx != rows
    out = np.empty((len(idx), k), dtype=idx.dtype)
    for i in range(len(idx)):
        out[i] = idx[i][mask[i]][:k]
    return out


def set_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean fraction of shared entries between matching rows of two neighbour-index arrays.

    Parameters
    ----------
    a, b : ndarray of shape (n, k)
        Neighbour indices, unique within each row (as from :func:`knn_indices`).

    Returns
    -------
    float
        In [0, 1].
    """
    k = a.shape[1]
    return float(np.mean([len(np.intersect1d(x, y, assume_unique=True)) / k for x, y in zip(a, b)]))


def knn_recall(X: np.ndarray, E: np.ndarray, k: int = 15) -> float:
    """kNN recall@k: the mean fraction of each row's high-dimensional neighbours kept in the map.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The rows in the input space.
    E : ndarray of shape (n, m)
        The same rows on the map.
    k : int, default 15
        Neighbours per row.

    Returns
    -------
    float
        In [0, 1].
    """
    return set_overlap(knn_indices(X, k), knn_indices(E, k))


def knn_overlap(E1: np.ndarray, E2: np.ndarray, k: int = 15) -> float:
    """Agreement of two maps of the same rows: overlap of their kNN sets.

    Parameters
    ----------
    E1, E2 : ndarray of shape (n, m)
        Two maps of the same rows, in the same order.
    k : int, default 15
        Neighbours per row.

    Returns
    -------
    float
        Mean fraction of shared neighbours, in [0, 1].
    """
    return set_overlap(knn_indices(E1, k), knn_indices(E2, k))


def knn_correct(E_train: np.ndarray, y_train: np.ndarray, E_test: np.ndarray, y_test: np.ndarray, k: int = 10) -> np.ndarray:
    """Whether a k-NN classifier fitted on the training rows' map labels each test row right.

    Parameters
    ----------
    E_train : ndarray of shape (n_train, m)
        Training rows on the map.
    y_train : array_like of shape (n_train,)
        Their labels.
    E_test : ndarray of shape (n_test, m)
        Held-out rows on the map.
    y_test : array_like of shape (n_test,)
        Their labels.
    k : int, default 10
        Neighbours of the classifier, capped at ``n_train``.

    Returns
    -------
    ndarray of bool, shape (n_test,)
    """
    clf = KNeighborsClassifier(n_neighbors=min(k, len(E_train))).fit(E_train, y_train)
    return clf.predict(E_test) == np.asarray(y_test)


def knn_accuracy(E_train: np.ndarray, y_train: np.ndarray, E_test: np.ndarray, y_test: np.ndarray, k: int = 10) -> float:
    """Accuracy of a k-NN classifier in the map: fitted on training rows, scored on held-out rows.

    Parameters
    ----------
    E_train, y_train, E_test, y_test, k
        As for :func:`knn_correct`.

    Returns
    -------
    float
        Fraction of test rows labelled right, in [0, 1].
    """
    return float(knn_correct(E_train, y_train, E_test, y_test, k).mean())


def bootstrap_interval(values: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-row ``values``, resampling rows.

    Parameters
    ----------
    values : ndarray of shape (n,)
        One value per row, for example the per-row difference of two maps' scores (a paired
        bootstrap).
    n_boot : int
        Number of resamples.
    level : float
        Coverage of the interval.
    seed : int
        Seed of the resampling.

    Returns
    -------
    (low, high) : tuple of float
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 100):  # 100 resamples at a time bounds the index matrix
        stop = min(start + 100, n_boot)
        means[start:stop] = values[rng.integers(0, len(values), size=(stop - start, len(values)))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def distance_spearman(X: np.ndarray, E: np.ndarray, n_pairs: int = 50_000, seed: int = 0) -> float:
    """Spearman correlation of input-space and map distances over random pairs of rows.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The rows in the input space.
    E : ndarray of shape (n, m)
        The same rows on the map.
    n_pairs : int, default 50_000
        Pairs drawn with replacement; pairs of a row with itself are dropped.
    seed : int, default 0
        Seed of the pairs.

    Returns
    -------
    float
        Spearman's rho of the Euclidean distances, in [-1, 1].
    """
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(X), size=n_pairs)
    j = rng.integers(0, len(X), size=n_pairs)
    keep = i != j
    dx = np.linalg.norm(X[i[keep]] - X[j[keep]], axis=1)
    de = np.linalg.norm(E[i[keep]] - E[j[keep]], axis=1)
    return float(spearmanr(dx, de).statistic)


def relative_displacement(E_ref: np.ndarray, E: np.ndarray, statistic: str = "mean") -> float:
    """Mean (or median) distance between matching points of two maps, over the RMS spread of the reference map.

    Parameters
    ----------
    E_ref : ndarray of shape (n, m)
        The reference map.
    E : ndarray of shape (n, m)
        A map of the same rows, in the same order.
    statistic : {"mean", "median"}, default "mean"
        How the rows' distances are summarised.

    Returns
    -------
    float
        The mean or median Euclidean distance between matching rows, divided by the root mean
        squared distance of ``E_ref``'s rows to their centroid; 0.0 when that spread is 0.

    Raises
    ------
    ValueError
        For another ``statistic``.
    """
    summary = {"mean": np.mean, "median": np.median}.get(statistic)
    if summary is None:
        raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
    spread = float(np.sqrt(((E_ref - E_ref.mean(0)) ** 2).sum(1).mean()))
    return float(summary(np.linalg.norm(E - E_ref, axis=1)) / spread) if spread else 0.0
