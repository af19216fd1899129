"""The quality report of the newest artifact, and the blocking gates that decide its promotion.

``quality_report`` always materializes: it is the diagnostic, whether the candidate passes or not.
Its blocking checks (``quality_report_gates``) read the figures it measured; only when they pass does
``model`` (the promotion) run.
"""

import dataclasses
import json
import time

import dagster as dg
import numpy as np

from ..atomic import atomic_write_bytes
from ..history import metadata_of, upstream
from ..model_store import served_projector
from ..sample_rows import feature_rows, labels_of, read_sample_rows
from ..numerics import metrics
from ..pictures import png_markdown, scatter_png
from ..records import Report
from ..records.report import Gate
from ..runtime import Projector
from .ingest import samples
from .model import artifact, student, teacher
from .resources import QualityGates, WarehouseResource
from .groups import TRAINING, TRAINING_POOL

GROUP = TRAINING


def validation_rows(warehouse: WarehouseResource, max_rows: int, seed: int):
    """Features and labels of a seeded subsample of at most ``max_rows`` validation rows."""
    table = read_sample_rows(warehouse.warehouse(), "validation", fill_to=max_rows, seed=seed).table
    if table.num_rows == 0:
        raise dg.Failure("the samples hold no validation rows; set samples.validation_fraction > 0")
    return feature_rows(table), labels_of(table)


def _timed_transform(fn, X):
    fn(X[: min(len(X), 256)])  # warm up (numba, BLAS, torch)
    started = time.perf_counter()
    E = fn(X)
    return E, len(X) / max(time.perf_counter() - started, 1e-9)


METRIC_NAMES = ("trustworthiness", "trustworthiness@5", "continuity", "knn_recall", "knn_accuracy", "spearman",
                "transform_rows_per_s", "size_bytes")
MODELS = ("teacher", "student", "artifact")


