"""The quality report's figures: each model measured on the same validation rows, the gates with
their margins and bootstrap intervals, the stability against the served model, and the markdown.

Plain Python, no Dagster: ``defs/quality.py`` wires it into ``quality_report`` and its checks; the
result is a :class:`~umap_assets.records.Report`.
"""

from __future__ import annotations

import json
import time

import numpy as np

from .atomic import atomic_write_bytes
from .numerics import metrics
from .model_store import ModelStore, served_projector
from .records import Student, Teacher
from .records.report import Gate
from .runtime import Projector
from .sample_rows import feature_rows, labelled, labels_of, read_sample_rows
from .warehouse import Warehouse


class NoValidationRows(ValueError):
    """The samples hold no validation rows to measure on."""


def validation_rows(warehouse: Warehouse, max_rows: int, seed: int):
    """Features and labels of a seeded subsample of at most ``max_rows`` validation rows."""
    table = read_sample_rows(warehouse, "validation", fill_to=max_rows, seed=seed).table
    if table.num_rows == 0:
        raise NoValidationRows("the samples hold no validation rows; set samples.validation_fraction > 0")
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
    """Trustworthiness and k-NN accuracy of each model, per label (a region of the map); rows
    without a label are in no label's figures."""
    if labels is None:
        return []
    known = labelled(labels)
    out = []
    for label in np.unique(labels[known].astype(str)):
        rows = known & (labels == label)
        entry = {"label": str(label), "rows": int(rows.sum())}
        for model, s in scores.items():
            entry[f"{model}_trustworthiness"] = float(s["trust_rows"][rows].mean())
            if "correct" in s:  # measured on the labelled rows, in their order
                entry[f"{model}_knn_accuracy"] = float(s["correct"][rows[known]].mean())
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


def accuracy_rows(labels, y_train, min_labelled: int) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """The labelled validation and training rows that kNN accuracy is measured on (boolean masks),
    or ``None, None`` and why it is not measured: no labels, or fewer than ``min_labelled`` of either."""
    known, known_train = labelled(labels), labelled(y_train)
    if not known.any() or not known_train.any():
        return None, None, "the data has no labels"
    if known.sum() < min_labelled or known_train.sum() < min_labelled:
        return None, None, (f"{int(known.sum())} labelled validation rows and {int(known_train.sum())} labelled training "
                            f"rows; it needs at least {min_labelled} of each (QualityGates.min_labelled_rows)")
    return known, known_train, None


def measure(models: dict, X: np.ndarray, labels, train_rows, k: int,
            min_labelled: int = 1) -> tuple[dict, dict, dict]:
    """Every metric of every model on the validation rows ``X``: (report, maps, per-row scores).
    kNN accuracy counts the labelled rows only: a classifier fitted on the labelled training rows
    (:func:`accuracy_rows`), scored on the labelled validation rows."""
    X_train, y_train = train_rows
    known, known_train, _ = accuracy_rows(labels, y_train, min_labelled)
    maps, rates = {}, {}
    for name, (fn, _, _) in models.items():
        maps[name], rates[name] = _timed_transform(fn, X)
    neighbourhoods = metrics.neighbourhood_scores(X, maps, k)  # one pass over the input's distances
    report, scores = {}, {}
    for name, (fn, train_map, size) in models.items():
        E, nb = maps[name], neighbourhoods[name]
        s = {"trust_rows": metrics.trustworthiness_row_scores(nb.pop("trust_penalties"), k)}
        m = {**nb, "spearman": metrics.distance_spearman(X, E)}
        if known is not None:
            E_train = fn(X_train[known_train]) if train_map is None else train_map[known_train]
            s["correct"] = metrics.knn_correct(E_train, y_train[known_train].astype(str), E[known],
                                               labels[known].astype(str))
            m["knn_accuracy"] = float(s["correct"].mean())
        report[name] = {**m, "transform_rows_per_s": rates[name], "size_bytes": int(size)}
        scores[name] = s
    return report, maps, scores


def gates_of(report: dict, scores: dict, maps: dict, gates, k: int, seed: int) -> list[dict]:
    """The blocking gates, measured on the same rows as the report (``seed`` draws their bootstrap)."""
    art, tea = scores["artifact"], scores["teacher"]
    out = [gate("trustworthiness_vs_teacher", "teacher", report["artifact"]["trustworthiness"],
                report["teacher"]["trustworthiness"], report["teacher"]["trustworthiness"] - gates.trust_tolerance,
                art["trust_rows"] - tea["trust_rows"], seed)]
    if "correct" in art:
        out.append(gate("knn_accuracy_vs_teacher", "teacher", report["artifact"]["knn_accuracy"],
                        report["teacher"]["knn_accuracy"],
                        report["teacher"]["knn_accuracy"] - gates.knn_accuracy_tolerance,
                        art["correct"].astype(float) - tea["correct"].astype(float), seed))
    overlap = metrics.knn_overlap(maps["artifact"], maps["student"], k)
    out.append(gate("knn_overlap_with_student", "student", overlap, 1.0, gates.min_student_overlap, None, seed))
    return out


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
    gates = "\n".join(f"- {gate_line(g)}" for g in report["gates"]) + tried_markdown(report)
    md = (f"# Quality report\n\nArtifact `{art['version']}`, measured on {report['validation_rows']:,} validation "
          f"rows that no model saw (k={report['k']}).\n\n## Gates\n\n{gates}\n\n## Metrics\n\n"
          f"{markdown_table(report)}\n\n{agreement}\n\n## Per label\n\n{unlabelled_note(report)}"
          f"{per_class_markdown(report['per_class'])}\n\n"
          "![teacher, student and artifact maps, and the served model's](maps.png)\n")
    atomic_write_bytes(directory / "maps.png", png)
    atomic_write_bytes(directory / "quality_report.json", json.dumps(report, indent=2).encode())
    atomic_write_bytes(directory / "quality_report.md", md.encode())
    return md


