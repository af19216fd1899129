"""Distil a fitted UMAP teacher into a small torch MLP (a parametric UMAP student).

The loss has two parts, as in Parametric UMAP (Sainburg, McInnes & Gentner 2021) plus distillation:

* the UMAP cross-entropy on the teacher's fuzzy graph: edges (i, j) sampled in proportion to their
  weight pull ``q_ij = 1 / (1 + a * d_ij^(2b))`` towards 1; ``negative_samples`` shuffled pairs per
  edge push it towards 0 (umap-learn's ``parametric_umap.umap_loss``);
* ``coord_weight * ||f(x) - y_teacher||^2`` on every row with a teacher coordinate (the coreset's
  ``embedding_`` and ``teacher.transform`` of extra rows), with the targets scaled to unit spread.
  This anchors the student to the teacher's layout so the maps stay comparable.

Inputs are centred and projected on their top principal components (``input_pca_dim``) before the
MLP. The projection is linear, so :mod:`umap_assets.numerics.compress` folds it into the first
layer: the exported network still reads raw features, but training costs a fraction of the FLOPs.
Training uses Gaussian input noise, large batches, Adam with cosine decay, and early stopping on a
held-out part of the distillation set. Everything is seeded.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn


@dataclass
class StudentConfig:
    hidden: tuple[int, ...] = (256, 256)
    input_pca_dim: int | None = 64  # 64 vs 128 on Fashion-MNIST: same quality, 123 KB vs 183 KB (bench/RESULTS.md)
    epochs: int = 100
    batch_size: int = 1024
    edge_batch_size: int = 1024
    negative_samples: int = 5
    coord_weight: float = 1.0
    graph_weight: float = 0.5
    repulsion_strength: float = 1.0
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    noise_std: float = 0.2
    mix_weight: float = 0.5
    holdout_fraction: float = 0.05
    patience: int = 6
    max_seconds: float | None = None
    seed: int = 0
    threads: int | None = None


@dataclass
class Preprocessing:
    """The input map ``z = ((x - mean) @ components.T) / scale`` and output map ``y = out * y_scale + y_mean``."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d); identity when no PCA
    scale: float
    y_mean: np.ndarray  # (n_components,)
    y_scale: float

    def inputs(self, X: np.ndarray) -> np.ndarray:
        return (((X - self.mean) @ self.components.T) / self.scale).astype(np.float32)


@dataclass
class StudentResult:
    model: nn.Sequential
    prep: Preprocessing
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    config: dict = field(default_factory=dict)

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def transform(self, X: np.ndarray, batch: int = 65_536) -> np.ndarray:
        return predict(self.model, self.prep, X, batch)


def build_mlp(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = n_in
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU()]
        prev = h
    layers.append(nn.Linear(prev, n_out))
    return nn.Sequential(*layers)


def fit_preprocessing(X: np.ndarray, Y: np.ndarray, pca_dim: int | None, seed: int) -> Preprocessing:
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
    """UMAP's fuzzy-set cross-entropy for a batch of positive edges plus shuffled negatives."""
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
    model.eval()
    out = np.empty((len(X), len(prep.y_mean)), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(X), batch):
            z = torch.from_numpy(prep.inputs(np.asarray(X[s : s + batch], dtype=np.float32)))
            out[s : s + batch] = model(z).numpy() * prep.y_scale + prep.y_mean
    return out


