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
