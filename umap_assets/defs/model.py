"""The training chain: coreset -> teacher -> student -> artifact.

Unpartitioned assets whose cost is bounded by budgets (coreset size, distillation set size), never
by the number of rows in the slices. The numerics live in :mod:`umap_assets.numerics`; these
functions only read inputs, call them, write outputs and report metadata.
"""

import functools
import time

import dagster as dg
import numpy as np
import pyarrow as pa
import pydantic
from pydantic import Field

from ..artifacts import build_artifact
from ..contract import read_verified
from ..history import upstream_version
from ..model_store import COVERAGE_KEY, served_projector
from ..sample_rows import feature_rows, read_sample_rows
from ..numerics import compress
from ..numerics.coreset import density_coverage_coreset, fit_pca_projection
from ..numerics.drift import coverage_reference, fit_coverage_basis
from ..numerics.align import align_student
from ..numerics.distill import StudentConfig, train_student
from ..records import Student, Teacher
from ..runtime import Projector
from ..training import (align_layout, anchored_distillation_targets, artifact_coverage, carry_served_layout,
                        coverage_calibration_rows, distillation_set, loss_table)
from ..warehouse import write_table
from ..warmup import cache_umap_kernels
from ..map_names import DEFAULT_NAMES, MapNames
from .binding import map_asset
from .groups import TRAINING
from .resources import Seed, WarehouseResource, config_fields


class CoresetConfig(dg.Config):
    """A random draw (density) plus greedy k-center (coverage) over the PCA projection of every
    slice's training rows."""

    budget: int = Field(40_000, ge=1)  # the teacher's rows: 40k vs 20k lifts its 10-NN accuracy 0.755 -> 0.770 for +20 s (bench/RESULTS.md)
    density_fraction: float = Field(0.8, ge=0, le=1)  # share of the budget drawn at random; k-center spends the rest
    pca_dim: int = Field(32, ge=1)
    warm_start: bool = True
    max_candidates: int = Field(250_000, ge=1)
    coverage_quantile: float = Field(0.99, gt=0, le=1)  # drift: rows beyond this quantile of distances are "uncovered"
    coverage_rows: int = Field(5_000, ge=1)  # validation rows that calibrate the coverage radius
    # drift's distances: in the leading components that keep this share of the variance (at most coverage_max_dim).
    # 0.9 flags every debian-text topic no model saw, and no trained one; at the 32 of pca_dim four of five
    # slipped through (bench/RESULTS.md, session 21)
    coverage_kept_variance: float = Field(0.9, gt=0, le=1)
    coverage_max_dim: int = Field(256, ge=1)


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


def compute_coreset(context: dg.AssetExecutionContext, config: CoresetConfig, warehouse: WarehouseResource,
            seed: Seed) -> dg.MaterializeResult:
    """A representative subset of the training rows of all samples (never validation rows).

    A seeded random draw keeps the data's density (``density_fraction`` of the budget); greedy
    k-center (farthest point) in a PCA space, with chunked distance updates and no N x N matrix,
    covers the rest, over at most ``max_candidates`` rows (a seeded subsample read file by file), so its
    time and memory are bounded whatever the number of slices. When new slices arrive it
    warm-starts from the previous coreset's rows that are still present and extends them,
    instead of starting over.
    """
    started = time.perf_counter()
    store = warehouse.store()
    previous: list[str] = []
    if config.warm_start and store.coreset_path.exists():
        previous = read_verified(store.coreset_path, columns=["uid"]).column("uid").to_pylist()
    # bound the cost by a budget, not by N: the previous coreset's rows that are still there, then
    # a seeded subsample of the other training rows, read file by file
    rows = read_sample_rows(warehouse.warehouse(), "train", uids=previous, fill_to=config.max_candidates,
                            seed=seed.value, missing="skip")
    held_out = read_sample_rows(warehouse.warehouse(), "validation", fill_to=config.coverage_rows, seed=seed.value)
    check_enough_rows(rows.available, held_out.available)
    table, X = rows.table, feature_rows(rows.table)
    initial = np.arange(rows.n_requested)
    n_candidates = rows.available
    pca = fit_pca_projection(X, config.pca_dim, seed=seed.value)
    Z = pca.transform(X).astype(np.float32)
    result = density_coverage_coreset(Z, config.budget, density_fraction=config.density_fraction,
                                      initial=initial, seed=seed.value)
    # the coverage reference travels in the coreset file's own metadata: one atomic write for both
    calibration = coverage_calibration_rows(held_out.table, X, result.distances, config.coverage_rows, seed.value)
    basis = fit_coverage_basis(X, config.coverage_kept_variance, config.coverage_max_dim, seed=seed.value)
    chosen_rows = X[result.indices]
    reference = coverage_reference(basis, basis.transform(chosen_rows), calibration, config.coverage_quantile)
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
            "coverage_dim": len(basis.components_),
            "coverage_explained_variance": float(basis.explained_variance_ratio_.sum()),
            "warm_start_rows": n_warm,
            "pca_dim": Z.shape[1],
            "pca_explained_variance": float(pca.explained_variance_ratio_.sum()),
            "counts_per_stratum": dg.MetadataValue.json(counts),
            "bytes": size,
            "seconds": round(time.perf_counter() - started, 2),
        }
    )


