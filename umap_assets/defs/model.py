"""The training chain: coreset -> teacher -> student -> artifact.

Unpartitioned assets whose cost is bounded by budgets (coreset size, distillation set size), never
by the number of rows in the slices. The numerics live in :mod:`umap_assets.numerics`; these
functions only read inputs, call them, write outputs and report metadata.
"""

import dataclasses
import time
import typing

import dagster as dg
import numpy as np
import pyarrow as pa
import pydantic

from ..model_store import COVERAGE_KEY, ModelStore, feature_rows, read_sample_rows, served_projector, teacher_alignment
from ..numerics import compress
from ..numerics.coreset import density_coverage_coreset, fit_pca_projection
from ..numerics.drift import coverage_reference
from ..numerics.align import (Similarity, align_student, anchored_targets, fit_similarity, layout_trust_cost,
                              place_new_rows, refine_layout)
from ..numerics.metrics import relative_displacement, subsample
from ..numerics.distill import StudentConfig, StudentResult, build_mlp, neighbour_mixup, train_student
from ..runtime import Projector
from ..warehouse import write_table
from ..warmup import cache_umap_kernels
from .ingest import samples
from .resources import WarehouseResource
from .groups import TRAINING

GROUP = TRAINING


def store_of(warehouse: WarehouseResource) -> ModelStore:
    return ModelStore(warehouse.layout())


class CoresetConfig(dg.Config):
    """A random draw (density) plus greedy k-center (coverage) over the PCA projection of every
    slice's training rows."""

    budget: int = 40_000  # the teacher's rows: 40k vs 20k lifts its 10-NN accuracy 0.755 -> 0.770 for +20 s (bench/RESULTS.md)
    density_fraction: float = 0.8  # share of the budget drawn at random; k-center spends the rest
    pca_dim: int = 32
    warm_start: bool = True
    max_candidates: int = 250_000
    coverage_quantile: float = 0.99  # drift: rows beyond this quantile of distances are "uncovered"
    coverage_rows: int = 5_000  # validation rows that calibrate the coverage radius
    seed: int = 0


#: The fewest sampled training rows a model is trained on (umap-learn needs well over its 15 neighbours).
MIN_TRAINING_ROWS = 100
#: The fewest validation rows the gates measure on (trustworthiness at k=15 needs more than 2k rows).
MIN_VALIDATION_ROWS = 32


def check_enough_rows(n_train: int, n_validation: int) -> None:
    """Fail in one line when the samples are too few to train and gate a model."""
    if n_train < MIN_TRAINING_ROWS or n_validation < MIN_VALIDATION_ROWS:
        raise dg.Failure(
            f"the samples hold {n_train} training and {n_validation} validation rows; training needs at least "
            f"{MIN_TRAINING_ROWS} and {MIN_VALIDATION_ROWS}: add slices, or raise samples' rate and floor"
        )


@dg.asset(deps=[samples], group_name=GROUP, kinds={"parquet", "numpy"})
def coreset(context: dg.AssetExecutionContext, config: CoresetConfig, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """A representative subset of the training rows of all samples (never validation rows).

    A seeded random draw keeps the data's density (``density_fraction`` of the budget); greedy
    k-center (farthest point) in a PCA space, with chunked distance updates and no N x N matrix,
    covers the rest, over at most ``max_candidates`` rows (a seeded subsample read file by file), so its
    time and memory are bounded whatever the number of slices. When new slices arrive it
    warm-starts from the previous coreset's rows that are still present and extends them,
    instead of starting over.
    """
    started = time.perf_counter()
    store = store_of(warehouse)
    previous: list[str] = []
    if config.warm_start and store.coreset_path.exists():
        import pyarrow.parquet as pq

        previous = pq.read_table(store.coreset_path, columns=["uid"]).column("uid").to_pylist()
    # bound the cost by a budget, not by N: the previous coreset's rows that are still there, then
    # a seeded subsample of the other training rows, read file by file
    rows = read_sample_rows(warehouse.warehouse(), "train", uids=previous, fill_to=config.max_candidates,
                            seed=config.seed, missing="skip")
    held_out = read_sample_rows(warehouse.warehouse(), "validation", fill_to=config.coverage_rows, seed=config.seed)
    check_enough_rows(rows.available, held_out.available)
    table, X = rows.table, feature_rows(rows.table)
    initial = np.arange(rows.n_requested)
    n_candidates = rows.available
    pca = fit_pca_projection(X, config.pca_dim, seed=config.seed)
    Z = pca.transform(X).astype(np.float32)
    result = density_coverage_coreset(Z, config.budget, density_fraction=config.density_fraction,
                                      initial=initial, seed=config.seed)
    # the coverage reference travels in the coreset file's own metadata: one atomic write for both
    calibration = coverage_calibration_rows(held_out.table, X, result.distances, config)
    reference = coverage_reference(pca, Z[result.indices], calibration, config.coverage_quantile)
    chosen = table.take(pa.array(result.indices))
    metadata = {**(chosen.schema.metadata or {}), COVERAGE_KEY: reference.to_bytes(include_centers=False)}
    chosen = chosen.replace_schema_metadata(metadata)
    size = write_table(chosen, store.coreset_path)
    strata = chosen.column("stratum").to_pylist()
    counts = {s: strata.count(s) for s in sorted(set(strata))}
    n_warm = result.n_initial
    context.log.info(f"coreset: {len(result.indices)} of {len(X)} rows, radius {result.radius:.4f}, {n_warm} kept")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(result.indices),
            "candidate_rows": len(X),
            "training_rows": n_candidates,
            "covering_radius": float(result.radius),
            "coverage_radius": reference.radius,
            "coverage_quantile": reference.quantile,
            "warm_start_rows": n_warm,
            "pca_dim": Z.shape[1],
            "pca_explained_variance": float(pca.explained_variance_ratio_.sum()),
            "counts_per_stratum": dg.MetadataValue.json(counts),
            "bytes": size,
            "seconds": round(time.perf_counter() - started, 2),
        }
    )


