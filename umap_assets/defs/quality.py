"""The quality report of the newest artifact, and the blocking gates that decide its promotion.

``quality_report`` always materializes: it is the diagnostic, whether the candidate passes or not.
Its blocking checks (the gates, :data:`GATES`) are declared on it (``check_specs``) and evaluated in its own
step from the report it just measured; a failed gate fails that step after the report is materialized, so
``model`` (the promotion) runs only when they pass. Declared on the asset, not as standalone checks: a
standalone check loaded from a ``defs.yaml`` is rebuilt by Dagster with a beta parameter (``execution_type``,
``repository_data.py``'s ``get_asset_checks_defs_by_key``), a ``BetaWarning``.
"""

import dataclasses
import functools

import dagster as dg

from ..history import metadata_of, upstream
from ..pictures import png_markdown, scatter_png
from ..quality_report import NoValidationRows, measure_candidate, write_report
from ..records import Report
from ..map_names import DEFAULT_NAMES, MapNames
from .binding import map_asset
from .groups import TRAINING
from .resources import QualityGates, Seed, WarehouseResource


def compute_quality_report(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, quality_gates: QualityGates, seed: Seed,
    names: MapNames,
) -> dg.MaterializeResult:  # one screen: the measurement, the record, its metadata and its checks' results
    """Teacher vs float student vs the newest artifact, on validation rows that no model saw.

    Trustworthiness at k=15 and k=5, continuity, kNN recall, 10-NN accuracy in the map, Spearman
    correlation of distances, throughput and size; the same per label; the three maps side by
    side; and the gates with their margins and 95% bootstrap intervals. It materializes whether
    the gates pass or not: it is the diagnostic. Its blocking checks (the gates, evaluated here on the
    report just measured, :func:`gate_results`) then decide whether ``model`` promotes the artifact;
    ``stable_vs_previous`` (:func:`stability_result`) warns and never blocks. It measures the artifact that the newest
    ``artifact`` materialization names, the student it was built from and that student's teacher (all
    by version), and writes a :class:`~umap_assets.records.Report` record
    (``models/reports/<version>.json``, named by its ``report_version`` metadata), with copies for a
    person to read: ``reports/quality_report.{json,md}`` and ``reports/maps.png``.
    """
    store, layout = warehouse.store(), warehouse.layout()
    built = upstream(context.instance, names.asset_key("artifact"), context.run.run_id)
    artifact_version, student_version = metadata_of(built, "version"), metadata_of(built, "student_version")
    if artifact_version is None or student_version is None:
        raise dg.Failure("no materialization of `artifact` on this instance names its version and student; "
                         "materialize `artifact` first")
    distilled = store.student(student_version)
    teacher_record = store.teacher(distilled.teacher_version)
    try:
        report, panels, labels = measure_candidate(store, warehouse.warehouse(), teacher_record, distilled,
                                                   store.versioned_artifact_path(artifact_version), quality_gates,
                                                   seed.value)
    except NoValidationRows as exc:
        raise dg.Failure(str(exc)) from exc
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
        "artifact_version": artifact_version,
        "student_version": distilled.version,
        "teacher_version": teacher_record.version,
        "artifact_trustworthiness": report["artifact"]["trustworthiness"],
        "teacher_trustworthiness": report["teacher"]["trustworthiness"],
        "gates_passed": not failed,
        "validation_rows": report["validation_rows"],
        "path": dg.MetadataValue.path(str(layout.reports / "quality_report.md")),
    }, check_results=[*gate_results(record), stability_result(record, quality_gates.stability_tolerance)])


GATE_NAMES = ("trustworthiness_vs_teacher", "knn_accuracy_vs_teacher", "knn_overlap_with_student")


GATES = (
    ("trustworthiness_vs_teacher", "artifact trustworthiness@k >= teacher's - trust_tolerance"),
    ("knn_accuracy_vs_teacher", "artifact 10-NN accuracy >= teacher's - knn_accuracy_tolerance (labelled data)"),
    ("knn_overlap_with_student", "artifact kNN sets agree with the float student's (>= min_student_overlap)"),
)


def gate_results(report: Report) -> list[dg.AssetCheckResult]:
    """The gates that ``quality_report`` measured, as its blocking checks: ``model`` promotes the
    artifact only when they all pass. Without enough labelled rows there is no accuracy gate (it
    passes, and says why: the report's ``unmeasured``)."""
    results = []
    for name in GATE_NAMES:
        g = report.gate(name)
        if g is None:
            why = report.unmeasured.get(name, "the data has no labels")
            results.append(dg.AssetCheckResult(check_name=name, passed=True, description=f"not measured: {why}"))
            continue
        results.append(dg.AssetCheckResult(
            check_name=name, passed=g.passed, description=g.line(),
            metadata={"artifact": g.artifact, "reference": g.reference, "floor": g.floor, "margin": g.margin,
                      "artifact_version": report.artifact_version, "rows": report.validation_rows},
        ))
    return results


def stability_result(report: Report, tolerance: float) -> dg.AssetCheckResult:
    """How far a retrained model moves the map that users already hold: on the report's validation
    rows, the median displacement from the served model's map (a fraction of its spread) and the
    kNN overlap of the two. It warns past ``QualityGates.stability_tolerance``; the quality gates,
    not this check, decide the promotion."""
    st = report.stability
    if st is None:
        return dg.AssetCheckResult(check_name="stable_vs_previous", passed=True,
                                   description="no other model served on these rows: nothing to compare with")
    passed = st.median_displacement <= tolerance
    return dg.AssetCheckResult(
        check_name="stable_vs_previous", passed=passed, severity=dg.AssetCheckSeverity.WARN,
        description=(f"stable_vs_previous: median displacement {st.median_displacement:.4f} of the served map's spread "
                     f"(tolerance {tolerance}), kNN@{report.k} overlap {st.knn_overlap:.4f} "
                     f"against {st.previous_version}" + ("" if passed else ": WARNING, the map moved")),
        metadata={**dataclasses.asdict(st), "artifact_version": report.artifact_version},
    )


@functools.cache
def quality_definitions(names: MapNames) -> dg.Definitions:
    """The map's ``quality_report`` with its blocking gates and its stability check declared on it."""
    key = names.asset_key("quality_report")
    checks = [dg.AssetCheckSpec(name, asset=key, blocking=True, description=desc) for name, desc in GATES]
    checks.append(dg.AssetCheckSpec(
        "stable_vs_previous", asset=key,
        description="candidate's median displacement from the served model's map <= stability_tolerance of its "
                    "spread (warns; never blocks the promotion)"))
    report = map_asset(names, "quality_report", compute_quality_report, group=TRAINING, training=True,
                       deps=("teacher", "student", "artifact", "samples"), kinds={"scikit-learn", "markdown"},
                       check_specs=checks)
    return dg.Definitions(assets=[report])


definitions = quality_definitions
(quality_report,) = quality_definitions(DEFAULT_NAMES).assets
