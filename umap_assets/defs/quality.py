"""The quality report, and the blocking asset checks that gate the artifact."""

import base64
import io
import json
import time

import dagster as dg
import numpy as np

from ..atomic import atomic_write_bytes
from ..model_store import feature_rows, labels_of, read_sample_rows
from ..numerics import metrics
from ..runtime import Projector
from .model import artifact, load_student_result, store_of, student, teacher
from .resources import QualityGates, WarehouseResource

GROUP = "quality"
MAX_ROWS = 10_000


def validation_rows(warehouse: WarehouseResource, max_rows: int, seed: int):
    """Features and labels of a seeded subsample of at most ``max_rows`` validation rows."""
    table = read_sample_rows(warehouse.warehouse(), "validation", fill_to=max_rows, seed=seed).table
    if table.num_rows == 0:
        raise dg.Failure("the samples hold no validation rows; set samples.validation_fraction > 0")
    return feature_rows(table), labels_of(table)


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec("trustworthiness_vs_teacher", asset=artifact, blocking=True,
                          description="artifact trustworthiness@k >= teacher's - trust_tolerance, on validation rows"),
        dg.AssetCheckSpec("knn_overlap_with_student", asset=artifact, blocking=True,
                          description="artifact kNN sets agree with the float student's (>= min_student_overlap)"),
    ],
)
def artifact_quality_gates(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, quality_gates: QualityGates
):
    """Measure the candidate artifact against the teacher and the float student on validation rows.

    When both checks pass, the candidate is promoted to the artifact that downstream assets use.
    """
    store = store_of(warehouse)
    X, _ = validation_rows(warehouse, quality_gates.max_rows, quality_gates.seed)
    k = min(quality_gates.k, len(X) - 2)
    projector = Projector.load(store.candidate_path)
    E_art = projector.transform(X)
    E_teacher = store.load_teacher().transform(X)
    E_student = load_student_result(store.load_student()).transform(X)
    t_art = metrics.trustworthiness(X, E_art, k)
    t_teacher = metrics.trustworthiness(X, E_teacher, k)
    floor = t_teacher - quality_gates.trust_tolerance
    passed = t_art >= floor
    yield dg.AssetCheckResult(
        check_name="trustworthiness_vs_teacher",
        passed=bool(passed),
        description=(
            f"artifact trustworthiness@{k} {t_art:.4f} vs teacher {t_teacher:.4f}: "
            + ("passed" if passed else f"missed the floor {floor:.4f} by {floor - t_art:.4f}")
        ),
        metadata={"artifact": t_art, "teacher": t_teacher, "floor": floor, "margin": t_art - floor, "rows": len(X)},
    )
    overlap = metrics.knn_overlap(E_art, E_student, k)
    ok = overlap >= quality_gates.min_student_overlap
    yield dg.AssetCheckResult(
        check_name="knn_overlap_with_student",
        passed=bool(ok),
        description=(
            f"artifact/student kNN@{k} overlap {overlap:.4f}: "
            + ("passed" if ok else f"missed the floor {quality_gates.min_student_overlap:.4f} by "
               f"{quality_gates.min_student_overlap - overlap:.4f}")
        ),
        metadata={"overlap": overlap, "floor": quality_gates.min_student_overlap,
                  "margin": overlap - quality_gates.min_student_overlap, "rows": len(X)},
    )
    if passed and ok:
        store.promote_candidate()
        context.log.info(f"promoted artifact {projector.version} to {store.artifact_path}")


def _timed_transform(fn, X):
    fn(X[: min(len(X), 256)])  # warm up (numba, BLAS, torch)
    started = time.perf_counter()
    E = fn(X)
    return E, len(X) / max(time.perf_counter() - started, 1e-9)


def scatter_png(maps: dict[str, np.ndarray], labels: np.ndarray | None) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps), 5), dpi=80)
    codes = np.unique(labels, return_inverse=True)[1] if labels is not None else None
    for ax, (name, E) in zip(np.atleast_1d(axes), maps.items()):
        ax.scatter(E[:, 0], E[:, 1], c=codes, s=2, cmap="tab10" if codes is not None else None, alpha=0.7)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


METRIC_NAMES = ("trustworthiness", "continuity", "knn_recall", "knn_accuracy", "spearman",
                "transform_rows_per_s", "size_bytes")


