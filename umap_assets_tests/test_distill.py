"""The student's training: counted in steps, and the same artifact for the same data and config."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from umap_assets.artifacts import build_artifact
from umap_assets.demo_data import synthetic_chunk
from umap_assets.numerics import compress
from umap_assets.numerics.distill import FuzzyGraph, StudentConfig, train_student
from umap_assets.runtime import Projector


def _graph(n: int, seed: int = 0):
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n), 4)
    cols = (rows + rng.integers(1, 6, size=len(rows))) % n
    return sp.coo_matrix((rng.uniform(0.2, 1.0, size=len(rows)), (rows, cols)), shape=(n, n))


CFG = StudentConfig(hidden=(32, 32), input_pca_dim=8, steps=60, batch_size=128, edge_batch_size=128,
                    eval_every=20, seed=4, threads=2)


def _version(X, Y, graph) -> str:
    result = train_student(X, Y, FuzzyGraph(graph, 1.58, 0.9), CFG)
    return Projector.from_bytes(build_artifact(compress.fold_layers(result))).version


def test_training_length_is_counted_in_steps():
    X, _ = synthetic_chunk(0, 600, dim=16, n_clusters=4, seed=1)
    result = train_student(X, X[:, :2], FuzzyGraph(_graph(300), 1.58, 0.9), CFG)
    assert [h["step"] for h in result.history] == [20, 40, 60]
    assert result.steps == 60 and "max_seconds" not in result.config


def test_same_data_and_config_give_the_same_artifact_under_load():
    X, _ = synthetic_chunk(0, 600, dim=16, n_clusters=4, seed=1)
    Y, graph = X[:, :2] * 3, _graph(300)
    first = _version(X, Y, graph)
    threads = torch.get_num_threads()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # another busy process
    try:
        torch.set_num_threads(1)  # the caller's own setting must not matter either
        second = _version(X, Y, graph)
    finally:
        hog.kill()
        torch.set_num_threads(threads)
    assert second == first
    assert torch.get_num_threads() == threads, "training restores the caller's thread count"


def test_another_seed_gives_another_model():
    X, _ = synthetic_chunk(0, 600, dim=16, n_clusters=4, seed=1)
    a = train_student(X, X[:, :2], None, CFG)
    b = train_student(X, X[:, :2], None, StudentConfig(**{**CFG.__dict__, "seed": 5}))
    assert not torch.equal(a.model[0].weight, b.model[0].weight)


@pytest.mark.parametrize("bad", [0, -1])
def test_a_zero_step_schedule_is_refused(bad):
    X, _ = synthetic_chunk(0, 200, dim=8, n_clusters=2, seed=1)
    with pytest.raises(ValueError, match="steps"):
        train_student(X, X[:, :2], None, StudentConfig(**{**CFG.__dict__, "steps": bad}))


def test_interpolation_uses_the_graph_without_the_cross_entropy():
    X, _ = synthetic_chunk(0, 600, dim=16, n_clusters=4, seed=1)
    Y, graph = X[:, :2] * 3, _graph(300)
    only = {**CFG.__dict__, "graph_weight": 0.0, "coord_weight": 0.0}  # nothing but the interpolation term
    still = train_student(X, Y, FuzzyGraph(graph, 1.58, 0.9), StudentConfig(**{**only, "mix_weight": 0.0}))
    mixed = train_student(X, Y, FuzzyGraph(graph, 1.58, 0.9), StudentConfig(**{**only, "mix_weight": 1.0}))
    assert all(h["graph_loss"] == 0.0 for h in mixed.history)  # no cross-entropy was computed
    assert not torch.equal(still.model[0].weight, mixed.model[0].weight)  # the interpolation term trained it


def test_edge_ends_join_the_coordinate_loss_with_their_weight():
    from umap_assets.numerics.distill import LossInputs, build_mlp, step_loss

    torch.manual_seed(0)
    model = build_mlp(8, (16,), 2)
    Z, T = torch.randn(100, 8), torch.randn(100, 2)
    rows = torch.arange(10)
    edges = (np.arange(20, 25), np.arange(30, 35))
    with torch.no_grad():
        out = model(torch.cat([Z[rows], Z[20:25], Z[30:35]]))
    squared = (out - torch.cat([T[rows], T[20:25], T[30:35]])).pow(2).sum(1)
    for kind, err in (("squared", squared), ("distance", squared.sqrt())):
        base = StudentConfig(noise_std=0.0, mix_weight=0.0, graph_weight=1.0, coord_loss=kind)
        for w in (0.0, 1.0, 3.0):
            cfg = StudentConfig(**{**base.__dict__, "edge_coord_weight": w})
            _, parts = step_loss(model, LossInputs(Z, T, 1.0, 1.58, 0.9), rows, edges, config=cfg,
                                 gen=torch.Generator().manual_seed(0))
            weights = torch.cat([torch.ones(10), torch.full((10,), w)])
            assert np.isclose(parts["coord"], float((err * weights).sum() / weights.sum()), rtol=1e-5)


def test_neighbour_mixup_puts_new_rows_on_graph_edges_nearer_their_first_end():
    import scipy.sparse as sp

    from umap_assets.numerics.distill import neighbour_mixup

    X = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [50.0, 50.0]], dtype=np.float32)
    graph = sp.coo_matrix(([1.0, 0.5, 0.0], ([0, 1, 2], [1, 2, 3])), shape=(4, 4))  # edge 2-3 has no weight
    rows = neighbour_mixup(X, graph, 500, seed=0)
    assert rows.shape == (500, 2) and rows.dtype == np.float32
    on_01 = (rows[:, 1] == 0) & (rows[:, 0] <= 5.0)  # (1 - t) x0 + t x1, t <= 0.5: nearer x0
    on_12 = np.isclose(rows.sum(1), 10.0) & (rows[:, 0] >= 5.0)  # nearer x1
    assert (on_01 | on_12).all() and on_01.any() and on_12.any()
    assert np.array_equal(rows, neighbour_mixup(X, graph, 500, seed=0))
    assert neighbour_mixup(X, graph, 0, seed=0).shape == (0, 2)
    assert neighbour_mixup(X, sp.coo_matrix((4, 4)), 5, seed=0).shape == (0, 2)


def test_the_input_noise_follows_the_datas_neighbourhoods():
    """Noise is chosen as a share of the 15-NN distance: the same cloud, spread twice as far, gets twice
    the noise; a row-count change does not move it much (a fixed-size sample); training records it."""
    from umap_assets.numerics.distill import neighbour_noise

    rng = np.random.default_rng(0)
    Z = rng.normal(size=(8_000, 16)).astype(np.float32)
    base = neighbour_noise(Z, 1.0)
    assert neighbour_noise(2 * Z, 1.0) == pytest.approx(2 * base, rel=1e-5)
    assert neighbour_noise(Z, 0.5) == pytest.approx(base / 2)
    assert neighbour_noise(Z[:6_000], 1.0) == pytest.approx(base, rel=0.05)
    assert neighbour_noise(Z[:10], 1.0) == 0.0
    X = rng.normal(size=(400, 12)).astype(np.float32)
    Y = X[:, :2] * 3
    result = train_student(X, Y, FuzzyGraph(_graph(400), 1.58, 0.9), CFG)
    assert CFG.noise_std is None and result.config["noise_std"] > 0


def test_spread_data_get_a_longer_schedule_on_more_input_components():
    """Steps None: 12,000 on 64 components when those hold the rows' variance; 24,000 on 128 when they
    keep less than ``spread_kept`` of it (sentence embeddings). An explicit ``steps`` is kept."""
    from umap_assets.numerics.distill import BASE_STEPS, SPREAD_STEPS, fit_preprocessing, fit_to_data, kept_variance

    rng = np.random.default_rng(0)
    low_rank = (rng.normal(size=(2_000, 6)) @ rng.normal(size=(6, 48))).astype(np.float32)
    spread = rng.normal(size=(2_000, 48)).astype(np.float32)
    Y = np.zeros((2_000, 2), np.float32)
    assert kept_variance(low_rank, fit_preprocessing(low_rank, Y, 16, 0)) == pytest.approx(1.0, abs=1e-3)
    assert kept_variance(spread, fit_preprocessing(spread, Y, 16, 0)) == pytest.approx(16 / 48, abs=0.1)
    assert kept_variance(spread, fit_preprocessing(spread, Y, None, 0)) == pytest.approx(1.0)
    config = StudentConfig(input_pca_dim=16, spread_input_pca_dim=32)
    prep, chosen = fit_to_data(low_rank, Y, config)
    assert (chosen.steps, chosen.input_pca_dim, prep.components.shape[0]) == (BASE_STEPS, 16, 16)
    prep, chosen = fit_to_data(spread, Y, config)
    assert (chosen.steps, chosen.input_pca_dim, prep.components.shape[0]) == (SPREAD_STEPS, 32, 32)
    prep, chosen = fit_to_data(spread, Y, StudentConfig(input_pca_dim=16, spread_input_pca_dim=None, steps=40))
    assert (chosen.steps, chosen.input_pca_dim, prep.components.shape[0]) == (40, 16, 16)
    assert StudentConfig().steps is None and StudentConfig().input_pca_dim == 64
