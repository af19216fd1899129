"""Similarity fits, anchored targets and the fold of an alignment into a student."""

import numpy as np
import pytest

from umap_assets.numerics.align import Similarity, align_student, anchored_targets, fit_similarity
from umap_assets.numerics.distill import StudentConfig, train_student


def rotation(angle: float, mirrored: bool = False) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    R = np.array([[c, s], [-s, c]])
    return R @ np.diag([1.0, -1.0]) if mirrored else R


@pytest.mark.parametrize("mirrored", [False, True])
def test_fit_similarity_recovers_a_known_transform(mirrored):
    rng = np.random.default_rng(0)
    source = rng.normal(size=(200, 2))
    truth = Similarity(2.5, rotation(0.7, mirrored), np.array([3.0, -1.0]))
    fitted = fit_similarity(source, truth.apply(source))
    assert fitted.scale == pytest.approx(2.5, rel=1e-5)
    np.testing.assert_allclose(fitted.rotation, truth.rotation, atol=1e-5)
    np.testing.assert_allclose(fitted.translation, truth.translation, atol=1e-4)
    np.testing.assert_allclose(fitted.inverse().apply(truth.apply(source)), source, atol=1e-4)


def test_fit_similarity_without_scale_is_rigid_and_least_squares():
    rng = np.random.default_rng(1)
    source = rng.normal(size=(300, 2))
    target = 3.0 * source @ rotation(-0.4) + rng.normal(scale=0.05, size=source.shape)
    rigid = fit_similarity(source, target, with_scale=False)
    assert rigid.scale == 1.0
    np.testing.assert_allclose(rigid.rotation @ rigid.rotation.T, np.eye(2), atol=1e-10)
    full = fit_similarity(source, target)
    err = lambda sim: ((sim.apply(source) - target) ** 2).sum()  # noqa: E731
    assert err(full) < err(rigid)
    for jitter in (Similarity(full.scale * 1.01, full.rotation, full.translation),
                   Similarity(full.scale, full.rotation @ rotation(0.01), full.translation)):
        assert err(full) < err(jitter)


def test_fit_similarity_rejects_mismatched_maps():
    with pytest.raises(ValueError, match="matching"):
        fit_similarity(np.zeros((3, 2)), np.zeros((4, 2)))


def test_anchored_targets_interpolate_in_the_teacher_frame():
    rng = np.random.default_rng(2)
    Y, previous = rng.normal(size=(50, 2)), rng.normal(size=(50, 2))
    to_native = Similarity(0.5, rotation(1.0), np.array([1.0, 2.0]))
    np.testing.assert_array_equal(anchored_targets(Y, previous, to_native, 0.0), Y.astype(np.float32))
    np.testing.assert_allclose(anchored_targets(Y, previous, to_native, 1.0), to_native.apply(previous), atol=1e-6)
    half = anchored_targets(Y, previous, to_native, 0.5)
    np.testing.assert_allclose(half, 0.5 * Y + 0.5 * to_native.apply(previous), atol=1e-6)
    with pytest.raises(ValueError, match="anchor weight"):
        anchored_targets(Y, previous, to_native, 1.5)


def test_align_student_folds_the_similarity_into_its_output():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 12)).astype(np.float32)
    Y = X[:, :2] * 3.0
    result = train_student(X, Y, None, StudentConfig(hidden=(16,), input_pca_dim=None, steps=30,
                                                                 batch_size=64, threads=1))
    similarity = Similarity(1.7, rotation(2.0, mirrored=True), np.array([-4.0, 0.5]))
    aligned = align_student(result, similarity)
    np.testing.assert_allclose(aligned.transform(X), similarity.apply(result.transform(X)), atol=1e-4)
    assert not np.allclose(result.transform(X), aligned.transform(X))  # the original is left unchanged


def test_anchored_targets_with_a_radius_let_rows_that_moved_far_follow_the_teacher():
    rng = np.random.default_rng(4)
    previous = rng.normal(size=(1000, 2))
    Y = previous + rng.normal(scale=0.05, size=previous.shape)  # the usual jitter of a refit
    Y[:10] += 5.0  # rows the new teacher put somewhere else entirely
    held = anchored_targets(Y, previous, Similarity.identity(2), 1.0, radius=3.0)
    assert np.median(np.linalg.norm(held[10:] - previous[10:], axis=1)) < 0.2 * np.median(
        np.linalg.norm(Y[10:] - previous[10:], axis=1))
    np.testing.assert_allclose(held[:10], Y[:10], atol=1e-3)
    with pytest.raises(ValueError, match="radius"):
        anchored_targets(Y, previous, Similarity.identity(2), 1.0, radius=0.0)