def markdown_table(report: dict) -> str:
    head = "| metric | teacher | student | artifact |\n|---|---|---|---|\n"
    lines = []
    for name in METRIC_NAMES:
        cells = []
        for model in ("teacher", "student", "artifact"):
            value = report[model].get(name)
            cells.append("—" if value is None else (f"{value:,.0f}" if name in ("transform_rows_per_s", "size_bytes")
                                                     else f"{value:.4f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines)


@dg.asset(deps=[teacher, student, artifact], group_name=GROUP, kinds={"scikit-learn", "markdown"})
def quality_report(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Teacher vs float student vs artifact, measured on validation rows that no model saw.

    Metrics side by side: trustworthiness and continuity at k=15, kNN recall@15, 10-NN accuracy
    in the map (when there are labels), Spearman correlation of distances, transform throughput,
    size; plus the artifact's agreement with the teacher (kNN overlap, relative displacement).
    Writes ``reports/quality_report.json`` and ``reports/quality_report.md`` (with the maps).
    """
    store = store_of(warehouse)
    layout = warehouse.layout()
    X, labels = validation_rows(warehouse, MAX_ROWS, seed=0)
    teacher_model = store.load_teacher()
    payload = store.load_student()
    student_result = load_student_result(payload)
    projector = Projector.load(store.artifact_path)

    # kNN classifier: fit on (a subsample of) the distillation rows' maps, score on validation rows
    pick = metrics.subsample(len(payload["uids"]), MAX_ROWS, seed=1)
    train_rows = read_sample_rows(warehouse.warehouse(), "train", uids=[payload["uids"][i] for i in pick]).table
    X_train, y_train = feature_rows(train_rows), labels_of(train_rows)
    models = {
        "teacher": (teacher_model.transform, payload["targets"][pick], store.teacher_path.stat().st_size),
        "student": (student_result.transform, None, store.student_path.stat().st_size),
        "artifact": (projector.transform, None, store.artifact_path.stat().st_size),
    }
    report: dict = {}
    maps = {}
    k = min(15, len(X) - 2)
    for name, (fn, train_map, size) in models.items():
        E, rate = _timed_transform(fn, X)
        maps[name] = E
        train_map = fn(X_train) if train_map is None else train_map
        m = metrics.embedding_quality(X, E, k=k, labels=labels, train_embedding=train_map, train_labels=y_train)
        report[name] = {**m, "transform_rows_per_s": rate, "size_bytes": int(size)}
    report["artifact"]["path"] = str(store.artifact_path)
    report["artifact"]["version"] = projector.version
    report["artifact"]["knn_overlap_with_teacher"] = metrics.knn_overlap(maps["artifact"], maps["teacher"], k)
    report["artifact"]["knn_overlap_with_student"] = metrics.knn_overlap(maps["artifact"], maps["student"], k)
    report["artifact"]["displacement_vs_teacher"] = metrics.relative_displacement(maps["teacher"], maps["artifact"])
    report["artifact"]["size_ratio_vs_teacher"] = report["teacher"]["size_bytes"] / report["artifact"]["size_bytes"]
    report["validation_rows"] = len(X)
    report["k"] = k

    png = scatter_png({"teacher (umap-learn transform)": maps["teacher"], "artifact": maps["artifact"]}, labels)
    table = markdown_table(report)
    agreement = (
        f"artifact vs teacher: kNN@{k} overlap {report['artifact']['knn_overlap_with_teacher']:.4f}, "
        f"mean displacement {report['artifact']['displacement_vs_teacher']:.4f} of the map's spread; "
        f"{report['artifact']['size_ratio_vs_teacher']:,.0f}x smaller than the teacher's pickle."
    )
    atomic_write_bytes(layout.reports / "maps.png", png)
    atomic_write_bytes(layout.reports / "quality_report.json", json.dumps(report, indent=2).encode())
    md = (f"# Quality report\n\nMeasured on {len(X):,} validation rows that no model saw.\n\n{table}\n\n{agreement}\n\n"
          "![teacher and artifact maps](maps.png)\n")
    atomic_write_bytes(layout.reports / "quality_report.md", md.encode())
    image = f"![maps](data:image/png;base64,{base64.b64encode(png).decode()})"
    return dg.MaterializeResult(
        metadata={
            "metrics": dg.MetadataValue.md(table + "\n\n" + agreement),
            "maps": dg.MetadataValue.md(image),
            "artifact_trustworthiness": report["artifact"]["trustworthiness"],
            "teacher_trustworthiness": report["teacher"]["trustworthiness"],
            "artifact_knn_overlap_with_teacher": report["artifact"]["knn_overlap_with_teacher"],
            "validation_rows": len(X),
            "report": dg.MetadataValue.path(str(layout.reports / "quality_report.md")),
        }
    )