def markdown_table(report: dict) -> str:
    head = "| metric | teacher | student | artifact |\n|---|---|---|---|\n"
    lines = []
    for name in METRIC_NAMES:
        cells = []
        for model in MODELS:
            value = report[model].get(name)
            cells.append("—" if value is None else (f"{value:,.0f}" if name in ("transform_rows_per_s", "size_bytes")
                                                     else f"{value:.4f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines)


def gate(name: str, versus: str, artifact_value: float, reference: float, floor: float,
         row_differences: np.ndarray | None, seed: int) -> dict:
    """One gate's figures: the artifact's value, the reference's (``versus``: teacher or student),
    the floor, the margin and its 95% CI."""
    margin = artifact_value - floor
    if row_differences is not None:  # paired bootstrap over rows of (artifact - reference)
        low, high = metrics.bootstrap_interval(row_differences, seed=seed)
        ci = [low + reference - floor, high + reference - floor]
    else:
        ci = None
    return {"name": name, "versus": versus, "artifact": artifact_value, "reference": reference, "floor": floor,
            "margin": margin,
            "margin_ci95": ci, "passed": bool(margin >= 0)}


def gate_line(g: dict) -> str:
    """The one line a person reads: artifact, reference, floor, margin (with its interval)."""
    return Gate(**g).line()


def per_class(labels: np.ndarray | None, scores: dict[str, dict[str, np.ndarray]]) -> list[dict]:
    """Trustworthiness and k-NN accuracy of each model, per label (a region of the map)."""
    if labels is None:
        return []
    out = []
    for label in np.unique(labels):
        rows = labels == label
        entry = {"label": str(label), "rows": int(rows.sum())}
        for model, s in scores.items():
            entry[f"{model}_trustworthiness"] = float(s["trust_rows"][rows].mean())
            if "correct" in s:
                entry[f"{model}_knn_accuracy"] = float(s["correct"][rows].mean())
        out.append(entry)
    return out


def per_class_markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    head = ("| label | rows | trust teacher | trust artifact | Δ | kNN acc teacher | kNN acc artifact |\n"
            "|---|---|---|---|---|---|---|\n")
    body = "\n".join(
        f"| {r['label']} | {r['rows']} | {r['teacher_trustworthiness']:.4f} | {r['artifact_trustworthiness']:.4f} | "
        f"{r['artifact_trustworthiness'] - r['teacher_trustworthiness']:+.4f} | "
        f"{r.get('teacher_knn_accuracy', float('nan')):.3f} | {r.get('artifact_knn_accuracy', float('nan')):.3f} |"
        for r in rows
    )
    return head + body


def measure(models: dict, X: np.ndarray, labels, train_rows, k: int) -> tuple[dict, dict, dict]:
    """Every metric of every model on the validation rows ``X``: (report, maps, per-row scores)."""
    X_train, y_train = train_rows
    maps, rates = {}, {}
    for name, (fn, _, _) in models.items():
        maps[name], rates[name] = _timed_transform(fn, X)
    neighbourhoods = metrics.neighbourhood_scores(X, maps, k)  # one pass over the input's distances
    report, scores = {}, {}
    for name, (fn, train_map, size) in models.items():
        E, nb = maps[name], neighbourhoods[name]
        s = {"trust_rows": metrics.trustworthiness_row_scores(nb.pop("trust_penalties"), k)}
        m = {**nb, "spearman": metrics.distance_spearman(X, E)}
        if labels is not None and y_train is not None:
            s["correct"] = metrics.knn_correct(fn(X_train) if train_map is None else train_map, y_train, E, labels)
            m["knn_accuracy"] = float(s["correct"].mean())
        report[name] = {**m, "transform_rows_per_s": rates[name], "size_bytes": int(size)}
        scores[name] = s
    return report, maps, scores


def gates_of(report: dict, scores: dict, maps: dict, gates: QualityGates, k: int) -> list[dict]:
    """The blocking gates, measured on the same rows as the report."""
    art, tea = scores["artifact"], scores["teacher"]
    out = [gate("trustworthiness_vs_teacher", "teacher", report["artifact"]["trustworthiness"],
                report["teacher"]["trustworthiness"], report["teacher"]["trustworthiness"] - gates.trust_tolerance,
                art["trust_rows"] - tea["trust_rows"], gates.seed)]
    if "correct" in art:
        out.append(gate("knn_accuracy_vs_teacher", "teacher", report["artifact"]["knn_accuracy"],
                        report["teacher"]["knn_accuracy"],
                        report["teacher"]["knn_accuracy"] - gates.knn_accuracy_tolerance,
                        art["correct"].astype(float) - tea["correct"].astype(float), gates.seed))
    overlap = metrics.knn_overlap(maps["artifact"], maps["student"], k)
    out.append(gate("knn_overlap_with_student", "student", overlap, 1.0, gates.min_student_overlap, None, gates.seed))
    return out


@dg.asset(deps=[teacher, student, artifact, samples], group_name=GROUP, pool=TRAINING_POOL,
          kinds={"scikit-learn", "markdown"})
def quality_report(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, quality_gates: QualityGates
) -> dg.MaterializeResult:
    """Teacher vs float student vs the newest artifact, on validation rows that no model saw.

    Trustworthiness at k=15 and k=5, continuity, kNN recall, 10-NN accuracy in the map, Spearman
    correlation of distances, throughput and size; the same per label; the three maps side by
    side; and the gates with their margins and 95% bootstrap intervals. It materializes whether
    the gates pass or not: it is the diagnostic. Its blocking checks (``quality_report_gates``) then
    decide whether ``model`` promotes the artifact. It measures the artifact that the newest
    ``artifact`` materialization names, the student it was built from and that student's teacher (all
    by version), and writes a :class:`~umap_assets.records.Report` record
    (``models/reports/<version>.json``, named by its ``report_version`` metadata), with copies for a
    person to read: ``reports/quality_report.{json,md}`` and ``reports/maps.png``.
    """
    store, layout = warehouse.store(), warehouse.layout()
    built = upstream(context.instance, artifact.key, context.run.run_id)
    artifact_version, student_version = metadata_of(built, "version"), metadata_of(built, "student_version")
    if artifact_version is None or student_version is None:
        raise dg.Failure("no materialization of `artifact` on this instance names its version and student; "
                         "materialize `artifact` first")
    X, labels = validation_rows(warehouse, quality_gates.max_rows, quality_gates.seed)
    distilled = store.student(student_version)
    teacher_record = store.teacher(distilled.teacher_version)
    artifact_path = store.versioned_artifact_path(artifact_version)
    projector = Projector.load(artifact_path)
    pick = metrics.subsample(len(distilled.uids), quality_gates.max_rows, seed=1)
    train = read_sample_rows(warehouse.warehouse(), "train", uids=[distilled.uids[i] for i in pick]).table
    models = {
        "teacher": (teacher_record.map, distilled.targets[pick],
                    store.teacher_path(teacher_record.version).stat().st_size),
        "student": (distilled.result().transform, None, store.student_path(distilled.version).stat().st_size),
        "artifact": (projector.transform, None, artifact_path.stat().st_size),
    }
    k = min(quality_gates.k, (len(X) - 1) // 2)
    report, maps, scores = measure(models, X, labels, (feature_rows(train), labels_of(train)), k)
    art = report["artifact"]
    art.update(version=projector.version, path=str(store.versioned_artifact_path(projector.version)),
               knn_overlap_with_teacher=metrics.knn_overlap(maps["artifact"], maps["teacher"], k),
               displacement_vs_teacher=metrics.relative_displacement(maps["teacher"], maps["artifact"]),
               size_ratio_vs_teacher=report["teacher"]["size_bytes"] / art["size_bytes"])
    report.update(validation_rows=len(X), k=k, gates=gates_of(report, scores, maps, quality_gates, k),
                  per_class=per_class(labels, scores))
    panels = {"teacher (umap-learn transform)": maps["teacher"], "float student": maps["student"],
              "artifact": maps["artifact"]}
    previous = served_projector(store, X.shape[1], excluding=projector.version)
    if previous is not None:
        panels[f"served model {previous.version[:8]}"] = E_prev = previous.transform(X)
        report["stability"] = stability(E_prev, maps["artifact"], k, previous.version)
    report.update(student_version=distilled.version, teacher_version=teacher_record.version)
    record = Report.from_dict(report)
    record.save(store.reports_dir)
    png = scatter_png(panels, labels)
    md = write_report(layout.reports, record.to_dict(), png)
    failed = [g["name"] for g in report["gates"] if not g["passed"]]
    context.log.info("gates: " + ("all passed" if not failed else "failed: " + ", ".join(failed)))
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(md.split("![", 1)[0]),
        "maps": dg.MetadataValue.md(png_markdown(png, "maps")),
        "report_version": record.version,
        "artifact_version": projector.version,
        "student_version": distilled.version,
        "teacher_version": teacher_record.version,
        "artifact_trustworthiness": art["trustworthiness"],
        "teacher_trustworthiness": report["teacher"]["trustworthiness"],
        "gates_passed": not failed,
        "validation_rows": len(X),
        "path": dg.MetadataValue.path(str(layout.reports / "quality_report.md")),
    })


def stability(E_prev, E_new, k: int, previous_version: str) -> dict:
    """How far the candidate moves the served model's map of the same rows: the median displacement
    as a fraction of the served map's spread, and the kNN@k overlap of the two maps."""
    return {"previous_version": previous_version,
            "median_displacement": metrics.relative_displacement(E_prev, E_new, statistic="median"),
            "knn_overlap": metrics.knn_overlap(E_new, E_prev, k)}


def write_report(directory, report: dict, png: bytes) -> str:
    """Write ``quality_report.json``, ``quality_report.md`` and ``maps.png``; return the markdown."""
    art = report["artifact"]
    agreement = (f"artifact vs teacher: kNN@{report['k']} overlap {art['knn_overlap_with_teacher']:.4f}, mean "
                 f"displacement {art['displacement_vs_teacher']:.4f} of the map's spread; "
                 f"{art['size_ratio_vs_teacher']:,.0f}x smaller than the teacher's record.")
    if "stability" in report:
        st = report["stability"]
        agreement += (f"\n\nAgainst the served model `{st['previous_version']}`: median displacement "
                      f"{st['median_displacement']:.4f} of its map's spread, kNN@{report['k']} overlap {st['knn_overlap']:.4f}.")
    gates = "\n".join(f"- {gate_line(g)}" for g in report["gates"])
    md = (f"# Quality report\n\nArtifact `{art['version']}`, measured on {report['validation_rows']:,} validation "
          f"rows that no model saw (k={report['k']}).\n\n## Gates\n\n{gates}\n\n## Metrics\n\n"
          f"{markdown_table(report)}\n\n{agreement}\n\n## Per label\n\n{per_class_markdown(report['per_class'])}\n\n"
          "![teacher, student and artifact maps, and the served model's](maps.png)\n")
    atomic_write_bytes(directory / "maps.png", png)
    atomic_write_bytes(directory / "quality_report.json", json.dumps(report, indent=2).encode())
    atomic_write_bytes(directory / "quality_report.md", md.encode())
    return md


GATE_NAMES = ("trustworthiness_vs_teacher", "knn_accuracy_vs_teacher", "knn_overlap_with_student")


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(name, asset=quality_report, blocking=True, description=desc) for name, desc in (
        ("trustworthiness_vs_teacher", "artifact trustworthiness@k >= teacher's - trust_tolerance"),
        ("knn_accuracy_vs_teacher", "artifact 10-NN accuracy >= teacher's - knn_accuracy_tolerance (labelled data)"),
        ("knn_overlap_with_student", "artifact kNN sets agree with the float student's (>= min_student_overlap)"),
    )],
)
def quality_report_gates(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
    """The gates that ``quality_report`` measured, as blocking checks: ``model`` promotes the
    artifact only when they all pass. Unlabelled data has no accuracy gate (it passes, and says so)."""
    report = measured_report(context.instance, warehouse, context.run.run_id)
    for name in GATE_NAMES:
        g = report.gate(name)
        if g is None:
            yield dg.AssetCheckResult(check_name=name, passed=True, description="not measured: the data has no labels")
            continue
        yield dg.AssetCheckResult(
            check_name=name, passed=g.passed, description=g.line(),
            metadata={"artifact": g.artifact, "reference": g.reference, "floor": g.floor, "margin": g.margin,
                      "artifact_version": report.artifact_version, "rows": report.validation_rows},
        )


def measured_report(instance: dg.DagsterInstance, warehouse: WarehouseResource, run_id: str | None = None) -> Report:
    """The report record that ``quality_report`` wrote in run ``run_id``, else the newest one."""
    version = metadata_of(upstream(instance, quality_report.key, run_id), "report_version")
    if version is None:
        raise dg.Failure("no materialization of `quality_report` on this instance names its report; "
                         "materialize `quality_report` first")
    return Report.load(warehouse.store().reports_dir, version)


@dg.asset_check(asset=quality_report, description="candidate's median displacement from the served model's map "
                "<= stability_tolerance of its spread (warns; never blocks the promotion)")
def stable_vs_previous(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                       quality_gates: QualityGates) -> dg.AssetCheckResult:
    """How far a retrained model moves the map that users already hold: on the report's validation
    rows, the median displacement from the served model's map (a fraction of its spread) and the
    kNN overlap of the two. It warns past ``QualityGates.stability_tolerance``; the quality gates,
    not this check, decide the promotion."""
    report = measured_report(context.instance, warehouse, context.run.run_id)
    st = report.stability
    if st is None:
        return dg.AssetCheckResult(passed=True, description="no other model served on these rows: nothing to compare with")
    passed = st.median_displacement <= quality_gates.stability_tolerance
    return dg.AssetCheckResult(
        passed=passed, severity=dg.AssetCheckSeverity.WARN,
        description=(f"stable_vs_previous: median displacement {st.median_displacement:.4f} of the served map's spread "
                     f"(tolerance {quality_gates.stability_tolerance}), kNN@{report.k} overlap {st.knn_overlap:.4f} "
                     f"against {st.previous_version}" + ("" if passed else ": WARNING, the map moved")),
        metadata={**dataclasses.asdict(st), "artifact_version": report.artifact_version},
    )
