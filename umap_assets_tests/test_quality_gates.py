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
