"""Drift: the coverage score, the ``drift`` asset, and retraining only when new slices drift."""

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from umap_assets.defs import automation
from umap_assets.defs.drift import drift
from umap_assets.defs.ingest import raw_slices, samples
from umap_assets.defs.model import artifact, coreset, student, teacher
from umap_assets.defs.promotion import model
from umap_assets.defs.quality import quality_report  # its gates are declared on it
from umap_assets.defs.resources import QualityGates, Seed, SliceContract, WarehouseResource
from umap_assets.demo_data import write_demo_slices
from umap_assets.model_store import ModelStore
from umap_assets.home import Layout
from umap_assets.numerics.coreset import fit_pca_projection, k_center_greedy
from umap_assets.numerics.drift import CoverageReference, coverage_reference, drift_score, fit_coverage_basis


def _clusters(n: int, centres: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (centres[rng.integers(len(centres), size=n)] + rng.normal(size=(n, centres.shape[1]))).astype(np.float32)


@pytest.fixture(scope="module")
def reference():
    centres = np.random.default_rng(0).normal(0, 6, size=(4, 20))
    X = _clusters(4000, centres, seed=1)
    held_out = _clusters(1000, centres, seed=6)
    pca = fit_pca_projection(X, 8, seed=0)
    Z = pca.transform(X).astype(np.float32)
    result = k_center_greedy(Z, 300, seed=0)
    return coverage_reference(pca, Z[result.indices], held_out, 0.99), centres


def test_rows_like_the_training_data_are_covered(reference):
    ref, centres = reference
    score = drift_score(ref, _clusters(3000, centres, seed=2))
    assert score.uncovered_fraction < 0.025 and not score.drifted(0.05)
    assert score.expected_uncovered == pytest.approx(0.01)
    assert 0.7 < score.median_distance_ratio < 1.4


def test_a_new_cluster_or_a_shifted_feature_is_drift(reference):
    ref, centres = reference
    new_cluster = _clusters(3000, np.random.default_rng(9).normal(0, 6, size=(1, 20)), seed=3)
    assert drift_score(ref, new_cluster).drifted(0.05)
    shifted = _clusters(3000, centres, seed=4)
    shifted[:, 0] += 25.0  # one feature's unit or offset changed upstream
    score = drift_score(ref, shifted)
    assert score.uncovered_fraction > 0.5 and score.median_distance_ratio > 2


def test_a_global_change_near_the_cover_shows_in_the_median_distance(reference):
    ref, centres = reference
    scaled = _clusters(3000, centres, seed=7) * 1.15  # every feature rescaled a little
    score = drift_score(ref, scaled)
    assert score.median_distance_ratio > 1.10
    assert score.drifted(0.05, 1.10)
    assert not drift_score(ref, _clusters(3000, centres, seed=8)).drifted(0.05, 1.10)


def test_reference_round_trips_and_refuses_wrong_dimensions(reference):
    ref, centres = reference
    rows = _clusters(50, centres, seed=5)
    back = CoverageReference.from_bytes(ref.to_bytes())
    assert back.radius == ref.radius and back.quantile == ref.quantile
    np.testing.assert_array_equal(back.centers, ref.centers)
    # without centers (the coreset file's metadata) they are projected again from the coreset's rows
    light = ref.to_bytes(include_centers=False)
    assert len(light) < len(ref.to_bytes()) / 5
    np.testing.assert_allclose(CoverageReference.from_bytes(light, rows).centers, ref.project(rows), rtol=1e-6)
    with pytest.raises(ValueError, match="saved without its centers"):
        CoverageReference.from_bytes(light)
    with pytest.raises(ValueError, match="rows have 3 features, the model's training rows 20"):
        drift_score(ref, np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="quantile must be in"):
        coverage_reference(None, ref.centers, np.ones((3, 20)), quantile=1.0)


def _spread(n: int, topics: np.ndarray, seed: int) -> np.ndarray:
    """Unit rows spread over 64 directions, as sentence embeddings are: a topic adds a small offset to noise."""
    rng = np.random.default_rng(seed)
    X = topics[rng.integers(len(topics), size=n)] + rng.normal(size=(n, topics.shape[1]))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def test_the_coverage_basis_keeps_the_variance_and_sees_a_topic_off_the_trained_ones():
    """Data whose variance is spread over many components, as sentence embeddings': the basis holds the
    fewest components that keep 0.9 of it. A new topic off the trained topics' span leaves far more of
    its rows uncovered there than in 4 components, and is drift; rows of trained topics are not."""
    rng = np.random.default_rng(0)
    topics = rng.normal(0, 0.9, size=(12, 64))
    span = np.linalg.qr(topics.T)[0]
    off = rng.normal(size=64)
    off -= span @ (span.T @ off)
    new_topic = (topics[0] + 1.2 * np.linalg.norm(topics[0]) * off / np.linalg.norm(off))[None]
    X, held_out = _spread(6000, topics, 1), _spread(1000, topics, 2)
    basis = fit_coverage_basis(X, 0.9, 256)
    kept = np.cumsum(fit_pca_projection(X, 64).explained_variance_ratio_)
    assert len(basis.components_) == int(np.searchsorted(kept, 0.9)) + 1 > 30
    assert basis.explained_variance_ratio_.sum() >= 0.9
    core = k_center_greedy(basis.transform(X)[:, :8], 1500, seed=0).indices
    scores = {}
    for name, b in (("basis", basis), ("4 components", fit_pca_projection(X, 4))):
        ref = coverage_reference(b, b.transform(X[core]), held_out)
        scores[name] = (drift_score(ref, _spread(2000, topics, 3)), drift_score(ref, _spread(2000, new_topic, 4)))
        assert not scores[name][0].drifted(0.05, 1.10)
    assert scores["basis"][1].drifted(0.05, 1.10)
    assert scores["basis"][1].uncovered_fraction > 1.5 * scores["4 components"][1].uncovered_fraction
    with pytest.raises(ValueError, match="kept_variance must be in"):
        fit_coverage_basis(X, 0.0, 8)


def test_landmarks_for_the_artifact_keep_the_leading_components(reference):
    ref, centres = reference
    rows = _clusters(500, centres, seed=5)
    short = ref.landmarks(len(ref.centers), rows, n_components=3)
    assert short.components.shape == (3, 20) and short.centers.shape == (len(ref.centers), 3)
    np.testing.assert_array_equal(short.centers, ref.centers[:, :3])
    assert np.quantile(short.distances(rows), 0.99) == pytest.approx(short.radius, rel=1e-6)  # calibrated again
    assert short.median_distance == pytest.approx(np.median(short.distances(rows)), rel=1e-6)


def _permuted_copy(source, destination):
    """The same rows with their features in reverse order: what a changed upstream schema looks like."""
    t = pq.read_table(source)
    X = np.asarray(t.column("features").to_pylist(), dtype=np.float32)[:, ::-1]
    t = t.set_column(t.column_names.index("features"), "features",
                     pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(X).ravel()), X.shape[1]))
    pq.write_table(t, destination)
    return destination