def train_student(
    X: np.ndarray,
    Y: np.ndarray,
    graph: sp.spmatrix | None,
    a: float,
    b: float,
    config: StudentConfig = StudentConfig(),
    log=None,
    *,
    init: StudentResult | None = None,
    masks: dict[str, torch.Tensor] | None = None,
) -> StudentResult:
    """Train a student on rows ``X`` with teacher coordinates ``Y``.

    ``graph`` is the teacher's fuzzy graph over the first ``graph.shape[0]`` rows of ``X`` (the
    coreset rows come first); the rest of the rows only carry coordinate targets. With ``init``
    the model and preprocessing of an earlier result are trained further (fine-tuning); ``masks``
    (parameter name -> 0/1 tensor) keep pruned weights at zero throughout.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    X = np.asarray(X, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float32)
    if len(X) != len(Y):
        raise ValueError(f"X has {len(X)} rows but Y has {len(Y)}")
    prep = init.prep if init is not None else fit_preprocessing(X, Y, config.input_pca_dim, config.seed)
    Z = torch.from_numpy(prep.inputs(X))
    T = torch.from_numpy(((Y - prep.y_mean) / prep.y_scale).astype(np.float32))
    n = len(X)
    n_hold = int(round(config.holdout_fraction * n)) if n >= 50 else 0
    order = rng.permutation(n)
    hold, train = order[:n_hold], order[n_hold:]

    heads, tails, cdf = None, None, None
    if graph is not None and config.graph_weight > 0:
        g = sp.coo_matrix(graph)
        keep = g.data > 0
        heads, tails = g.row[keep].astype(np.int64), g.col[keep].astype(np.int64)
        cdf = np.cumsum(g.data[keep].astype(np.float64))
        cdf /= cdf[-1]

    model = copy.deepcopy(init.model) if init is not None else build_mlp(Z.shape[1], tuple(config.hidden), Y.shape[1])
    params = dict(model.named_parameters())
    masks = masks or {}

    def apply_masks() -> None:
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask)

    apply_masks()
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train) / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.learning_rate, total_steps=total_steps, pct_start=0.1, anneal_strategy="cos"
    )
    scale = prep.y_scale  # distances in the teacher's units for the a, b curve
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    history: list[dict] = []
    Z_hold, T_hold = Z[hold], T[hold]
    for epoch in range(config.epochs):
        model.train()
        perm = torch.from_numpy(rng.permutation(train))
        sums = {"coord": 0.0, "graph": 0.0}
        for s in range(steps_per_epoch):
            rows = perm[s * config.batch_size : (s + 1) * config.batch_size]
            parts = [Z[rows]]
            if heads is not None:
                e = np.minimum(np.searchsorted(cdf, rng.random(config.edge_batch_size)), len(cdf) - 1)
                parts += [Z[heads[e]], Z[tails[e]]]
                if config.mix_weight > 0:
                    # neighbour interpolation: a point between two graph neighbours should land
                    # between their teacher coordinates (what UMAP's own transform initialises to)
                    t = torch.rand((len(e), 1), generator=gen)
                    parts.append((1 - t) * Z[heads[e]] + t * Z[tails[e]])
                    mix_target = (1 - t) * T[heads[e]] + t * T[tails[e]]
            batch = torch.cat(parts)
            if config.noise_std > 0:
                batch = batch + config.noise_std * torch.randn(batch.shape, generator=gen)
            out = model(batch)
            nr = len(rows)
            loss_coord = (out[:nr] - T[rows]).pow(2).sum(1).mean()
            loss = config.coord_weight * loss_coord
            if heads is not None:
                ne = config.edge_batch_size
                loss_graph = umap_cross_entropy(
                    out[nr : nr + ne] * scale, out[nr + ne : nr + 2 * ne] * scale, a, b,
                    config.negative_samples, config.repulsion_strength, gen,
                )
                loss = loss + config.graph_weight * loss_graph
                if config.mix_weight > 0:
                    loss = loss + config.mix_weight * (out[nr + 2 * ne :] - mix_target).pow(2).sum(1).mean()
                sums["graph"] += loss_graph.item()
            sums["coord"] += loss_coord.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            apply_masks()
            sched.step()
        model.eval()
        with torch.no_grad():
            val = float((model(Z_hold) - T_hold).pow(2).sum(1).mean()) if n_hold else sums["coord"] / steps_per_epoch
        record = {
            "epoch": epoch + 1,
            "coord_loss": sums["coord"] / steps_per_epoch,
            "graph_loss": sums["graph"] / steps_per_epoch,
            "holdout_mse": val,
            "seconds": time.perf_counter() - started,
        }
        history.append(record)
        if log:
            log(record)
        if val < best[0] - 1e-5:
            best = (val, epoch + 1, copy.deepcopy(model.state_dict()))
        elif epoch + 1 - best[1] >= config.patience:
            break
        if config.max_seconds and time.perf_counter() - started > config.max_seconds:
            break
    model.load_state_dict(best[2])
    model.eval()
    return StudentResult(
        model=model,
        prep=prep,
        history=history,
        best_epoch=best[1],
        seconds=time.perf_counter() - started,
        config=asdict(config),
    )