def test_layout_trust_cost_is_zero_for_the_same_map_and_large_for_a_scrambled_one():
    from umap_assets.numerics.align import layout_trust_cost

    rng = np.random.default_rng(4)
    X = rng.normal(size=(600, 10)).astype(np.float32)
    fresh = X[:, :2] * 3.0  # a map that keeps the two leading coordinates
    similar = Similarity(0.5, rotation(1.1, True), np.array([2.0, 2.0])).apply(fresh)
    same = layout_trust_cost(X, fresh, fresh)
    assert (same.cost, same.low, same.high) == (0.0, 0.0, 0.0)
    assert layout_trust_cost(X, fresh, similar).cost == pytest.approx(0.0, abs=1e-9)  # neighbourhoods are kept
    scrambled = layout_trust_cost(X, fresh, fresh[rng.permutation(600)])
    assert 0.1 < scrambled.low < scrambled.cost < scrambled.high  # far outside the noise
    assert layout_trust_cost(X, fresh[rng.permutation(600)], fresh).high < -0.1
    # on a seeded sample of the rows: the same figure twice, another for another sample
    noisy = similar + rng.normal(0, 0.3, similar.shape).astype(np.float32)
    once = layout_trust_cost(X, fresh, noisy, max_rows=200, seed=3)
    assert once.cost > 0 and once == layout_trust_cost(X, fresh, noisy, max_rows=200, seed=3)
    assert once.low < once.cost < once.high
    assert once.cost != layout_trust_cost(X, fresh, noisy, max_rows=200, seed=4).cost
    # the interval narrows with the rows: what a few hundred rows cannot tell apart, thousands can
    every = layout_trust_cost(X, fresh, noisy, max_rows=600, seed=3)
    assert once.high - once.low > every.high - every.low


def test_place_new_rows_keeps_the_known_rows_and_places_the_new_ones_among_their_neighbours():
    import umap
    from sklearn.datasets import load_digits

    from umap_assets.numerics.align import place_new_rows
    from umap_assets.numerics.metrics import trustworthiness

    X = load_digits().data[:600].astype(np.float32)
    fitted = umap.UMAP(n_neighbors=10, random_state=0, n_jobs=1, n_epochs=100).fit(X)
    known = np.random.default_rng(0).random(len(X)) < 0.8
    scrambled = fitted.embedding_.copy()
    scrambled[~known] = scrambled[~known][np.random.default_rng(1).permutation(int((~known).sum()))]
    placed = place_new_rows(fitted.graph_, scrambled, known, fitted._a, fitted._b, n_epochs=100, learning_rate=0.25)
    np.testing.assert_array_equal(placed[known], scrambled[known])
    assert trustworthiness(X, placed, 10) > trustworthiness(X, scrambled, 10) + 0.02
    assert trustworthiness(X, placed, 10) > trustworthiness(X, fitted.embedding_, 10) - 0.01
    again = place_new_rows(fitted.graph_, scrambled, known, fitted._a, fitted._b, n_epochs=100, learning_rate=0.25)
    np.testing.assert_array_equal(placed, again)  # seeded
    everything = np.ones(len(X), bool)
    np.testing.assert_array_equal(place_new_rows(fitted.graph_, scrambled, everything, fitted._a, fitted._b,
                                                 n_epochs=100, learning_rate=0.25), scrambled)


def test_refine_layout_fits_a_jittered_layout_to_its_graph_and_stays_near_it():
    import umap
    from sklearn.datasets import load_digits

    from umap_assets.numerics.align import refine_layout
    from umap_assets.numerics.metrics import relative_displacement, trustworthiness

    X = load_digits().data[:600].astype(np.float32)
    fitted = umap.UMAP(n_neighbors=10, random_state=0, n_jobs=1, n_epochs=100).fit(X)
    spread = float(fitted.embedding_.std())
    jittered = fitted.embedding_ + np.random.default_rng(0).normal(0, 0.15 * spread, fitted.embedding_.shape)
    refined = refine_layout(fitted.graph_, jittered, fitted._a, fitted._b, n_epochs=30, learning_rate=0.05)
    assert trustworthiness(X, jittered, 10) < trustworthiness(X, fitted.embedding_, 10) - 0.05
    assert trustworthiness(X, refined, 10) > trustworthiness(X, fitted.embedding_, 10) - 0.01  # fitted to the graph
    jitter = relative_displacement(jittered, fitted.embedding_, statistic="median")
    assert relative_displacement(jittered, refined, statistic="median") < 1.25 * jitter  # the map stays where it was
    again = refine_layout(fitted.graph_, jittered, fitted._a, fitted._b, n_epochs=30, learning_rate=0.05)
    np.testing.assert_array_equal(refined, again)  # seeded
    np.testing.assert_array_equal(refine_layout(fitted.graph_, jittered, fitted._a, fitted._b, n_epochs=0,
                                                learning_rate=0.1), jittered.astype(np.float32))
