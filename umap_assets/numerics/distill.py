"""Distil a fitted UMAP teacher into a small torch MLP (a parametric UMAP student).

The loss has two parts, as in Parametric UMAP (Sainburg, McInnes & Gentner 2021) plus distillation:

* the UMAP cross-entropy on the teacher's fuzzy graph: edges (i, j) sampled in proportion to their
  weight pull ``q_ij = 1 / (1 + a * d_ij^(2b))`` towards 1; ``negative_samples`` shuffled pairs per
  edge push it towards 0 (umap-learn's ``parametric_umap.umap_loss``);
* ``coord_weight * ||f(x) - y_teacher||`` (or its square, ``coord_loss``) on every row with a teacher coordinate (the coreset's
  ``embedding_`` and ``teacher.transform`` of extra rows), with the targets scaled to unit spread.
  This anchors the student to the teacher's layout so the maps stay comparable.

Inputs are centred and projected on their top principal components (``input_pca_dim``) before the
MLP. The projection is linear, so :mod:`umap_assets.numerics.compress` folds it into the first
layer: the exported network still reads raw features, but training costs a fraction of the FLOPs.
Training uses Gaussian input noise, large batches and Adam on a one-cycle schedule of a fixed number
of steps. Everything is seeded, with a fixed thread count and deterministic kernels.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
import dataclasses
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn


@dataclass
class StudentConfig:
    """The student network and its training schedule.

    Training length is counted in optimizer steps, never in seconds or in passes over the rows:
    the cost is the same whatever the number of rows, and the same data and config give the same
    model on any machine (fixed seeds, ``threads`` torch threads, deterministic kernels). There is
    no early stopping: the one-cycle schedule runs to its end, so a run that is still improving is
    never cut; the holdout loss is recorded every ``eval_every`` steps for diagnosis.

    Attributes
    ----------
    hidden : tuple of int
        Widths of the hidden layers, each followed by a ReLU.
    input_pca_dim : int or None
        Principal components the inputs are projected on; None (or at least the number of features)
        keeps every feature.
    steps : int or None
        Optimizer steps, at least 1; None chooses them from the data: :data:`SPREAD_STEPS` for data
        spread over more directions than the input PCA holds (:func:`is_spread`), else :data:`BASE_STEPS`.
    spread_kept : float
        The share of the rows' variance that ``input_pca_dim`` components must keep for the data not to
        count as spread (sentence embeddings: 0.60 at 64 components; Fashion-MNIST's pixels: 0.88).
    spread_input_pca_dim : int or None
        The input PCA's components for spread data (more than ``input_pca_dim``); None keeps ``input_pca_dim``.
    batch_size : int
        Rows with a teacher coordinate per step.
    edge_batch_size : int
        Graph edges per step, drawn in proportion to their weight.
    negative_samples : int
        Negative pairs per edge in the UMAP cross-entropy.
    coord_weight : float
        Weight of the error to the teacher's (normalised) coordinates.
    coord_loss : {"squared", "distance"}
        Each row's coordinate error: its squared distance to the teacher's coordinate, or the
        distance itself (less pull from the rows the network cannot place).
    edge_coord_weight : float
        Weight of each graph edge's head and tail in that squared error, against 1 for each row of
        the coordinate batch: the edges' rows are forwarded for the cross-entropy anyway, so their
        coordinates are free targets; 0 leaves them to the cross-entropy alone.
    graph_weight : float
        Weight of the UMAP cross-entropy; 0 trains without it (``mix_weight`` still uses the graph's edges).
    repulsion_strength : float
        Weight of the negative pairs within the cross-entropy.
    learning_rate : float
        Peak learning rate of Adam's one-cycle schedule.
    weight_decay : float
        Adam's weight decay.
    noise_std : float or None
        Standard deviation of the Gaussian noise added to the network's (projected, scaled) inputs
        during training; None chooses it from the data (:func:`neighbour_noise`).
    noise_to_neighbours : float
        With ``noise_std`` None: the noise's expected length as a share of the median distance from
        a row to its 15th nearest neighbour, so that noise blurs each row into its own neighbourhood
        whatever the data's spectrum (pixels: a few components hold the variance and neighbours are
        near; sentence embeddings: hundreds do, and every row is far from every other).
    mix_weight : float
        Weight of the neighbour interpolation loss: a random point between two graph neighbours
        should map to the same point between their teacher coordinates; 0 turns it off.
    holdout_fraction : float
        Rows held out of training to record ``holdout_mse`` (none when there are fewer than 50 rows).
    eval_every : int
        Steps between records in the history (the last step is always recorded).
    seed : int
        Seed of the holdout split, row order, edge draws, noise and initial weights.
    threads : int
        Torch threads during training.
    """

    hidden: tuple[int, ...] = (160, 160, 160, 160, 160)  # depth, not width, is the lever (bench/RESULTS.md)
    input_pca_dim: int | None = 64  # 64 vs 128 on Fashion-MNIST: same quality, 123 KB vs 183 KB (bench/RESULTS.md)
    # None: from the data. 12,000 steps, or 24,000 on 192 input components (0.9 of the variance of
    # debian-text's sentence embeddings, 223 KB) for data whose variance 64 cannot hold: on debian-text,
    # trust@5 on all test rows 0.8438 -> 0.8667 (umap-learn's transform 0.8730), 5-NN 0.3273 -> 0.3398
    # (0.3439). Fashion-MNIST and digits keep 12,000 steps on 64, so their artifacts and the fit budget
    # (bench/RESULTS.md, session 20)
    steps: int | None = None
    spread_kept: float = 0.75
    spread_input_pca_dim: int | None = 192
    batch_size: int = 512  # rows with a teacher coordinate per step, besides the edges' ends
    edge_batch_size: int = 1024  # graph edges per step
    negative_samples: int = 5
    coord_weight: float = 2.0
    coord_loss: str = "distance"  # vs squared: 10-NN 0.761 vs 0.757 over two seeds, same trust@5 (bench/RESULTS.md, session 7)
    edge_coord_weight: float = 1.0  # 2,560 rows a step instead of 4,096, and better maps (bench/RESULTS.md, session 6)
    graph_weight: float = 0.5
    repulsion_strength: float = 1.0
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    # None: from the data. 0.815 of the 15-NN distance is the 0.4 that Fashion-MNIST was tuned at (0.4 vs 0.3 with five
    # layers: trust@5 0.9740 vs 0.9737, 10-NN 0.753 vs 0.744); on sentence embeddings it gives 0.81 (bench/RESULTS.md, session 16)
    noise_std: float | None = None
    noise_to_neighbours: float = 0.815
    mix_weight: float = 0.0  # the interpolation term costs kNN accuracy (bench/RESULTS.md, session 5)
    holdout_fraction: float = 0.05
    eval_every: int = 500
    seed: int = 0
    threads: int = 2


@dataclass
class Preprocessing:
    """The input map ``z = ((x - mean) @ components.T) / scale`` and output map ``y = out * y_scale + y_mean``.

    Attributes
    ----------
    mean : ndarray of float32, shape (d,)
        Mean of the training rows.
    components : ndarray of float32, shape (k, d)
        PCA components; the (d, d) identity when there is no PCA.
    scale : float
        Standard deviation of all entries of the projected training rows (1.0 when it is 0).
    y_mean : ndarray of float32, shape (n_components,)
        Mean teacher coordinate.
    y_scale : float
        Standard deviation of all entries of the centred teacher coordinates (1.0 when it is 0).
    """

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d); identity when no PCA
    scale: float
    y_mean: np.ndarray  # (n_components,)
    y_scale: float

    def inputs(self, X: np.ndarray) -> np.ndarray:
        return (((X - self.mean) @ self.components.T) / self.scale).astype(np.float32)


@dataclass
class StudentResult:
    """A trained student: its network, its preprocessing and a record of its training.

    Attributes
    ----------
    model : nn.Sequential
        The MLP, from preprocessed inputs of shape (k,) to normalised coordinates of shape
        (n_components,).
    prep : Preprocessing
    history : list of dict
        One record every ``eval_every`` steps and at the last step, with keys ``"step"``,
        ``"coord_loss"`` and ``"graph_loss"`` (mean unweighted losses since the previous record),
        ``"holdout_mse"`` (mean squared distance to the normalised teacher coordinates on the
        held-out rows; nan without any) and ``"seconds"`` (since training started).
    steps : int
        Optimizer steps run.
    seconds : float
        Training wall-clock time, in seconds.
    config : dict
        The :class:`StudentConfig` it was trained with, as ``dataclasses.asdict``.
    n_parameters : int
        Number of weights and biases of ``model`` (read-only property).
    """

    model: nn.Sequential
    prep: Preprocessing
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    config: dict = field(default_factory=dict)

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def transform(self, X: np.ndarray, batch: int = 65_536) -> np.ndarray:
        return predict(self.model, self.prep, X, batch)


def build_mlp(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    """A ReLU MLP: ``Linear`` then ``ReLU`` for each hidden width, then a linear output layer.

    Parameters
    ----------
    n_in : int
        Input features.
    hidden : tuple of int
        Widths of the hidden layers.
    n_out : int
        Output size.

    Returns
    -------
    nn.Sequential
        With PyTorch's default initialisation.
    """
    layers: list[nn.Module] = []
    prev = n_in
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU(inplace=True)]  # in place: the same numbers, ~8% faster training
        prev = h
    layers.append(nn.Linear(prev, n_out))
    return nn.Sequential(*layers)


def fit_preprocessing(X: np.ndarray, Y: np.ndarray, pca_dim: int | None, seed: int) -> Preprocessing:
    """Fit a student's input and output normalisation.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Training rows; converted to float32.
    Y : ndarray of shape (n, n_components)
        The teacher's coordinates of ``X``.
    pca_dim : int or None
        Principal components to project on (:func:`umap_assets.numerics.coreset.fit_pca_projection`,
        so capped at ``min(n, d)``); None, or at least ``d``, keeps the identity.
    seed : int
        Seed of the PCA.

    Returns
    -------
    Preprocessing
    """
    X = np.asarray(X, dtype=np.float32)
    mean = X.mean(axis=0)
    d = X.shape[1]
    if pca_dim is not None and pca_dim < d:
        from .coreset import fit_pca_projection

        components = fit_pca_projection(X, pca_dim, seed=seed).components_.astype(np.float32)
    else:
        components = np.eye(d, dtype=np.float32)
    Z = (X - mean) @ components.T
    scale = float(Z.std()) or 1.0
    y_mean = Y.mean(axis=0).astype(np.float32)
    y_scale = float((Y - y_mean).std()) or 1.0
    return Preprocessing(mean.astype(np.float32), components, scale, y_mean, y_scale)


#: The student's steps on data its input PCA holds, and on data spread over more directions than it keeps.
BASE_STEPS, SPREAD_STEPS = 12_000, 24_000


def kept_variance(X: np.ndarray, prep: Preprocessing, seed: int = 0, max_rows: int = 5_000) -> float:
    """The share of the rows' variance (about their mean) that ``prep``'s projection keeps, among a seeded
    sample of at most ``max_rows`` rows (a fixed cost whatever the number of rows); 1.0 without PCA."""
    rows = np.random.default_rng(seed).choice(len(X), min(len(X), max_rows), replace=False) if len(X) else []
    centred = np.asarray(X, dtype=np.float32)[np.sort(rows)] - prep.mean
    total = float((centred.astype(np.float64) ** 2).sum())
    if total == 0.0:
        return 1.0
    return min(1.0, float(((centred @ prep.components.T).astype(np.float64) ** 2).sum()) / total)


def is_spread(X: np.ndarray, prep: Preprocessing, spread_kept: float, seed: int = 0) -> bool:
    """Whether ``prep``'s PCA keeps less than ``spread_kept`` of the variance of ``X``: data spread over
    more directions than it holds (sentence embeddings: 0.60 at 64 components; Fashion-MNIST: 0.88;
    digits and small data: all of it)."""
    return kept_variance(X, prep, seed) < spread_kept


def fit_to_data(X: np.ndarray, Y: np.ndarray, config: StudentConfig,
                init: StudentResult | None = None) -> tuple[Preprocessing, StudentConfig]:
    """The student's input map and its config with the fields left to the data chosen: for spread data
    (:func:`is_spread`) ``spread_input_pca_dim`` components and :data:`SPREAD_STEPS` steps, else
    ``input_pca_dim`` and :data:`BASE_STEPS`. A fine-tuned student (``init``) keeps its input map."""
    prep = init.prep if init is not None else fit_preprocessing(X, Y, config.input_pca_dim, config.seed)
    spread = is_spread(X, prep, config.spread_kept, config.seed)
    wider = config.spread_input_pca_dim
    if spread and init is None and wider is not None and config.input_pca_dim is not None and wider > config.input_pca_dim:
        config = dataclasses.replace(config, input_pca_dim=wider)
        prep = fit_preprocessing(X, Y, wider, config.seed)
    if config.steps is None:
        config = dataclasses.replace(config, steps=SPREAD_STEPS if spread else BASE_STEPS)
    return prep, config


def neighbour_noise(Z: np.ndarray, ratio: float, seed: int = 0, k: int = 15, max_rows: int = 5_000) -> float:
    """The input noise's standard deviation per dimension: ``ratio`` times the median distance from a
    row to its ``k``-th nearest neighbour, spread over the ``Z.shape[1]`` dimensions.

    Measured among a seeded sample of at most ``max_rows`` rows (a fixed size, so the figure does not
    drift with the number of rows, and the cost is flat).

    Parameters
    ----------
    Z : ndarray of shape (n, p)
        Preprocessed inputs.
    ratio : float
        Noise length over the neighbour distance.
    seed : int, default 0
    k : int, default 15
    max_rows : int, default 5_000

    Returns
    -------
    float
        0.0 when there are too few rows to have ``k`` neighbours.
    """
    from sklearn.neighbors import NearestNeighbors

    if len(Z) <= k:
        return 0.0
    sample = Z[np.sort(np.random.default_rng(seed).permutation(len(Z))[:max_rows])]
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(sample).kneighbors(sample)
    return float(ratio * np.median(distances[:, k]) / np.sqrt(Z.shape[1]))


def umap_cross_entropy(
    emb_from: torch.Tensor,
    emb_to: torch.Tensor,
    a: float,
    b: float,
    negative_samples: int,
    repulsion_strength: float = 1.0,
    generator: torch.Generator | None = None,
    eps: float = 1e-4,
) -> torch.Tensor:
    """UMAP's fuzzy-set cross-entropy for a batch of positive edges plus shuffled negatives.

    Parameters
    ----------
    emb_from, emb_to : Tensor of shape (n, m)
        Embeddings of the heads and tails of ``n`` edges.
    a, b : float
        UMAP's curve parameters: ``q = 1 / (1 + a * d^(2b))`` for a distance ``d``.
    negative_samples : int
        Negatives per edge: each head paired with a tail of the batch, shuffled.
    repulsion_strength : float, default 1.0
        Weight of the negative pairs' term.
    generator : torch.Generator, optional
        Source of the shuffle.
    eps : float, default 1e-4
        Probabilities are clamped to [eps, 1] inside the logarithms.

    Returns
    -------
    Tensor
        Scalar: ``(sum(-log q_pos) + repulsion_strength * sum(-log(1 - q_neg))) / n``.
    """
    n = emb_from.shape[0]
    neg_from = emb_from.repeat(negative_samples, 1)
    perm = torch.randperm(n * negative_samples, generator=generator)
    neg_to = emb_to.repeat(negative_samples, 1)[perm]
    d_pos = (emb_from - emb_to).pow(2).sum(1)
    d_neg = (neg_from - neg_to).pow(2).sum(1)
    q_pos = 1.0 / (1.0 + a * d_pos.clamp_min(1e-12).pow(b))
    q_neg = 1.0 / (1.0 + a * d_neg.clamp_min(1e-12).pow(b))
    attract = -torch.log(q_pos.clamp(eps, 1.0))
    repel = -torch.log((1.0 - q_neg).clamp(eps, 1.0)) * repulsion_strength
    return (attract.sum() + repel.sum()) / n


def predict(model: nn.Module, prep: Preprocessing, X: np.ndarray, batch: int = 65_536) -> np.ndarray:
    """Map raw rows with a student: preprocess, run the network, undo the output normalisation.

    Parameters
    ----------
    model : nn.Module
        The student network; put in eval mode.
    prep : Preprocessing
    X : array_like of shape (n, d)
        Raw feature rows.
    batch : int, default 65_536
        Rows per forward pass.

    Returns
    -------
    ndarray of float32, shape (n, n_components)
    """
    model.eval()
    out = np.empty((len(X), len(prep.y_mean)), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(X), batch):
            z = torch.from_numpy(prep.inputs(np.asarray(X[s : s + batch], dtype=np.float32)))
            out[s : s + batch] = model(z).numpy() * prep.y_scale + prep.y_mean
    return out


@dataclass
class EdgeSampler:
    """Draws edges of a fuzzy graph in proportion to their weight (UMAP's edge sampling).

    Build it with :meth:`of`; ``draw(rng, n)`` returns the heads and tails of ``n`` edges drawn with
    replacement.

    Attributes
    ----------
    heads : ndarray of int64, shape (e,)
        Row of each edge with positive weight.
    tails : ndarray of int64, shape (e,)
        Column of each edge.
    cdf : ndarray of float64, shape (e,)
        Cumulative normalised edge weights; the last is 1.0.
    """

    heads: np.ndarray
    tails: np.ndarray
    cdf: np.ndarray

    @classmethod
    def of(cls, graph: sp.spmatrix) -> "EdgeSampler":
        g = sp.coo_matrix(graph)
        keep = g.data > 0
        cdf = np.cumsum(g.data[keep].astype(np.float64))
        return cls(g.row[keep].astype(np.int64), g.col[keep].astype(np.int64), cdf / cdf[-1])

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        e = np.minimum(np.searchsorted(self.cdf, rng.random(n)), len(self.cdf) - 1)
        return self.heads[e], self.tails[e]


def neighbour_mixup(X: np.ndarray, graph: sp.spmatrix, n: int, seed: int, max_t: float = 0.5) -> np.ndarray:
    """New rows between graph neighbours, for the teacher to label: ``(1 - t) x_i + t x_j``.

    On a small data set the student sees each row thousands of times and learns the teacher's map
    only there. Rows between neighbours, placed by ``teacher.transform`` (as it places every unseen
    row), show it where the teacher puts the rows in between; unlike interpolating coordinates,
    this keeps the teacher's choice of cluster for a row between two clusters (bench/RESULTS.md,
    sessions 6 and 8).

    Parameters
    ----------
    X : ndarray of shape (m, d)
        The rows of ``graph``.
    graph : sparse matrix of shape (m, m)
        The teacher's fuzzy kNN graph; edges with positive weight are drawn uniformly.
    n : int
        Rows to make; 0 or less gives none.
    seed : int
        Seed of the edge draws and of ``t``.
    max_t : float, default 0.5
        ``t`` is uniform on ``[0, max_t]``: each new row is nearer its first end.

    Returns
    -------
    ndarray of float32, shape (max(n, 0), d)
        No rows either when the graph has no edge.
    """
    g = sp.coo_matrix(graph)
    keep = g.data > 0
    heads, tails = g.row[keep], g.col[keep]
    X = np.asarray(X, dtype=np.float32)
    if n <= 0 or not len(heads):
        return np.empty((0, X.shape[1]), np.float32)
    rng = np.random.default_rng(seed)
    e = rng.integers(0, len(heads), n)
    t = rng.uniform(0.0, max_t, (n, 1)).astype(np.float32)
    return (1 - t) * X[heads[e]] + t * X[tails[e]]


@contextmanager
def deterministic_torch(threads: int, seed: int):
    """Fixed thread count, deterministic kernels and seeds for the duration of a training run.

    On exit the previous thread count and deterministic-algorithms setting are restored; the
    global torch seed is not.

    Parameters
    ----------
    threads : int
        Torch intra-op threads.
    seed : int
        Passed to ``torch.manual_seed``.

    Yields
    ------
    None
    """
    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])


def coordinate_error(out: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """The mean coordinate error of a batch.

    Parameters
    ----------
    out, target : Tensor of shape (n, m)
        The network's and the teacher's (normalised) coordinates.
    kind : {"squared", "distance"}
        Each row's error: its squared Euclidean distance, or the distance itself (with 1e-8 under
        the root, so that the gradient is finite at 0).

    Returns
    -------
    Tensor
        Scalar.

    Raises
    ------
    ValueError
        For another ``kind``.
    """
    squared = (out - target).pow(2).sum(1)
    if kind == "squared":
        return squared.mean()
    if kind == "distance":
        return (squared + 1e-8).sqrt().mean()
    raise ValueError(f"coord_loss must be 'squared' or 'distance', got {kind!r}")


@dataclass(frozen=True)
class FuzzyGraph:
    """The teacher's fuzzy graph, with the curve ``q = 1 / (1 + a d^(2b))`` its layout was fitted with.

    The cross-entropy needs both, so they travel together: from a :class:`~umap_assets.records.Teacher`
    record (``teacher.fuzzy_graph``, the fit's own ``a`` and ``b``), or, for a graph of another origin,
    with the curve umap-learn derives from ``min_dist`` and ``spread`` (:meth:`with_curve_for`).

    Attributes
    ----------
    edges : sparse matrix of shape (n, n)
        Edge weights over the first ``n`` distillation rows.
    a, b : float
        UMAP's curve parameters.
    """

    edges: sp.spmatrix
    a: float
    b: float

    @classmethod
    def with_curve_for(cls, edges: sp.spmatrix, min_dist: float, spread: float = 1.0) -> "FuzzyGraph":
        """``edges`` with the curve that umap-learn fits for ``min_dist`` and ``spread`` (``find_ab_params``)."""
        from umap.umap_ import find_ab_params

        a, b = find_ab_params(spread, min_dist)
        return cls(edges, float(a), float(b))


@dataclass(frozen=True)
class LossInputs:
    """What every step's loss reads besides the step's own draws.

    Attributes
    ----------
    Z : Tensor of float32, shape (n, k)
        Preprocessed inputs of every row.
    T : Tensor of float32, shape (n, n_components)
        Normalised teacher coordinates of every row.
    scale : float
        Factor applied to the outputs before the cross-entropy (``prep.y_scale``), so that it sees
        distances in the teacher's units.
    a, b : float
        UMAP's curve parameters (read only with edges).
    """

    Z: torch.Tensor
    T: torch.Tensor
    scale: float = 1.0
    a: float = 1.0
    b: float = 1.0


def step_loss(model, inputs: LossInputs, rows, edges, *, config: StudentConfig,
              gen: torch.Generator) -> tuple[torch.Tensor, dict]:
    """One step's loss: coordinates of ``rows``; UMAP cross-entropy and neighbour interpolation on ``edges``.

    Parameters
    ----------
    model : nn.Module
        The student network.
    inputs : LossInputs
        Every row's inputs and targets, the output scale and the curve.
    rows : Tensor of int64, shape (batch_size,)
        Rows for the coordinate loss.
    edges : (ndarray, ndarray) or None
        Heads and tails (int64, shape (edge_batch_size,)) of sampled graph edges; None leaves out the
        cross-entropy and interpolation terms.
    config : StudentConfig
        Loss weights, ``negative_samples``, ``repulsion_strength`` and ``noise_std``.
    gen : torch.Generator
        Source of the input noise, interpolation points and negative shuffle.

    Returns
    -------
    loss : Tensor
        Scalar: the weighted sum of the terms.
    parts : dict
        ``{"coord": float, "graph": float}``: the unweighted coordinate and cross-entropy losses
        (``"graph"`` is 0.0 without edges).
    """
    Z, T = inputs.Z, inputs.T
    graph_on = edges is not None and config.graph_weight > 0
    mix_on = edges is not None and config.mix_weight > 0
    parts = [Z[rows]]
    if edges is not None:
        heads, tails = (torch.from_numpy(e) for e in edges)
        if graph_on:
            parts += [Z[heads], Z[tails]]
        if mix_on:
            # neighbour interpolation: a point between two graph neighbours should land between their
            # teacher coordinates (where UMAP's own transform initialises it)
            t = torch.rand((len(heads), 1), generator=gen)
            parts.append((1 - t) * Z[heads] + t * Z[tails])
    batch = torch.cat(parts)
    if config.noise_std > 0:
        batch = batch + config.noise_std * torch.randn(batch.shape, generator=gen)
    out = model(batch)
    nr = len(rows)
    coord = coordinate_error(out[:nr], T[rows], config.coord_loss)
    if graph_on and config.edge_coord_weight > 0:  # the heads' and tails' coordinates, forwarded anyway
        ne, w = len(heads), config.edge_coord_weight
        ends = coordinate_error(out[nr : nr + 2 * ne], torch.cat([T[heads], T[tails]]), config.coord_loss)
        coord = (nr * coord + 2 * ne * w * ends) / (nr + 2 * ne * w)
    loss, parts_out = config.coord_weight * coord, {"coord": coord.item(), "graph": 0.0}
    rest = out[nr:]
    if graph_on:
        ne = len(heads)
        graph = umap_cross_entropy(rest[:ne] * inputs.scale, rest[ne : 2 * ne] * inputs.scale, inputs.a, inputs.b,
                                   config.negative_samples, config.repulsion_strength, gen)
        loss = loss + config.graph_weight * graph
        parts_out["graph"] = graph.item()
        rest = rest[2 * ne :]
    if mix_on:
        loss = loss + config.mix_weight * (rest - ((1 - t) * T[heads] + t * T[tails])).pow(2).sum(1).mean()
    return loss, parts_out


def train_student(
    X: np.ndarray,
    Y: np.ndarray,
    graph: FuzzyGraph | None = None,
    config: StudentConfig = StudentConfig(),
    log=None,
    *,
    init: StudentResult | None = None,
    masks: dict[str, torch.Tensor] | None = None,
) -> StudentResult:
    """Train a student on rows ``X`` with teacher coordinates ``Y`` for ``config.steps`` steps.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Distillation rows; the first ``graph.shape[0]`` of them are the rows of ``graph``.
    Y : ndarray of shape (n, n_components)
        The teacher's coordinates of ``X``.
    graph : FuzzyGraph or None
        The teacher's fuzzy graph over the first rows of ``X``, with its curve; None trains on
        coordinates only.
    config : StudentConfig
        Network and schedule; ``StudentConfig()`` by default.
    log : callable, optional
        Called with a dict of losses every ``config.eval_every`` steps.
    init : StudentResult, optional
        Train this result's model further (fine-tuning), with its preprocessing.
    masks : dict, optional
        Parameter name -> 0/1 tensor; pruned weights stay zero throughout.

    Returns
    -------
    StudentResult
        The model is left in eval mode.

    Raises
    ------
    ValueError
        If ``X`` and ``Y`` have different numbers of rows, or ``config.steps < 1``.
    """
    X, Y = np.asarray(X, dtype=np.float32), np.asarray(Y, dtype=np.float32)
    if len(X) != len(Y):
        raise ValueError(f"X has {len(X)} rows but Y has {len(Y)}")
    if config.steps is not None and config.steps < 1:
        raise ValueError(f"steps must be at least 1, got {config.steps}")
    with deterministic_torch(config.threads, config.seed):
        return _train(X, Y, graph, config, log, init, masks or {})


def _train(X, Y, graph: FuzzyGraph | None, config: StudentConfig, log, init, masks) -> StudentResult:
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    prep, config = fit_to_data(X, Y, config, init)
    Z = torch.from_numpy(prep.inputs(X))
    if config.noise_std is None:
        config = dataclasses.replace(config, noise_std=neighbour_noise(Z.numpy(), config.noise_to_neighbours, config.seed))
    T = torch.from_numpy(((Y - prep.y_mean) / prep.y_scale).astype(np.float32))
    n_hold = int(round(config.holdout_fraction * len(X))) if len(X) >= 50 else 0
    order = rng.permutation(len(X))
    hold, train = torch.from_numpy(order[:n_hold]), order[n_hold:]
    uses_edges = config.graph_weight > 0 or config.mix_weight > 0
    edges = EdgeSampler.of(graph.edges) if graph is not None and uses_edges else None
    curve = {"a": graph.a, "b": graph.b} if graph is not None else {}
    inputs = LossInputs(Z, T, prep.y_scale, **curve)
    model = copy.deepcopy(init.model) if init is not None else build_mlp(Z.shape[1], tuple(config.hidden), Y.shape[1])
    params = dict(model.named_parameters())

    def apply_masks() -> None:
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask)

    apply_masks()
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.learning_rate, total_steps=max(config.steps, 1),
                                                pct_start=0.1, anneal_strategy="cos")
    history: list[dict] = []
    sums = {"coord": 0.0, "graph": 0.0}
    batches = row_batches(rng, train, config.batch_size)
    for step in range(1, config.steps + 1):
        model.train()
        rows = next(batches)
        drawn = edges.draw(rng, config.edge_batch_size) if edges is not None else None
        loss, parts = step_loss(model, inputs, rows, drawn, config=config, gen=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        apply_masks()
        sched.step()
        for key in sums:
            sums[key] += parts[key]
        if step % config.eval_every == 0 or step == config.steps:
            history.append(_record(model, Z[hold], T[hold], step, sums, history, started))
            sums = {"coord": 0.0, "graph": 0.0}
            if log:
                log(history[-1])
    model.eval()
    return StudentResult(model=model, prep=prep, history=history, steps=config.steps,
                         seconds=time.perf_counter() - started, config=asdict(config))


def row_batches(rng: np.random.Generator, rows: np.ndarray, size: int):
    """Endless batches of ``rows``: each pass over them in a fresh seeded order.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the orders.
    rows : ndarray of int, shape (r,)
        Row positions to batch.
    size : int
        Rows per batch.

    Yields
    ------
    Tensor of shape (size,)
        The next batch; the last ``r % size`` rows of each pass are dropped. When ``r < size``,
        every batch is all the rows.
    """
    while True:
        order = torch.from_numpy(rng.permutation(rows))
        for start in range(0, len(order) - size + 1 if len(order) >= size else 1, size):
            yield order[start : start + size]


def _record(model, Z_hold, T_hold, step: int, sums: dict, history: list, started: float) -> dict:
    """The losses since the previous record, and the coordinate error on the held-out rows."""
    steps = step - (history[-1]["step"] if history else 0)
    model.eval()
    with torch.no_grad():
        holdout = float((model(Z_hold) - T_hold).pow(2).sum(1).mean()) if len(Z_hold) else float("nan")
    return {"step": step, "coord_loss": sums["coord"] / steps, "graph_loss": sums["graph"] / steps,
            "holdout_mse": holdout, "seconds": time.perf_counter() - started}