class TeacherConfig(dg.Config):
    """umap-learn parameters for the teacher."""

    n_neighbors: int = Field(15, ge=2)
    min_dist: float = Field(0.1, ge=0, le=1)  # at most umap-learn's spread, 1
    metric: str = Field("euclidean", min_length=1)
    n_components: int = Field(2, ge=2)  # the map draws two
    # negative samples per positive edge in the layout's SGD (umap-learn's default is 5). 10 fits layouts that hold
    # up better on rows they never saw: on test rows via `transform`, Fashion-MNIST's trust@15 0.9735 -> 0.9763 and
    # 10-NN 0.768 -> 0.778; digits' trust@15 over four seeds 0.9636 -> 0.9662, its worst 0.9579 -> 0.9647
    # (bench/RESULTS.md, session 11)
    negative_sample_rate: int = Field(10, ge=1)
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
    max_layout_trust_cost: float = Field(0.002, ge=0)
    layout_check_rows: int = Field(5_000, ge=1)  # validation rows the two layouts are compared on
    # then refine the kept layout on the new graph, every row free, for this many epochs at this fraction of
    # the fit's learning rate. Off: on digits 100 epochs moved the map 0.019 instead of 0.008 and lifted
    # trust@15 only from 0.9558 to 0.9588 (bench/RESULTS.md, session 11)
    refine_epochs: int = Field(0, ge=0)
    refine_learning_rate: float = Field(0.05, gt=0)
    # start the layout from the served map (umap-learn's `init=`) instead of the seeded spectral layout:
    # umap-learn rescales it and re-optimises, which moved Fashion-MNIST's map 5x more (bench/RESULTS.md, session 9)
    init_from_served: bool = False