#: A small, quick model: this test is about drift, not quality, so the gates let any model through.
QUICK_TRAIN = {
    "coreset": {"config": {"budget": 300, "pca_dim": 16}},
    "teacher": {"config": {"n_neighbors": 10}},
    "student": {"config": {"extra_rows": 200, "min_rows": 0, "hidden": [32], "input_pca_dim": 16, "steps": 30}},
    "artifact": {"config": {"sparsity": 0.0}},
}
OPEN_GATES = QualityGates(trust_tolerance=1.0, knn_accuracy_tolerance=1.0, min_student_overlap=0.0)


def test_drift_asset_and_training_sensor_retrain_only_on_drift(tmp_path, monkeypatch):
    home = tmp_path / "home"
    paths = write_demo_slices(home / "incoming", "digits", 4, allow_download=False, say=lambda _: None)
    _permuted_copy(paths[3], home / "incoming" / "permuted.parquet")
    keys = [p.stem for p in paths[:3]] + ["permuted"]
    resources = {"warehouse": WarehouseResource(home=str(home)), "contract": SliceContract(),
                 "quality_gates": OPEN_GATES, "seed": Seed()}
    fast = {"ops": {"samples": {"config": {"rate": 1.0, "floor": 1, "validation_fraction": 0.2}}}}
    store = ModelStore(Layout.at(home))
    monkeypatch.setattr(automation, "QUIET_SECONDS", 0.0)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("slices", keys)

        def ingest(key):
            assert dg.materialize([raw_slices, samples], partition_key=key, instance=instance,
                                  resources=resources, run_config=fast).success

        def measure(key):
            result = dg.materialize([drift], partition_key=key, instance=instance, resources=resources,
                                    raise_on_error=False)
            events = result.asset_materializations_for_node("drift")
            return events[0].metadata if events else None

        def decide(cursor):
            context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                              resources={"warehouse": resources["warehouse"]})
            return automation.training_sensor(context)

        for key in keys[:2]:
            ingest(key)
        first = decide(None)
        assert first.run_requests[0].tags["umap_assets/retrain_reason"] == "no promoted model yet"
        train = [coreset, teacher, student, artifact, quality_report, model]
        assert dg.materialize(train, instance=instance, resources=resources, run_config={"ops": QUICK_TRAIN},
                              selection=[coreset, teacher, student, artifact, quality_report, model]).success
        # promotion carries the coverage of the promoted model's coreset with it
        assert store.artifact_path.exists()
        coreset_record = instance.get_latest_materialization_event(coreset.key).asset_materialization.metadata
        served = store.load_coverage()
        assert served.centers.shape == (300, coreset_record["coverage_dim"].value)
        assert 16 < len(served.components) and coreset_record["coverage_explained_variance"].value >= 0.9

        # a new slice of the same data: measured, covered, no retraining
        ingest(keys[2])
        waiting = decide(first.cursor)
        assert isinstance(waiting, dg.SkipReason) and keys[2] in waiting.skip_message
        covered = measure(keys[2])
        assert covered["drifted"].value is False and covered["uncovered_fraction"].value < 0.05
        calm = decide(first.cursor)
        assert not calm.run_requests and "covers the 1 new slice" in calm.skip_reason.skip_message

        # a slice whose features changed order upstream: drift, and a retraining request
        ingest("permuted")
        moved = measure("permuted")
        assert moved["drifted"].value is True and moved["uncovered_fraction"].value > 0.5
        retrain = decide(calm.cursor)
        assert retrain.run_requests[0].tags["umap_assets/retrain_reason"] == "drift: permuted"
        assert isinstance(decide(retrain.cursor), dg.SkipReason), "the same slices do not retrain twice"

        # a served model without a coverage (trained before drift existed): drift fails, so retrain
        store.coverage_path.unlink()
        ingest(keys[2])
        assert measure(keys[2]) is None
        blind = decide(retrain.cursor)
        assert blind.run_requests[0].tags["umap_assets/retrain_reason"] == f"drift not measurable: {keys[2]}"
