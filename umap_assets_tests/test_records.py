"""The training chain's records: plain arrays and JSON, versioned, written once; nothing unpickled."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from umap_assets.numerics.align import Similarity
from umap_assets.numerics.distill import FuzzyGraph
from umap_assets.records import Report, Student, Teacher


class _Planted:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _fitted_teacher(n=300, d=8, seed=0):
    import umap

    X = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    model = umap.UMAP(n_neighbors=10, random_state=seed, n_jobs=1, n_epochs=50).fit(X)
    return model, X, [f"s/{i}" for i in range(n)]


def test_a_teacher_round_trips_and_its_rebuilt_estimator_transforms_like_the_fitted_one(tmp_path):
    model, X, uids = _fitted_teacher()
    record = Teacher.from_fitted(model, uids, alignment=Similarity.identity(2), aligned_to="abc")
    record.save(tmp_path)
    loaded = Teacher.load(tmp_path, record.version)
    assert loaded.version == record.version and loaded.uids == uids and loaded.aligned_to == "abc"
    assert (loaded.graph != model.graph_).nnz == 0 and np.array_equal(loaded.embedding, model.embedding_)
    assert (loaded.a, loaded.b) == (model._a, model._b)
    # the student learns from the fit's own curve: the record hands its graph with its a and b
    graph = loaded.fuzzy_graph
    assert (graph.edges != model.graph_).nnz == 0 and (graph.a, graph.b) == (model._a, model._b)
    # and a graph of another origin gets the curve umap-learn fits for its min_dist, from one place
    derived = FuzzyGraph.with_curve_for(graph.edges, min_dist=model.min_dist, spread=model.spread)
    assert (derived.a, derived.b) == pytest.approx((model._a, model._b))
    new = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    assert np.array_equal(loaded.transform(new), model.transform(new))  # the exact kNN path: the same map
    assert np.allclose(loaded.map(new), loaded.transform(new))


def test_a_record_is_written_once_and_named_by_its_content(tmp_path):
    model, _, uids = _fitted_teacher()
    record = Teacher.from_fitted(model, uids)
    path = Teacher.path(tmp_path, record.version)
    record.save(tmp_path)
    before = path.stat().st_ino
    Teacher.from_fitted(model, uids).save(tmp_path)  # the same content: the same version, left alone
    assert path.stat().st_ino == before
    moved = Teacher.from_fitted(model, uids, embedding=model.embedding_ + 1)
    assert moved.version != record.version


def test_a_student_round_trips(tmp_path):
    import torch

    from umap_assets.numerics.distill import Preprocessing, StudentResult, build_mlp

    net = build_mlp(4, (8,), 2)
    prep = Preprocessing(np.zeros(6, np.float32), np.eye(4, 6, dtype=np.float32), 1.5, np.zeros(2, np.float32), 2.0)
    result = StudentResult(model=net, prep=prep, history=[{"step": 1, "seconds": 0.1}], steps=1,
                           config={"hidden": (8,)})
    record = Student.from_result(result, a=1.5, b=0.9, uids=["a/1", "a/2"], targets=np.ones((2, 2)),
                                 teacher_version="t")
    record.save(tmp_path)
    loaded = Student.load(tmp_path, record.version)
    X = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    assert np.allclose(loaded.result().transform(X), result.transform(X))
    assert loaded.uids == ["a/1", "a/2"] and loaded.teacher_version == "t" and loaded.steps == 1
    # the history (wall-clock seconds) is not part of the version
    again = Student.from_result(StudentResult(model=net, prep=prep, history=[{"step": 1, "seconds": 9.0}], steps=1,
                                              config={"hidden": (8,)}),
                                a=1.5, b=0.9, uids=["a/1", "a/2"], targets=np.ones((2, 2)), teacher_version="t")
    assert again.version == record.version
    with torch.no_grad():
        assert loaded.result().model[0].weight.shape == (8, 4)


def test_a_report_round_trips(tmp_path):
    metrics = {m: {"trustworthiness": 0.9, "version": "v"} for m in ("teacher", "student", "artifact")}
    report = Report.from_dict({**metrics, "validation_rows": 10, "k": 3, "per_class": [], "student_version": "s",
                               "teacher_version": "t",
                               "gates": [{"name": "g", "versus": "teacher", "artifact": 0.9, "reference": 0.9,
                                          "floor": 0.8, "margin": 0.1, "margin_ci95": None, "passed": True}]})
    report.save(tmp_path)
    loaded = Report.load(tmp_path, report.version)
    assert loaded == report and loaded.passed and loaded.gate("g").line().endswith("passed")


def test_a_record_holding_a_pickle_does_not_run(tmp_path):
    """An npz whose array is a pickled object is refused by numpy.load(allow_pickle=False): nothing runs."""
    marker = tmp_path / "ran"
    planted = np.empty(1, object)
    planted[0] = _Planted(marker)
    np.savez(tmp_path / "0123456789abcdef.npz", __header__=np.frombuffer(b'{"kind": "teacher"}', np.uint8),
             rows=planted)
    with pytest.raises(ValueError, match="plain arrays"):
        Teacher.load(tmp_path, "0123456789abcdef")
    with pytest.raises(ValueError, match="plain arrays"):
        Student.load(tmp_path, "0123456789abcdef")
    assert not marker.exists()


def test_no_module_unpickles_or_loads_torch_with_code():
    root = Path(__file__).resolve().parents[1] / "umap_assets"
    offenders = [str(p) for p in root.rglob("*.py")
                 if any(s in p.read_text() for s in ("pickle.load", "weights_only=False", "allow_pickle=True"))]
    assert offenders == []