def compute_teacher(context: dg.AssetExecutionContext, config: TeacherConfig, warehouse: WarehouseResource,
            seed: Seed) -> dg.MaterializeResult:
    """umap-learn's ``UMAP`` fitted on the coreset, kept as a :class:`~umap_assets.records.Teacher`
    record (its layout, fuzzy graph, ``a``, ``b``, parameters and rows: no pickled estimator),
    ``models/teachers/<version>.npz``; its ``version`` metadata names it for the steps after it.

    With a model served (and ``align_to_served``), the served layout (its teacher's coordinates of
    the rows it knew, the new rows placed against them) becomes the layout unless the fresh one is
    credibly better (``keep_served_layout``, :func:`~umap_assets.training.carry_served_layout`);
    otherwise the similarity that carries the fresh layout onto that map is recorded
    (:func:`~umap_assets.training.align_layout`) and the student folds it in, so the new artifact
    keeps the served map's frame (``init_from_served`` also starts the fresh layout from that map).
    It reads validation samples to compare the two layouts. Its size grows with the coreset, which
    is why the product ships the distilled artifact instead.
    """
    import umap

    cache_umap_kernels()
    store = warehouse.store()
    table = read_verified(store.coreset_path)
    X = feature_rows(table)
    uids = table.column("uid").to_pylist()
    served = served_projector(store, X.shape[1]) if config.align_to_served else None
    E_served = served.transform(X) if served is not None else None
    started = time.perf_counter()
    model = umap.UMAP(
        n_neighbors=config.n_neighbors,
        min_dist=config.min_dist,
        metric=config.metric,
        n_components=config.n_components,
        negative_sample_rate=config.negative_sample_rate,
        random_state=seed.value,
        n_jobs=1,  # a seed makes umap-learn single-threaded anyway
        init=E_served if E_served is not None and config.init_from_served else "spectral",
    ).fit(X)
    fit_seconds = time.perf_counter() - started
    embedding, layout = model.embedding_, ({"layout": "fresh"} if served is not None else {})
    if served is not None and config.keep_served_layout:
        held_out = read_sample_rows(warehouse.warehouse(), "validation", fill_to=config.layout_check_rows,
                                    seed=seed.value)
        embedding, layout = carry_served_layout(model, uids, E_served, store.load_layout(served.version),
                                                feature_rows(held_out.table) if held_out.available else X, config,
                                                seed=seed.value)
    similarity, alignment = None, {}
    if served is not None:
        similarity, figures = align_layout(embedding, E_served, served.version, kept=layout.get("layout") == "served")
        alignment = {**layout, **figures}
        context.log.info(f"teacher aligned to the served model: {alignment}")
    record = Teacher.from_fitted(model, uids, embedding=embedding, alignment=similarity,
                                 aligned_to=served.version if served is not None else None)
    size = record.save(store.teachers_dir)
    return dg.MaterializeResult(
        metadata={
            "version": record.version,
            "dagster/row_count": len(X),
            "fit_seconds": round(fit_seconds, 2),
            "bytes": size,
            "graph_edges": int(record.graph.nnz),
            "n_neighbors": config.n_neighbors,
            "min_dist": config.min_dist,
            "metric": config.metric,
            "n_components": config.n_components,
            **alignment,
            "path": dg.MetadataValue.path(str(store.teacher_path(record.version))),
        },
        data_version=dg.DataVersion(record.version),
    )


class _StudentTraining(dg.Config):
    """Distillation: the rows to label with the teacher, and the MLP and its schedule, whose fields
    and defaults are :class:`~umap_assets.numerics.distill.StudentConfig`'s own (one declaration).

    ``extra_rows`` training rows beyond the coreset are labelled with ``teacher.transform``. When the
    coreset and those make fewer than ``min_rows``, the rest are new rows between the coreset's graph
    neighbours (:func:`~umap_assets.numerics.distill.neighbour_mixup`), labelled the same way: on a
    small data set the student would otherwise see each row thousands of times (digits, 1,298 rows:
    trust@5 0.9755 -> 0.9772 on unseen rows, bench/RESULTS.md, session 8).
    """

    extra_rows: int = Field(40_000, ge=0)
    min_rows: int = Field(20_000, ge=0)
    # pull each distillation row's target this far towards where the served model puts it (0: none,
    # 1: copy it), less for rows the new teacher moved more than `anchor_radius` median moves (a region
    # the served model did not know follows the teacher). Off by default: on Fashion-MNIST it moved the
    # map 0.0075 of its spread instead of 0.0083, on digits it cost the trust gate (bench/RESULTS.md, session 9)
    anchor_weight: float = Field(0.0, ge=0, le=1)
    anchor_radius: float | None = Field(3.0, gt=0)

    @pydantic.field_validator("hidden", check_fields=False)
    @classmethod
    def _widths(cls, hidden: list[int]) -> list[int]:
        if any(width < 1 for width in hidden):
            raise ValueError(f"every hidden layer needs at least 1 unit, got {hidden}")
        return hidden

    def student_config(self, seed: int) -> StudentConfig:
        fields = self.model_dump()
        for own in ("extra_rows", "min_rows", "anchor_weight", "anchor_radius"):
            fields.pop(own)
        fields["hidden"] = tuple(fields["hidden"])
        return StudentConfig(**fields, seed=seed)