def coverage_calibration_rows(held_out: pa.Table, X: np.ndarray, distances: np.ndarray, config: CoresetConfig) -> np.ndarray:
    """The rows that calibrate the coverage radius: validation rows, or, when there are none, a
    random subset of the training rows the coreset did not choose."""
    if held_out.num_rows:
        return feature_rows(held_out)
    rest = np.flatnonzero(distances > 0)
    rest = rest if len(rest) else np.arange(len(X))  # the coreset is every row: radius 0
    return X[rest[subsample(len(rest), config.coverage_rows, config.seed)]]


class TeacherConfig(dg.Config):
    """umap-learn parameters for the teacher."""

    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "euclidean"
    n_components: int = 2
    # negative samples per positive edge in the layout's SGD (umap-learn's default is 5). 10 fits layouts that hold
    # up better on rows they never saw: on test rows via `transform`, Fashion-MNIST's trust@15 0.9735 -> 0.9763 and
    # 10-NN 0.768 -> 0.778; digits' trust@15 over four seeds 0.9636 -> 0.9662, its worst 0.9579 -> 0.9647
    # (bench/RESULTS.md, session 11)
    negative_sample_rate: int = 10
    seed: int | None = 0
    # keep the served model's map: record the similarity that carries the new layout of the coreset onto
    # the served model's map of it, for the student to fold in
    align_to_served: bool = True
    # and, with it, keep the served layout itself (its teacher's coordinates of the rows it knew, the new rows
    # placed against them), unless a fresh layout is credibly better: unless the cost in trustworthiness@15 on
    # validation rows against the fresh layout is above `max_layout_trust_cost` with 95% confidence (then the
    # fresh layout, aligned, is used and the map moves: new structure has to show). The map moves on evidence,
    # not on noise: on digits' 139 validation rows a cost of 0.004 is well within it. After +20% data, digits'
    # map moved 0.30-0.50 of its spread with the similarity alone (its clusters laid out anew), 0.008 with
    # the layout kept (bench/RESULTS.md, sessions 10 and 11)
    keep_served_layout: bool = True
    max_layout_trust_cost: float = 0.002
    layout_check_rows: int = 5_000  # validation rows the two layouts are compared on
    # then refine the kept layout on the new graph, every row free, for this many epochs at this fraction of
    # the fit's learning rate. Off: on digits 100 epochs moved the map 0.019 instead of 0.008 and lifted
    # trust@15 only from 0.9558 to 0.9588 (bench/RESULTS.md, session 11)
    refine_epochs: int = 0
    refine_learning_rate: float = 0.05
    # start the layout from the served map (umap-learn's `init=`) instead of the seeded spectral layout:
    # umap-learn rescales it and re-optimises, which moved Fashion-MNIST's map 5x more (bench/RESULTS.md, session 9)
    init_from_served: bool = False


