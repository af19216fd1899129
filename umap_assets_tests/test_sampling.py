import numpy as np
import pytest

from umap_assets.numerics.sampling import cluster_strata, derive_seed, effective_rate, stratified_sample, stratum_quota


def test_quota_rule_floor_and_cap():
    assert stratum_quota(1000, 0.1, 20) == 100
    assert stratum_quota(100, 0.1, 20) == 20  # the floor wins for a small stratum
    assert stratum_quota(7, 0.1, 20) == 7  # capped at the stratum size
    assert stratum_quota(0, 0.5, 3) == 0


def test_stratified_counts_follow_the_rule():
    strata = np.array([0] * 1000 + [1] * 100 + [2] * 5)
    s = stratified_sample(strata, rate=0.1, floor=20, validation_fraction=0.2, seed=1)
    assert s.counts["0"]["sampled"] == 100
    assert s.counts["1"]["sampled"] == 20
    assert s.counts["2"]["sampled"] == 5  # the rare class survives whole
    chosen = strata[s.indices]
    assert (chosen == 0).sum() == 100 and (chosen == 1).sum() == 20 and (chosen == 2).sum() == 5
    assert np.all(np.diff(s.indices) > 0), "indices are sorted and unique"
    assert s.counts["0"]["validation"] == 20
    # every stratum with >= 2 rows keeps at least one row on each side of the split
    for value in (0, 1, 2):
        flags = s.validation[chosen == value]
        assert flags.any() and (~flags).any()


def test_deterministic_for_seed_and_different_across_seeds():
    strata = np.repeat(np.arange(4), 250)
    a = stratified_sample(strata, rate=0.2, floor=5, seed=7)
    b = stratified_sample(strata, rate=0.2, floor=5, seed=7)
    c = stratified_sample(strata, rate=0.2, floor=5, seed=8)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.validation, b.validation)
    assert not np.array_equal(a.indices, c.indices)


def test_derive_seed_depends_on_key():
    assert derive_seed(0, "a") == derive_seed(0, "a")
    assert derive_seed(0, "a") != derive_seed(0, "b")
    assert derive_seed(0, "a") != derive_seed(1, "a")


@pytest.mark.parametrize("kwargs", [{"rate": 0.0}, {"rate": 1.5}, {"rate": 0.5, "floor": -1},
                                    {"rate": 0.5, "validation_fraction": 1.0}])
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        stratified_sample(np.zeros(10), **kwargs)


def test_cluster_strata_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 20, size=(3, 10))
    truth = rng.integers(0, 3, size=600)
    X = (centres[truth] + rng.normal(0, 1, size=(600, 10))).astype(np.float32)
    strata = cluster_strata(X, n_clusters=3, pca_dim=4, seed=0)
    # the clustering agrees with the truth up to a relabelling
    for c in range(3):
        assert len(np.unique(strata[truth == c])) == 1
    assert len(np.unique(strata)) == 3
    assert np.array_equal(strata, cluster_strata(X, n_clusters=3, pca_dim=4, seed=0))


def test_effective_rate_bounds_a_large_slice():
    assert effective_rate(10_000, 1.0, 20_000) == 1.0  # a small slice keeps the configured rate
    assert effective_rate(100_000, 1.0, 20_000) == pytest.approx(0.2)
    assert effective_rate(100_000, 0.1, 20_000) == pytest.approx(0.1)  # the rate is only ever lowered
    assert effective_rate(100_000, 0.5, None) == 0.5
    strata = np.repeat(np.arange(4), 25_000)
    s = stratified_sample(strata, rate=effective_rate(len(strata), 1.0, 20_000), seed=0)
    assert len(s.indices) == 20_000
    with pytest.raises(ValueError, match="max_rows"):
        effective_rate(10, 1.0, 0)