#: The range of each of :class:`~umap_assets.numerics.distill.StudentConfig`'s fields, as pydantic
#: ``Field`` constraints: a value outside it is refused before any run (``umap-assets run --config``)
#: and at the start of a run launched from the UI. Every field has one (test_cli checks).
STUDENT_RANGES: dict[str, dict] = {
    "hidden": {"min_length": 1}, "input_pca_dim": {"ge": 1}, "steps": {"ge": 1}, "batch_size": {"ge": 1},
    "edge_batch_size": {"ge": 1}, "negative_samples": {"ge": 1}, "coord_weight": {"ge": 0},
    "coord_loss": {"pattern": "^(squared|distance)$"}, "edge_coord_weight": {"ge": 0}, "graph_weight": {"ge": 0},
    "repulsion_strength": {"ge": 0}, "learning_rate": {"gt": 0}, "weight_decay": {"ge": 0}, "noise_std": {"ge": 0},
    "spread_kept": {"ge": 0, "le": 1}, "spread_input_pca_dim": {"ge": 1}, "noise_to_neighbours": {"ge": 0},
    "mix_weight": {"ge": 0}, "holdout_fraction": {"ge": 0, "lt": 1},
    "eval_every": {"ge": 1}, "seed": {"ge": 0}, "threads": {"ge": 1},
}


StudentTrainingConfig = pydantic.create_model("StudentTrainingConfig", __base__=_StudentTraining,
                                              __module__=__name__, **config_fields(StudentConfig, STUDENT_RANGES,
                                                                                   leave_out=("seed",)))


def compute_student(
    context: dg.AssetExecutionContext, config: StudentTrainingConfig, warehouse: WarehouseResource, seed: Seed,
    names: MapNames,
) -> dg.MaterializeResult:
    """A torch MLP distilled from the teacher with the parametric-UMAP loss plus a coordinate term,
    kept as a :class:`~umap_assets.records.Student` record (``models/students/<version>.npz``).

    The distillation set is the coreset plus extra training rows labelled by the teacher's
    ``transform``, and on a small data set new rows between neighbours (``min_rows``); training runs a fixed
    number of steps (no early stopping, no clock) with input noise, and records the coordinate
    error on a held-out part of it. After a retraining its targets are anchored to the served map
    (``anchor_weight``), and the teacher's alignment is folded into its output layer.
    """
    store = warehouse.store()
    teacher_record = store.teacher(upstream_version(context.instance, names.asset_key("teacher"), context.run.run_id))
    started = time.perf_counter()
    X, Y, uids = distillation_set(warehouse.warehouse(), teacher_record, extra_rows=config.extra_rows,
                                  min_rows=config.min_rows, seed=seed.value)
    label_seconds = time.perf_counter() - started
    similarity = teacher_record.similarity
    Y_fit, anchored_to = anchored_distillation_targets(store, teacher_record, X, Y, anchor_weight=config.anchor_weight,
                                                       anchor_radius=config.anchor_radius)
    graph = teacher_record.fuzzy_graph
    result = train_student(X, Y_fit, graph, config.student_config(seed.value), log=lambda r: context.log.debug(str(r)))
    result = align_student(result, similarity)  # into the served model's frame, when the teacher was aligned
    record = Student.from_result(result, a=graph.a, b=graph.b, uids=uids, teacher_version=teacher_record.version,
                                 targets=similarity.apply(Y[: len(uids)]))  # the teacher's map of the real rows
    size = record.save(store.students_dir)
    last = result.history[-1]
    return dg.MaterializeResult(
        metadata={
            "version": record.version,
            "teacher_version": teacher_record.version,
            "distillation_rows": len(X),
            "coreset_rows": teacher_record.graph.shape[0],
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
        },
        data_version=dg.DataVersion(record.version),
    )


