import numpy as np
import pytest

from umap_assets.numerics import metrics


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(300, 5)).astype(np.float32)


def test_identity_map_is_perfect():
    X = _data()
    assert metrics.trustworthiness(X, X, 10) > 0.9999
    assert metrics.continuity(X, X, 10) > 0.9999
    assert metrics.knn_recall(X, X, 10) == 1.0
    assert metrics.knn_overlap(X, X * 3 + 1, 10) == 1.0  # similarity transforms keep neighbours
    assert metrics.distance_spearman(X, X * 2) > 0.9999
    assert metrics.relative_displacement(X, X) == 0.0


def test_random_map_is_poor():
    X = _data()
    E = np.random.default_rng(1).normal(size=(300, 2))
    assert metrics.trustworthiness(X, E, 10) < 0.6
    assert metrics.knn_recall(X, E, 10) < 0.1
    assert abs(metrics.distance_spearman(X, E)) < 0.1


def test_knn_accuracy_and_displacement_known_answers():
    E = np.array([[0, 0], [0, 1], [10, 10], [10, 11]], dtype=float)
    y = np.array([0, 0, 1, 1])
    assert metrics.knn_accuracy(E, y, E + 0.1, y, k=1) == 1.0
    ref = np.array([[0.0, 0.0], [2.0, 0.0]])
    # spread = RMS distance to the centroid = 1; every point moved by 0.5
    assert abs(metrics.relative_displacement(ref, ref + [0.0, 0.5]) - 0.5) < 1e-12
    three = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # spread sqrt(2/3); moves 0, 0.1, 3
    moved = three + [[0.0, 0.0], [0.0, 0.1], [0.0, 3.0]]
    spread = np.sqrt(2 / 3)
    assert abs(metrics.relative_displacement(three, moved, statistic="median") - 0.1 / spread) < 1e-12
    assert abs(metrics.relative_displacement(three, moved) - (3.1 / 3) / spread) < 1e-12
    with pytest.raises(ValueError, match="statistic"):
        metrics.relative_displacement(three, moved, statistic="max")


def test_set_overlap_counts_shared_neighbours():
    a = np.array([[1, 2, 3], [0, 2, 3]])
    b = np.array([[3, 2, 9], [7, 8, 9]])
    assert metrics.set_overlap(a, b) == (2 / 3 + 0) / 2


def test_subsample_is_seeded_and_bounded():
    assert np.array_equal(metrics.subsample(50, 100), np.arange(50))
    s = metrics.subsample(100_000, 10_000, seed=3)
    assert len(s) == 10_000 and np.array_equal(s, metrics.subsample(100_000, 10_000, seed=3))


def test_blocked_trustworthiness_equals_scikit_learn():
    from sklearn.manifold import trustworthiness as sk_trustworthiness

    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 12))
    E = X[:, :2] + rng.normal(scale=0.5, size=(400, 2))  # a lossy but informative map
    for k in (5, 15):
        # a tiny working memory forces many row blocks
        ours = metrics.trustworthiness(X, E, k, working_memory=1)
        assert abs(ours - sk_trustworthiness(X, E, n_neighbors=k)) < 1e-12
        assert abs(metrics.continuity(X, E, k) - sk_trustworthiness(E, X, n_neighbors=k)) < 1e-12


def _trustworthiness_by_full_sort(X, E, k):
    """The textbook definition with a full, stable sort of every row's distances."""
    from scipy.spatial.distance import cdist

    n = len(X)
    D = cdist(X, X)
    np.fill_diagonal(D, np.inf)
    rank = np.empty((n, n), dtype=np.int64)
    rank[np.arange(n)[:, None], np.argsort(D, axis=1, kind="stable")] = np.arange(1, n + 1)
    nbrs = metrics.knn_indices(E, k)
    penalty = np.maximum(np.take_along_axis(rank, nbrs, axis=1) - k, 0).sum()
    return 1 - 2 * penalty / (n * k * (2 * n - 3 * k - 1))


def test_blocked_trustworthiness_ranks_ties_like_a_stable_sort():
    rng = np.random.default_rng(4)
    X = rng.integers(0, 3, size=(120, 4)).astype(float)  # many equal distances and duplicate rows
    E = X[:, :2] + rng.normal(scale=0.3, size=(120, 2))
    ours = metrics.trustworthiness(X, E, 7, working_memory=1)
    assert abs(ours - _trustworthiness_by_full_sort(X, E, 7)) < 1e-12


def test_row_scores_average_to_trustworthiness_and_rank_rows():
    X = _data()
    E = X[:, :2].copy()
    E[:30] = np.random.default_rng(2).normal(size=(30, 2)) * 3  # scramble 30 rows
    k = 10
    p = metrics.trustworthiness_penalties(X, E, k)
    rows = metrics.trustworthiness_row_scores(p, k)
    assert np.isclose(rows.mean(), metrics.trustworthiness(X, E, k))
    assert rows[:30].mean() < rows[30:].mean()  # the scrambled rows score worse


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_rows():
    rng = np.random.default_rng(3)
    small, large = rng.normal(0.5, 1.0, size=100), rng.normal(0.5, 1.0, size=10_000)
    lo_s, hi_s = metrics.bootstrap_interval(small, seed=1)
    lo_l, hi_l = metrics.bootstrap_interval(large, seed=1)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5
    assert metrics.bootstrap_interval(small, seed=1) == (lo_s, hi_s)  # seeded
    assert np.isnan(metrics.bootstrap_interval(np.array([]))[0])


def test_knn_correct_matches_accuracy():
    E = np.array([[0, 0], [0, 1], [10, 10], [10, 11]], dtype=float)
    y = np.array([0, 0, 1, 1])
    correct = metrics.knn_correct(E, y, np.array([[0, 0.5], [10, 10.5]]), np.array([0, 0]), k=2)
    assert correct.tolist() == [True, False]


def test_shared_neighbourhood_pass_equals_each_metric_alone():
    rng = np.random.default_rng(5)
    X = rng.integers(0, 4, size=(300, 10)).astype(float)  # equal distances too
    maps = {"good": X[:, :2] + rng.normal(scale=0.2, size=(300, 2)), "poor": rng.normal(size=(300, 2))}
    got = metrics.neighbourhood_scores(X, maps, k=12, k_small=5)
    for name, E in maps.items():
        assert np.array_equal(got[name]["trust_penalties"], metrics.trustworthiness_penalties(X, E, 12))
        assert got[name]["trustworthiness"] == metrics.trustworthiness(X, E, 12)
        assert got[name]["trustworthiness@5"] == metrics.trustworthiness(X, E, 5)
        assert got[name]["continuity"] == metrics.continuity(X, E, 12)
        assert got[name]["knn_recall"] == metrics.knn_recall(X, E, 12)
    assert got["good"]["trustworthiness"] > got["poor"]["trustworthiness"] + 0.1
