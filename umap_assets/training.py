"""The training chain's steps that are neither numerics nor Dagster: they read the store and the
samples, call :mod:`umap_assets.numerics`, and hand over :mod:`umap_assets.records`.

``defs/model.py`` wires these into assets; the benchmarks call them directly.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .model_store import ModelStore, served_projector
from .sample_rows import feature_rows, read_sample_rows
from .numerics.align import (Similarity, anchored_targets, fit_similarity, layout_trust_cost, place_new_rows,
                             refine_layout)
from .numerics.distill import neighbour_mixup
from .numerics.metrics import relative_displacement, subsample
from .records import Teacher
from .warehouse import Warehouse


def carry_served_layout(model, uids: list[str], E_served: np.ndarray, previous: tuple | None,
                        X_check: np.ndarray, config, *, seed: int) -> tuple[np.ndarray, dict]:
    """The layout of the fitted ``model`` (a ``umap.UMAP`` of the coreset rows ``uids``): the served map
    of the coreset, unless it costs more than ``config.max_layout_trust_cost`` of trustworthiness
    against the fresh layout with 95% confidence (the lower bound of the cost's interval above it),
    measured on the rows ``X_check`` (validation rows, which neither layout saw; the coreset when
    there are none) placed by ``transform`` against each; and the figures.

    Rows the served model was distilled on keep its teacher's coordinates (``previous``, the
    artifact's saved layout: a teacher's layout, not the student's copy of it, so the map does not
    degrade from one version to the next); the others are placed against them on the new graph
    (:func:`~umap_assets.numerics.align.place_new_rows`), from where the served model puts them.
    ``model.embedding_`` is left as fitted.
    """
    carried = np.array(E_served, np.float32)
    known = np.zeros(len(carried), bool)
    if previous is not None:
        where = {uid: i for i, uid in enumerate(previous[0])}
        rows = [(i, where[uid]) for i, uid in enumerate(uids) if uid in where]
        if rows:
            mine, theirs = map(np.array, zip(*rows))
            carried[mine], known[mine] = previous[1][theirs], True
    if known.any():
        carried = place_new_rows(model.graph_, carried, known, model._a, model._b, seed=seed,
                                 negative_sample_rate=model.negative_sample_rate,
                                 n_epochs=100 if len(carried) <= 10_000 else 30, learning_rate=model.learning_rate / 4)
        carried = refine_layout(model.graph_, carried, model._a, model._b, n_epochs=config.refine_epochs,
                                learning_rate=model.learning_rate * config.refine_learning_rate, seed=seed)
    fresh = model.embedding_
    maps = []
    try:
        for layout in (fresh, carried):
            model.embedding_ = layout
            maps.append(model.transform(X_check))
    finally:
        model.embedding_ = fresh
    cost = layout_trust_cost(X_check, *maps, max_rows=len(X_check), seed=seed)
    kept = cost.low <= config.max_layout_trust_cost
    return (carried if kept else fresh), {
        "layout": "served" if kept else "fresh", "layout_trust_cost": round(cost.cost, 5),
        "layout_trust_cost_low": round(cost.low, 5), "layout_trust_cost_high": round(cost.high, 5),
        "layout_check_rows": len(X_check),
        "layout_rows_kept": int(known.sum()), "layout_rows_placed": int(len(carried) - known.sum())}


def align_layout(embedding: np.ndarray, E_served: np.ndarray, version: str, *,
                 kept: bool = False) -> tuple[Similarity, dict]:
    """The similarity that carries a coreset layout onto the served model's map of the same rows
    (the identity for a ``kept`` layout, which is in that frame already), and its figures."""
    similarity = Similarity.identity(embedding.shape[1]) if kept else fit_similarity(embedding, E_served)
    return similarity, {"aligned_to": version, "alignment_scale": round(similarity.scale, 4),
                        "coreset_median_displacement": relative_displacement(E_served, similarity.apply(embedding),
                                                                             statistic="median")}


def distillation_set(warehouse: Warehouse, teacher: Teacher, *, extra_rows: int, min_rows: int, seed: int):
    """The student's rows ``X``, their teacher coordinates ``Y``, and the uids of the real ones.

    Coreset rows first (the teacher's ``embedding``; they carry the graph), then up to
    ``extra_rows`` other training rows, then new rows up to ``min_rows`` in all; the last two are
    labelled by the teacher's ``transform``. ``uids`` name the real rows, the first of ``X``.
    """
    core_uids = list(teacher.uids)
    rows = read_sample_rows(warehouse, "train", uids=core_uids, fill_to=len(core_uids) + extra_rows, seed=seed).table
    X_core, X_extra = feature_rows(rows.slice(0, len(core_uids))), feature_rows(rows.slice(len(core_uids)))
    X_new = neighbour_mixup(X_core, teacher.graph, min_rows - len(rows), seed)
    X_label = np.concatenate([X_extra, X_new])
    Y_label = (teacher.transform(X_label).astype(np.float32) if len(X_label)
               else np.empty((0, teacher.n_components), np.float32))
    X = np.concatenate([X_core, X_label])
    Y = np.concatenate([teacher.embedding.astype(np.float32), Y_label])
    return X, Y, core_uids + rows.column("uid").to_pylist()[len(core_uids):]


def anchored_distillation_targets(store: ModelStore, teacher: Teacher, X: np.ndarray, Y: np.ndarray, *,
                                  anchor_weight: float, anchor_radius: float | None) -> tuple[np.ndarray, str | None]:
    """The student's targets: the teacher's ``Y``, anchored to the served model's map of ``X`` when
    the teacher was aligned to that model (:func:`~umap_assets.numerics.align.anchored_targets`);
    and the version anchored to, if any."""
    served = served_projector(store, X.shape[1]) if anchor_weight > 0 else None
    if served is None or teacher.aligned_to != served.version:
        return Y, None  # an anchor needs the teacher's frame tied to the served model's
    to_native = teacher.similarity.inverse()
    return anchored_targets(Y, served.transform(X), to_native, anchor_weight, anchor_radius), served.version


def coverage_calibration_rows(held_out: pa.Table, X: np.ndarray, distances: np.ndarray, max_rows: int,
                              seed: int) -> np.ndarray:
    """The rows that calibrate the coverage radius: validation rows, or, when there are none, a
    random subset of at most ``max_rows`` of the training rows the coreset did not choose."""
    if held_out.num_rows:
        return feature_rows(held_out)
    rest = np.flatnonzero(distances > 0)
    rest = rest if len(rest) else np.arange(len(X))  # the coreset is every row: radius 0
    return X[rest[subsample(len(rest), max_rows, seed)]]


def loss_table(history: list[dict]) -> str:
    rows = "\n".join(
        f"| {h['step']} | {h['coord_loss']:.4f} | {h['graph_loss']:.4f} | {h['holdout_mse']:.4f} | {h['seconds']:.1f} |"
        for h in history
    )
    return "| step | coordinate | graph | holdout MSE | seconds |\n|---|---|---|---|---|\n" + rows


def artifact_coverage(store: ModelStore, warehouse: Warehouse, config, seed: int):
    """The coreset's coverage reference cut to its first ``coverage_dim`` components and ``coverage_landmarks``
    centers (the artifact's size budget), calibrated on validation rows (the coreset's own asset refuses to
    train without them)."""
    calibration = feature_rows(read_sample_rows(warehouse, "validation", fill_to=config.coverage_rows, seed=seed).table)
    return store.coreset_coverage().landmarks(config.coverage_landmarks, calibration, n_components=config.coverage_dim)