@dg.asset(deps=[coreset], group_name=GROUP, kinds={"umap", "python"})
def teacher(context: dg.AssetExecutionContext, config: TeacherConfig, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """umap-learn's ``UMAP`` fitted on the coreset, pickled with its fitted graph (``graph_``).

    With a model served (and ``align_to_served``), the served layout (its teacher's coordinates of
    the rows it knew, the new rows placed against them) becomes the layout unless the fresh one is
    credibly better (``keep_served_layout``, :func:`carry_served_layout`); otherwise the similarity
    that carries the fresh layout onto that map is recorded (:func:`align_teacher`) and the student
    folds it in, so the new artifact keeps the served map's frame (``init_from_served`` also starts
    the fresh layout from that map). Its size grows with the coreset, which is why the product
    ships the distilled artifact instead.
    """
    import pyarrow.parquet as pq
    import umap

    cache_umap_kernels()
    store = store_of(warehouse)
    table = pq.read_table(store.coreset_path)
    X = feature_rows(table)
    served = served_projector(store, X.shape[1]) if config.align_to_served else None
    E_served = served.transform(X) if served is not None else None
    started = time.perf_counter()
    model = umap.UMAP(
        n_neighbors=config.n_neighbors,
        min_dist=config.min_dist,
        metric=config.metric,
        n_components=config.n_components,
        negative_sample_rate=config.negative_sample_rate,
        random_state=config.seed,
        n_jobs=1 if config.seed is not None else -1,  # a seed makes umap-learn single-threaded anyway
        init=E_served if E_served is not None and config.init_from_served else "spectral",
    ).fit(X)
    fit_seconds = time.perf_counter() - started
    model.coreset_uids_ = table.column("uid").to_pylist()
    layout = {"layout": "fresh"} if served is not None else {}
    if served is not None and config.keep_served_layout:
        held_out = read_sample_rows(warehouse.warehouse(), "validation", fill_to=config.layout_check_rows,
                                    seed=config.seed or 0)
        layout = carry_served_layout(model, X, E_served, store.load_layout(served.version),
                                     feature_rows(held_out.table) if held_out.available else X, config)
    kept = layout.get("layout") == "served"
    alignment = {**layout, **align_teacher(model, E_served, served.version, kept=kept)} if served is not None else {}
    if alignment:
        context.log.info(f"teacher aligned to the served model: {alignment}")
    size = store.save_teacher(model)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(X),
            "fit_seconds": round(fit_seconds, 2),
            "bytes": size,
            "graph_edges": int(model.graph_.nnz),
            "n_neighbors": config.n_neighbors,
            "min_dist": config.min_dist,
            "metric": config.metric,
            "n_components": config.n_components,
            **alignment,
            "path": dg.MetadataValue.path(str(store.teacher_path)),
        }
    )


def carry_served_layout(model, X: np.ndarray, E_served: np.ndarray, previous: tuple | None,
                        X_check: np.ndarray, config: TeacherConfig) -> dict:
    """Make the served map of the coreset ``model``'s layout (``embedding_``, which its ``transform``
    places new rows against), unless it costs more than ``config.max_layout_trust_cost`` of
    trustworthiness against the fresh layout with 95% confidence (the lower bound of the cost's
    interval above it), measured on the rows ``X_check`` (validation rows, which neither layout
    saw; the coreset when there are none) placed by ``transform`` against each; the figures.

    Rows the served model was distilled on keep its teacher's coordinates (``previous``, the
    artifact's saved layout: a teacher's layout, not the student's copy of it, so the map does not
    degrade from one version to the next); the others are placed against them on the new graph
    (:func:`~umap_assets.numerics.align.place_new_rows`), from where the served model puts them.
    """
    carried = np.array(E_served, np.float32)
    known = np.zeros(len(X), bool)
    if previous is not None:
        where = {uid: i for i, uid in enumerate(previous[0])}
        rows = [(i, where[uid]) for i, uid in enumerate(model.coreset_uids_) if uid in where]
        if rows:
            mine, theirs = map(np.array, zip(*rows))
            carried[mine], known[mine] = previous[1][theirs], True
    if known.any():
        carried = place_new_rows(model.graph_, carried, known, model._a, model._b, seed=config.seed or 0,
                                 negative_sample_rate=model.negative_sample_rate,
                                 n_epochs=100 if len(X) <= 10_000 else 30, learning_rate=model.learning_rate / 4)
        carried = refine_layout(model.graph_, carried, model._a, model._b, n_epochs=config.refine_epochs,
                                learning_rate=model.learning_rate * config.refine_learning_rate, seed=config.seed or 0)
    fresh = model.embedding_
    maps = []
    for layout in (fresh, carried):
        model.embedding_ = layout
        maps.append(model.transform(X_check))
    cost = layout_trust_cost(X_check, *maps, max_rows=len(X_check), seed=config.seed or 0)
    kept = cost.low <= config.max_layout_trust_cost
    model.embedding_ = carried if kept else fresh
    return {"layout": "served" if kept else "fresh", "layout_trust_cost": round(cost.cost, 5),
            "layout_trust_cost_low": round(cost.low, 5), "layout_trust_cost_high": round(cost.high, 5),
            "layout_check_rows": len(X_check),
            "layout_rows_kept": int(known.sum()), "layout_rows_placed": int(len(X) - known.sum())}