class ArtifactConfig(dg.Config):
    """Compression: optional magnitude-pruning sparsity and the fine-tuning that follows it; the
    landmarks of the training data that travel in the artifact, for each row's coverage figure."""

    sparsity: float = Field(0.0, ge=0, lt=1)  # int8 alone keeps the map; pruning 10% moved 2-D neighbours (bench/RESULTS.md)
    finetune_steps: int = Field(300, ge=0)
    finetune_learning_rate: float = Field(5e-4, gt=0)
    coverage_landmarks: int = Field(512, ge=1)  # coreset rows kept by k-center: 32 KB in float16 at 32 components
    coverage_dim: int = Field(32, ge=1)  # the landmarks' leading components of the coreset's coverage (the rest is residual)
    coverage_rows: int = Field(5_000, ge=1)  # validation rows that calibrate the landmarks' distances


def compute_artifact(
    context: dg.AssetExecutionContext, config: ArtifactConfig, warehouse: WarehouseResource, seed: Seed,
    names: MapNames,
) -> dg.MaterializeResult:
    """The compressed student: int8-quantized in groups of 32 inputs (output layer float32),
    optionally pruned, with input normalisation and output scaling folded in.

    Written once as ``models/artifacts/<version>.uart`` (its ``version`` metadata names it). ``quality_report``
    measures it, and ``model`` promotes it only when the report's blocking gates pass, so
    ``embeddings`` never uses an artifact that failed them.

    One self-contained file (manifest with format version, input dimension and columns,
    preprocessing, source versions and a sha256) that :class:`umap_assets.runtime.Projector` reads
    with numpy alone.
    """
    started = time.perf_counter()
    store = warehouse.store()
    record = store.student(upstream_version(context.instance, names.asset_key("student"), context.run.run_id))
    result = record.result()
    if config.sparsity > 0 and config.finetune_steps > 0:
        X = feature_rows(read_sample_rows(warehouse.warehouse(), "train", uids=record.uids).table)
    else:
        X = None
    result = compress.prune(result, X, config.sparsity, config.finetune_steps, config.finetune_learning_rate)
    layers = compress.fold_layers(result)
    teacher_bytes = store.teacher_path(record.teacher_version).stat().st_size
    blob = build_artifact(
        layers,
        sources={
            "teacher_version": record.teacher_version,
            "teacher_bytes": teacher_bytes,
            "student_version": record.version,
            "distillation_rows": len(record.uids),
        },
        extra={"sparsity": config.sparsity},
        coverage=artifact_coverage(store, warehouse.warehouse(), config, seed.value),
    )
    projector = Projector.from_bytes(blob, source="new artifact")
    version = projector.version
    from ..atomic import atomic_write_bytes

    if not store.versioned_artifact_path(version).exists():  # a version is written once
        atomic_write_bytes(store.versioned_artifact_path(version), blob)
    if store.load_layout(version) is None:
        store.save_layout(version, record.uids, record.targets)  # what a retraining keeps of this map
    float_bytes = 4 * sum(layer.weight.size + layer.bias.size for layer in layers)
    return dg.MaterializeResult(
        metadata={
            "bytes": len(blob),
            "version": version,
            "student_version": record.version,
            "ratio_vs_teacher": round(teacher_bytes / len(blob), 1),
            "ratio_vs_float_student": round(float_bytes / len(blob), 2),
            "teacher_bytes": teacher_bytes,
            "float_student_bytes": float_bytes,
            "sparsity": dg.MetadataValue.json(compress.sparsity_of(result.model)),
            "path": dg.MetadataValue.path(str(store.versioned_artifact_path(version))),
            "seconds": round(time.perf_counter() - started, 2),
        },
        data_version=dg.DataVersion(version),
    )


@functools.cache
def model_definitions(names: MapNames) -> dg.Definitions:
    """The map's training chain, each asset in the map's one-slot training pool."""
    chain = (("coreset", compute_coreset, ("samples",), {"parquet", "numpy"}),
             ("teacher", compute_teacher, ("coreset", "samples"), {"umap", "numpy"}),
             ("student", compute_student, ("teacher", "samples"), {"pytorch", "numpy"}),
             ("artifact", compute_artifact, ("student", "coreset", "samples"), {"numpy"}))
    return dg.Definitions(assets=[map_asset(names, asset, fn, group=TRAINING, deps=deps, training=True, kinds=kinds)
                                  for asset, fn, deps, kinds in chain])


definitions = model_definitions
coreset, teacher, student, artifact = model_definitions(DEFAULT_NAMES).assets
