import numpy as np

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