def align_teacher(model, E_served: np.ndarray, version: str, *, kept: bool = False) -> dict:
    """Record on ``model`` the similarity that carries its coreset layout onto the served model's
    map of the same rows (``alignment_``, ``aligned_to_``): the identity for a ``kept`` layout,
    which is in that frame already; returns the figures for the metadata."""
    similarity = Similarity.identity(model.n_components) if kept else fit_similarity(model.embedding_, E_served)
    model.alignment_, model.aligned_to_ = similarity.to_dict(), version
    return {"aligned_to": version, "alignment_scale": round(similarity.scale, 4),
            "coreset_median_displacement": relative_displacement(E_served, similarity.apply(model.embedding_),
                                                                 statistic="median")}


class _StudentTraining(dg.Config):
    """Distillation: the rows to label with the teacher, and the MLP and its schedule, whose fields
    and defaults are :class:`~umap_assets.numerics.distill.StudentConfig`'s own (one declaration).

    ``extra_rows`` training rows beyond the coreset are labelled with ``teacher.transform``. When the
    coreset and those make fewer than ``min_rows``, the rest are new rows between the coreset's graph
    neighbours (:func:`~umap_assets.numerics.distill.neighbour_mixup`), labelled the same way: on a
    small data set the student would otherwise see each row thousands of times (digits, 1,298 rows:
    trust@5 0.9755 -> 0.9772 on unseen rows, bench/RESULTS.md, session 8).
    """

    extra_rows: int = 40_000
    min_rows: int = 20_000
    # pull each distillation row's target this far towards where the served model puts it (0: none,
    # 1: copy it), less for rows the new teacher moved more than `anchor_radius` median moves (a region
    # the served model did not know follows the teacher). Off by default: on Fashion-MNIST it moved the
    # map 0.0075 of its spread instead of 0.0083, on digits it cost the trust gate (bench/RESULTS.md, session 9)
    anchor_weight: float = 0.0
    anchor_radius: float | None = 3.0

    def student_config(self) -> StudentConfig:
        fields = self.model_dump()
        for own in ("extra_rows", "min_rows", "anchor_weight", "anchor_radius"):
            fields.pop(own)
        fields["hidden"] = tuple(fields["hidden"])
        return StudentConfig(**fields)


def _config_fields(declaration) -> dict:
    """Pydantic field specs for a dataclass's fields (tuples become lists: Dagster config has no tuples)."""
    hints = typing.get_type_hints(declaration)
    fields = {}
    for f in dataclasses.fields(declaration):
        annotation, default = hints[f.name], f.default
        if typing.get_origin(annotation) is tuple:
            annotation, default = list[typing.get_args(annotation)[0]], list(default)
        fields[f.name] = (annotation, default)
    return fields


StudentTrainingConfig = pydantic.create_model("StudentTrainingConfig", __base__=_StudentTraining,
                                              __module__=__name__, **_config_fields(StudentConfig))


