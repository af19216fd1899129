import numpy as np
import pytest

from umap_assets.numerics.coreset import k_center_greedy, min_sq_dist_to


def _data(n=2000, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d)).astype(np.float32)


def _radius(Z, idx):
    return float(np.sqrt(min_sq_dist_to(Z, Z[idx]).max()))


def test_radius_matches_brute_force_and_never_grows_with_budget():
    Z = _data()
    radii = []
    for budget in (5, 20, 80, 200):
        r = k_center_greedy(Z, budget, seed=1)
        assert len(r.indices) == budget and len(np.unique(r.indices)) == budget
        brute = np.sqrt(((Z[:, None, :] - Z[r.indices][None]) ** 2).sum(-1).min(1).max())
        assert abs(r.radius - brute) < 1e-3 * brute
        radii.append(r.radius)
        assert np.all(np.diff(r.radii) <= 1e-5), "radius before each pick is non-increasing"
    assert radii == sorted(radii, reverse=True)
    # same seed, larger budget: the smaller coreset is a prefix (the greedy order is stable)
    a, b = k_center_greedy(Z, 20, seed=1), k_center_greedy(Z, 80, seed=1)
    assert np.array_equal(a.indices, b.indices[:20])


def test_greedy_is_a_2_approximation_witness():
    # on well separated clusters, k centers hit every cluster
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 50, size=(8, 3))
    labels = rng.integers(0, 8, size=1600)
    Z = (centres[labels] + rng.normal(size=(1600, 3))).astype(np.float32)
    r = k_center_greedy(Z, 8)
    assert len(set(labels[r.indices])) == 8


def test_warm_start_keeps_earlier_picks():
    Z = _data(3000)
    first = k_center_greedy(Z[:2000], 50, seed=0)
    r = k_center_greedy(Z, 120, initial=first.indices)
    assert r.n_initial == 50
    assert np.array_equal(r.indices[:50], np.sort(first.indices))
    assert len(np.unique(r.indices)) == 120
    assert r.radius <= first.radius + 1e-6 or r.radius <= _radius(Z, first.indices)


def test_block_mode_covers_about_as_well_as_exact():
    Z = _data(5000, 8)
    exact = k_center_greedy(Z, 300, block_size=1)
    block = k_center_greedy(Z, 300, block_size=32)
    assert len(np.unique(block.indices)) == 300
    assert block.radius <= 1.25 * exact.radius
    assert abs(block.radius - _radius(Z, block.indices)) < 1e-3


def test_budget_larger_than_data_and_duplicates():
    Z = np.zeros((10, 2), dtype=np.float32)
    Z[5:] = 1.0
    r = k_center_greedy(Z, 50)
    assert r.radius == 0.0 and len(r.indices) <= 10


def test_density_coverage_coreset_keeps_density_and_covers_outliers():
    from umap_assets.numerics.coreset import density_coverage_coreset, k_center_greedy

    rng = np.random.default_rng(0)
    dense = rng.normal(0, 1, size=(2000, 2)).astype(np.float32)
    outliers = rng.uniform(20, 30, size=(20, 2)).astype(np.float32)
    Z = np.concatenate([dense, outliers])
    mixed = density_coverage_coreset(Z, 200, density_fraction=0.7, seed=1)
    pure = k_center_greedy(Z, 200, seed=1)
    assert len(mixed.indices) == 200 and len(np.unique(mixed.indices)) == 200
    # k-center alone spends a tenth of its budget on 1% of the rows and spreads the rest evenly;
    # the mix keeps the dense core's share close to the data's
    assert (pure.indices >= 2000).sum() >= 19
    core = np.linalg.norm(Z, axis=1) < 1.0
    share = core[:2000].mean()
    assert core[pure.indices].mean() < 0.4 * share < 0.55 * share < core[mixed.indices].mean()
    assert (mixed.indices >= 2000).sum() >= 15  # the fringe is still covered
    assert mixed.radius <= 1.5 * pure.radius
    # warm-start rows are kept and count towards the random share; the draw is seeded
    warm = density_coverage_coreset(Z, 200, density_fraction=0.7, initial=np.arange(50), seed=1)
    assert set(range(50)) <= set(warm.indices.tolist())
    assert np.array_equal(density_coverage_coreset(Z, 200, density_fraction=0.7, seed=1).indices, mixed.indices)
    with pytest.raises(ValueError, match="density_fraction"):
        density_coverage_coreset(Z, 10, density_fraction=1.5)
