"""Gate semantics: pass at the floor, fail below it, the interval brackets the margin."""

import numpy as np

from umap_assets.quality_report import gate, gate_line


def test_gate_passes_at_the_floor_and_fails_below_it():
    at_floor = gate("trustworthiness_vs_teacher", "teacher", 0.960, 0.970, 0.960, None, 0)
    assert at_floor["passed"] and at_floor["margin"] == 0
    below = gate("trustworthiness_vs_teacher", "teacher", 0.9595, 0.970, 0.960, None, 0)
    assert not below["passed"] and np.isclose(below["margin"], -0.0005)  # missed by a hair is missed


def test_gate_interval_is_a_paired_bootstrap_of_the_row_differences():
    rng = np.random.default_rng(0)
    diff = rng.normal(-0.004, 0.02, size=5000)  # artifact - teacher, per row
    g = gate("trustworthiness_vs_teacher", "teacher", 0.970 + diff.mean(), 0.970, 0.960, diff, 0)
    low, high = g["margin_ci95"]
    assert low < g["margin"] < high and high - low < 0.003
    line = gate_line(g)
    assert line.startswith("trustworthiness_vs_teacher: artifact 0.96") and "teacher 0.9700" in line
    assert "floor 0.9600" in line and "95% CI" in line and line.endswith("passed")


def test_the_report_says_what_was_tried_and_what_to_try_next_when_the_teacher_gate_fails():
    from umap_assets.quality_report import tried_markdown

    recipe = {"steps": 12_000, "hidden": [160, 160], "noise_std": 0.81, "input_components": 64}
    passed = {"gates": [gate("trustworthiness_vs_teacher", "teacher", 0.97, 0.97, 0.965, None, 0)], "student_recipe": recipe}
    text = tried_markdown(passed)
    assert "steps 12000" in text and "noise_std 0.81" in text and "try next" not in text
    failed = {"gates": [gate("knn_accuracy_vs_teacher", "teacher", 0.41, 0.46, 0.44, None, 0)], "student_recipe": recipe}
    text = tried_markdown(failed)
    assert "Not promoted" in text and "steps: 24000" in text and "The gates stay as they are" in text
    assert tried_markdown({"gates": []}) == ""


def test_an_unlabelled_slice_among_labelled_ones_is_no_class_and_stays_out_of_the_accuracy_gate(tmp_path):
    """Three digits slices, the last without labels, one partly: the report has no "None" class, its
    per-label rows are the labelled rows, kNN accuracy is measured on them (and gated); with too few
    labelled rows the gate is not measured and says why."""
    import json

    import dagster as dg
    import pyarrow as pa
    import pyarrow.parquet as pq

    from umap_assets.defs.ingest import raw_slices, samples
    from umap_assets.defs.model import artifact, coreset, student, teacher
    from umap_assets.defs.quality import quality_report  # its gates are declared on it
    from umap_assets.defs.resources import QualityGates, Seed, SliceContract, WarehouseResource
    from umap_assets.demo_data import write_demo_slices

    home = tmp_path / "home"
    paths = write_demo_slices(home / "incoming", "digits", 3, allow_download=False, say=lambda _: None)
    pq.write_table(pq.read_table(paths[2]).drop_columns(["label"]), paths[2])
    partly = pq.read_table(paths[1])
    column = partly.column("label").to_pylist()
    partly = partly.set_column(partly.schema.get_field_index("label"), "label",
                               pa.array([None if i % 5 == 0 else v for i, v in enumerate(column)], pa.int64()))
    pq.write_table(partly, paths[1])
    resources = {"warehouse": WarehouseResource(home=str(home)), "contract": SliceContract(), "seed": Seed()}
    fast = {"samples": {"config": {"rate": 1.0, "floor": 1, "validation_fraction": 0.2}},
            "coreset": {"config": {"budget": 600, "pca_dim": 16}}, "teacher": {"config": {"n_neighbors": 10}},
            "student": {"config": {"steps": 300, "hidden": [64, 64], "input_pca_dim": 32, "min_rows": 0,
                                   "extra_rows": 1000}},
            "artifact": {"config": {"finetune_steps": 0}}}
    lenient = {"trust_tolerance": 1.0, "knn_accuracy_tolerance": 1.0, "min_student_overlap": 0.0}
    chain = [coreset, teacher, student, artifact, quality_report]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("slices", [p.stem for p in paths])
        for p in paths:
            assert dg.materialize([raw_slices, samples], partition_key=p.stem, instance=instance, resources=resources,
                                  run_config={"ops": {"samples": fast["samples"]}}).success
        train = {k: v for k, v in fast.items() if k != "samples"}
        result = dg.materialize(chain, instance=instance, run_config={"ops": train},
                                resources={**resources, "quality_gates": QualityGates(**lenient)})
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        report = json.loads((home / "reports" / "quality_report.json").read_text())
        assert [row["label"] for row in report["per_class"]] == [str(d) for d in range(10)]
        assert 0 < report["labelled_rows"] < report["validation_rows"] and report["unmeasured"] == {}
        assert sum(row["rows"] for row in report["per_class"]) == report["labelled_rows"]
        for model in ("teacher", "artifact"):  # the per-label accuracies add up to the gate's, on the same rows
            per_label = sum(row["rows"] * row[f"{model}_knn_accuracy"] for row in report["per_class"])
            assert np.isclose(per_label / report["labelled_rows"], report[model]["knn_accuracy"])
        assert report["teacher"]["knn_accuracy"] > 0.8  # digits: no row is scored against a "None" class
        gate = checks["knn_accuracy_vs_teacher"]
        assert gate.passed and gate.description.startswith("knn_accuracy_vs_teacher: artifact")
        assert "have no label" in (home / "reports" / "quality_report.md").read_text()

        again = dg.materialize([quality_report], instance=instance,
                               resources={**resources, "quality_gates": QualityGates(**lenient, min_labelled_rows=10_000)})
        gate = {e.check_name: e for e in again.get_asset_check_evaluations()}["knn_accuracy_vs_teacher"]
        assert gate.passed and gate.description.startswith("not measured: ")
        assert "labelled validation rows" in gate.description and "min_labelled_rows" in gate.description