def distillation_set(warehouse: WarehouseResource, teacher_model, config: StudentTrainingConfig):
    """The student's rows ``X``, their teacher coordinates ``Y``, and the uids of the real ones.

    Coreset rows first (teacher coordinates from ``embedding_``; they carry the graph), then up to
    ``config.extra_rows`` other training rows, then new rows up to ``config.min_rows`` in all; the
    last two are labelled by ``teacher.transform``. ``uids`` name the real rows, the first of ``X``.
    """
    core_uids = list(teacher_model.coreset_uids_)
    rows = read_sample_rows(warehouse.warehouse(), "train", uids=core_uids,
                            fill_to=len(core_uids) + config.extra_rows, seed=config.seed).table
    X_core, X_extra = feature_rows(rows.slice(0, len(core_uids))), feature_rows(rows.slice(len(core_uids)))
    X_new = neighbour_mixup(X_core, teacher_model.graph_, config.min_rows - len(rows), config.seed)
    X_label = np.concatenate([X_extra, X_new])
    Y_label = (teacher_model.transform(X_label).astype(np.float32) if len(X_label)
               else np.empty((0, teacher_model.n_components), np.float32))
    X = np.concatenate([X_core, X_label])
    Y = np.concatenate([teacher_model.embedding_.astype(np.float32), Y_label])
    return X, Y, core_uids + rows.column("uid").to_pylist()[len(core_uids):]


def anchored_distillation_targets(store: ModelStore, teacher_model, X: np.ndarray, Y: np.ndarray,
                                  config: StudentTrainingConfig) -> tuple[np.ndarray, str | None]:
    """The student's targets: the teacher's ``Y``, anchored to the served model's map of ``X`` when
    the teacher was aligned to that model (:func:`~umap_assets.numerics.align.anchored_targets`);
    and the version anchored to, if any."""
    served = served_projector(store, X.shape[1]) if config.anchor_weight > 0 else None
    if served is None or getattr(teacher_model, "aligned_to_", None) != served.version:
        return Y, None  # an anchor needs the teacher's frame tied to the served model's
    to_native = teacher_alignment(teacher_model).inverse()
    return anchored_targets(Y, served.transform(X), to_native, config.anchor_weight, config.anchor_radius), served.version