def unlabelled_note(report: dict) -> str:
    """What the per-label table and kNN accuracy leave out: the rows without a label, and why
    accuracy was not measured when it was not."""
    out = ""
    unlabelled = report["validation_rows"] - report.get("labelled_rows", 0)
    if 0 < unlabelled < report["validation_rows"]:
        out += (f"{unlabelled:,} of the {report['validation_rows']:,} validation rows have no label: they count in "
                "every figure but kNN accuracy and this table.\n\n")
    if why := report.get("unmeasured", {}).get("knn_accuracy_vs_teacher"):
        out += f"kNN accuracy not measured: {why}.\n\n"
    return out


#: The student's settings the report names (``StudentConfig``'s fields; ``noise_std`` as chosen from the data).
RECIPE_FIELDS = ("steps", "hidden", "input_pca_dim", "noise_std", "coord_weight", "graph_weight")


def tried_markdown(report: dict) -> str:
    """What the pipeline tried (the student's recipe) and, when a gate against the teacher failed,
    what to try next, as config a user can pass to ``umap-assets run --config``. Gates never move."""
    recipe = report.get("student_recipe")
    if not recipe:
        return ""
    shown = ", ".join(f"{k} {v}" for k, v in recipe.items())
    out = f"\n\n**What the pipeline tried:** the student was trained with {shown}."
    if any(not g["passed"] and g["versus"] == "teacher" for g in report["gates"]):
        out += ("\n\n**Not promoted: the artifact trails its teacher.** To try next, in a `--config` file: a longer "
                "schedule (`ops: {student: {config: {steps: %d}}}`), a larger coreset (`ops: {coreset: {config: "
                "{budget: 60000}}}`), or more input noise on embeddings whose rows all lie far apart "
                "(`noise_to_neighbours: 1.0`). The gates stay as they are." % (2 * int(recipe.get("steps", 12_000))))
    return out


def measure_candidate(store: ModelStore, warehouse: Warehouse, teacher_record: Teacher, distilled: Student,
                      artifact_path, quality_gates, seed: int) -> tuple[dict, dict, np.ndarray | None]:
    """Teacher vs float student vs the artifact at ``artifact_path``, on at most ``quality_gates.max_rows``
    validation rows: the report (the layout of ``quality_report.json``), the maps to draw, the labels.
    ``seed`` (the project's) draws the validation rows; ``seed + 1``, the training rows."""
    X, labels = validation_rows(warehouse, quality_gates.max_rows, seed)
    projector = Projector.load(artifact_path)
    pick = metrics.subsample(len(distilled.uids), quality_gates.max_rows, seed=seed + 1)
    train = read_sample_rows(warehouse, "train", uids=[distilled.uids[i] for i in pick]).table
    models = {
        "teacher": (teacher_record.map, distilled.targets[pick],
                    store.teacher_path(teacher_record.version).stat().st_size),
        "student": (distilled.result().transform, None, store.student_path(distilled.version).stat().st_size),
        "artifact": (projector.transform, None, artifact_path.stat().st_size),
    }
    k = min(quality_gates.k, (len(X) - 1) // 2)
    y_train = labels_of(train)
    report, maps, scores = measure(models, X, labels, (feature_rows(train), y_train), k, quality_gates.min_labelled_rows)
    why = accuracy_rows(labels, y_train, quality_gates.min_labelled_rows)[2]
    art = report["artifact"]
    art.update(version=projector.version, path=str(store.versioned_artifact_path(projector.version)),
               knn_overlap_with_teacher=metrics.knn_overlap(maps["artifact"], maps["teacher"], k),
               displacement_vs_teacher=metrics.relative_displacement(maps["teacher"], maps["artifact"]),
               size_ratio_vs_teacher=report["teacher"]["size_bytes"] / art["size_bytes"])
    report.update(validation_rows=len(X), k=k, gates=gates_of(report, scores, maps, quality_gates, k, seed),
                  per_class=per_class(labels, scores), labelled_rows=int(labelled(labels).sum()),
                  unmeasured={"knn_accuracy_vs_teacher": why} if why else {})
    panels = {"teacher (umap-learn transform)": maps["teacher"], "float student": maps["student"],
              "artifact": maps["artifact"]}
    previous = served_projector(store, X.shape[1], excluding=projector.version)
    if previous is not None:
        panels[f"served model {previous.version[:8]}"] = E_prev = previous.transform(X)
        report["stability"] = stability(E_prev, maps["artifact"], k, previous.version)
    report.update(student_version=distilled.version, teacher_version=teacher_record.version,
                  student_recipe={k: distilled.config[k] for k in RECIPE_FIELDS if k in distilled.config}
                  | {"input_components": int(distilled.prep.components.shape[0])})
    return report, panels, labels