@dg.asset(deps=[teacher], group_name=GROUP, kinds={"pytorch"})
def student(
    context: dg.AssetExecutionContext, config: StudentTrainingConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """A torch MLP distilled from the teacher with the parametric-UMAP loss plus a coordinate term.

    The distillation set is the coreset plus extra training rows labelled by ``teacher.transform``,
    and on a small data set new rows between neighbours (``min_rows``); training runs a fixed
    number of steps (no early stopping, no clock) with input noise, and records the coordinate
    error on a held-out part of it. After a retraining its targets are anchored to the served map
    (``anchor_weight``), and the teacher's alignment is folded into its output layer.
    """
    from umap.umap_ import find_ab_params

    store = store_of(warehouse)
    teacher_model = store.load_teacher()
    started = time.perf_counter()
    X, Y, uids = distillation_set(warehouse, teacher_model, config)
    label_seconds = time.perf_counter() - started
    a, b = find_ab_params(teacher_model.spread, teacher_model.min_dist)
    similarity = teacher_alignment(teacher_model)
    Y_fit, anchored_to = anchored_distillation_targets(store, teacher_model, X, Y, config)
    cfg = config.student_config()
    result = train_student(X, Y_fit, teacher_model.graph_, float(a), float(b), cfg,
                           log=lambda r: context.log.debug(str(r)))
    result = align_student(result, similarity)  # into the served model's frame, when the teacher was aligned
    size = store.save_student(
        {
            "state_dict": result.model.state_dict(),
            "prep": result.prep,
            "config": result.config,
            "history": result.history,
            "steps": result.steps,
            "a": float(a),
            "b": float(b),
            "uids": uids,
            "targets": similarity.apply(Y[: len(uids)]),  # the teacher's map of the real rows, aligned
            "input_dim": X.shape[1],
            "n_components": Y.shape[1],
        }
    )
    last = result.history[-1]
    return dg.MaterializeResult(
        metadata={
            "distillation_rows": len(X),
            "coreset_rows": teacher_model.graph_.shape[0],
            "new_rows": len(X) - len(uids),
            "anchored_to": anchored_to or "none",
            "teacher_transform_seconds": round(label_seconds, 2),
            "steps": result.steps,
            "coord_loss": float(last["coord_loss"]),
            "graph_loss": float(last["graph_loss"]),
            "holdout_mse": float(last["holdout_mse"]),
            "train_seconds": round(result.seconds, 2),
            "parameters": result.n_parameters,
            "input_components": int(result.prep.components.shape[0]),
            "noise_std": round(float(result.config["noise_std"]), 4),
            "bytes": size,
            "losses": dg.MetadataValue.md(loss_table(result.history)),
        }
    )


def loss_table(history: list[dict]) -> str:
    rows = "\n".join(
        f"| {h['step']} | {h['coord_loss']:.4f} | {h['graph_loss']:.4f} | {h['holdout_mse']:.4f} | {h['seconds']:.1f} |"
        for h in history
    )
    return "| step | coordinate | graph | holdout MSE | seconds |\n|---|---|---|---|---|\n" + rows


def load_student_result(payload: dict) -> StudentResult:
    cfg = payload["config"]
    n_in = payload["prep"].components.shape[0]
    model = build_mlp(n_in, tuple(cfg["hidden"]), payload["n_components"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return StudentResult(model=model, prep=payload["prep"], history=payload["history"],
                         steps=payload["steps"], config=cfg)


class ArtifactConfig(dg.Config):
    """Compression: optional magnitude-pruning sparsity and the fine-tuning that follows it; the
    landmarks of the training data that travel in the artifact, for each row's coverage figure."""

    sparsity: float = 0.0  # int8 alone keeps the map; pruning 10% moved 2-D neighbours (bench/RESULTS.md)
    finetune_steps: int = 300
    finetune_learning_rate: float = 5e-4
    coverage_landmarks: int = 512  # coreset rows kept by k-center: 32 KB in float16 at the coreset's 32-d PCA
    coverage_rows: int = 5_000  # validation rows that calibrate the landmarks' distances


def artifact_coverage(store: ModelStore, warehouse: WarehouseResource, config: ArtifactConfig):
    """The coreset's coverage reference cut to ``coverage_landmarks`` centers, calibrated on
    validation rows (the coreset's own asset refuses to train without them)."""
    held_out = read_sample_rows(warehouse.warehouse(), "validation", fill_to=config.coverage_rows, seed=0)
    return store.coreset_coverage().landmarks(config.coverage_landmarks, feature_rows(held_out.table))


@dg.asset(deps=[student, coreset, samples], group_name=GROUP, kinds={"numpy"})
def artifact(
    context: dg.AssetExecutionContext, config: ArtifactConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """The compressed student: int8-quantized in groups of 32 inputs (output layer float32),
    optionally pruned, with input normalisation and output scaling folded in.

    Written as ``models/artifacts/<version>.uart`` (and ``models/candidate.uart``). ``quality_report``
    measures it, and ``model`` promotes it only when the report's blocking gates pass, so
    ``embeddings`` never uses an artifact that failed them.

    One self-contained file (manifest with format version, input dimension and columns,
    preprocessing, source versions and a sha256) that :class:`umap_assets.runtime.Projector` reads
    with numpy alone.
    """
    started = time.perf_counter()
    store = store_of(warehouse)
    payload = store.load_student()
    result = load_student_result(payload)
    if config.sparsity > 0 and config.finetune_steps > 0:
        X = feature_rows(read_sample_rows(warehouse.warehouse(), "train", uids=payload["uids"]).table)
    else:
        X = None
    result = compress.prune(result, X, config.sparsity, config.finetune_steps, config.finetune_learning_rate)
    layers = compress.fold_layers(result)
    blob = compress.build_artifact(
        layers,
        sources={
            "teacher_bytes": store.teacher_path.stat().st_size,
            "student_sha256_prefix": _sha_prefix(store.student_path),
            "distillation_rows": len(payload["uids"]),
        },
        extra={"sparsity": config.sparsity},
        coverage=artifact_coverage(store, warehouse, config),
    )
    projector = Projector.from_bytes(blob, source="new artifact")
    version = projector.version
    from ..atomic import atomic_write_bytes

    atomic_write_bytes(store.versioned_artifact_path(version), blob)
    store.save_layout(version, payload["uids"], payload["targets"])  # what a retraining keeps of this map
    atomic_write_bytes(store.candidate_path, blob)  # promoted by the quality gates
    teacher_bytes = store.teacher_path.stat().st_size
    float_bytes = 4 * sum(layer.weight.size + layer.bias.size for layer in layers)
    return dg.MaterializeResult(
        metadata={
            "bytes": len(blob),
            "version": version,
            "ratio_vs_teacher_pickle": round(teacher_bytes / len(blob), 1),
            "ratio_vs_float_student": round(float_bytes / len(blob), 2),
            "teacher_pickle_bytes": teacher_bytes,
            "float_student_bytes": float_bytes,
            "sparsity": dg.MetadataValue.json(compress.sparsity_of(result.model)),
            "path": dg.MetadataValue.path(str(store.versioned_artifact_path(version))),
            "seconds": round(time.perf_counter() - started, 2),
        },
        data_version=dg.DataVersion(version),
    )


def _sha_prefix(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
