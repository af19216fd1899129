"""The whole training chain on scikit-learn's digits, through Dagster, with the gates."""

import json

import numpy as np
import dagster as dg
import pytest

from umap_assets.defs.ingest import raw_slices, samples
from umap_assets.defs.embeddings import embeddings
from umap_assets.defs.model import TeacherConfig, artifact, coreset, student, teacher
from umap_assets.defs.promotion import model
from umap_assets.defs.quality import quality_report  # its gates and stability check are declared on it
from umap_assets.defs.resources import LocalEmbedding, QualityGates, Seed, SliceContract, WarehouseResource
from umap_assets.demo_data import write_demo_slices
from umap_assets.warehouse import Warehouse, connect
from umap_assets.runtime import Projector

TRAIN = [coreset, teacher, student, artifact, quality_report, model]
FAST = {
    "samples": {"config": {"rate": 1.0, "floor": 1, "validation_fraction": 0.2}},
}
TRAIN_CONFIG = {
    "coreset": {"config": {"budget": 600, "pca_dim": 16}},
    "teacher": {"config": {"n_neighbors": 10}},
    "student": {"config": {"extra_rows": 2000, "min_rows": 3000, "hidden": [128, 128], "input_pca_dim": 32, "steps": 1000,
                           "batch_size": 256, "edge_batch_size": 256,
                           "graph_weight": 1.0, "noise_std": 0.3, "mix_weight": 1.0}},
    "artifact": {"config": {"sparsity": 0.1, "finetune_steps": 170}},
}


@pytest.fixture(scope="module")
def digits_home(tmp_path_factory):
    """Three digits slices, ingested once for the module."""
    home = tmp_path_factory.mktemp("digits")
    paths = write_demo_slices(home / "incoming", "digits", 3, allow_download=False, say=lambda _: None)
    keys = [p.stem for p in paths]
    resources = {"warehouse": WarehouseResource(home=str(home)), "contract": SliceContract(), "seed": Seed()}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("slices", keys)
        for key in keys:
            assert dg.materialize([raw_slices, samples], partition_key=key, instance=instance,
                                  resources=resources, run_config={"ops": FAST}).success
    return home, keys


#: 1.4k training rows are too few for the student to generalise like umap-learn's kNN-based
#: transform (see bench/RESULTS.md), so the digits gates are wider than the Fashion-MNIST defaults.
# every asset and check with a condition, no source assets (their selection is a beta feature)
EVERY_CONDITION = dg.AssetSelection.all() | dg.AssetSelection.all_asset_checks()
DIGITS_GATES = QualityGates(trust_tolerance=0.06, knn_accuracy_tolerance=0.1, min_student_overlap=0.85)


def _train(home, instance, run_config, gates=DIGITS_GATES, selection=(coreset, teacher, student, artifact,
                                                                         quality_report, model), seed=Seed()):
    resources = {"warehouse": WarehouseResource(home=str(home)), "quality_gates": gates, "seed": seed}
    return dg.materialize(
        TRAIN,
        instance=instance,
        resources=resources,
        run_config={"ops": run_config},
        raise_on_error=False,
        selection=list(selection),
    )


def test_train_chain_end_to_end_with_gates(digits_home):
    digits_home, _ = digits_home
    with dg.instance_for_test() as instance:
        result = _train(digits_home, instance, TRAIN_CONFIG)
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert result.success, [c.description for c in checks.values()]
        assert checks["trustworthiness_vs_teacher"].passed, checks["trustworthiness_vs_teacher"].description
        assert checks["knn_overlap_with_student"].passed, checks["knn_overlap_with_student"].description
        assert checks["knn_accuracy_vs_teacher"].passed, checks["knn_accuracy_vs_teacher"].description
        assert checks["stable_vs_previous"].passed and "nothing to compare" in checks["stable_vs_previous"].description
        distilled = result.asset_materializations_for_node("student")[0].metadata
        # 1.4k real rows: the rest of min_rows are new rows between neighbours, labelled by the teacher
        assert distilled["distillation_rows"].value == 3000 and 0 < distilled["new_rows"].value < 3000

    report = json.loads((digits_home / "reports" / "quality_report.json").read_text())
    for which in ("teacher", "student", "artifact"):
        for name in ("trustworthiness", "continuity", "knn_recall", "knn_accuracy", "spearman",
                     "transform_rows_per_s", "size_bytes"):
            assert name in report[which], (which, name)
    art = report["artifact"]
    assert art["trustworthiness"] >= report["teacher"]["trustworthiness"] - DIGITS_GATES.trust_tolerance
    assert art["knn_accuracy"] > 0.85  # digits are easy to separate
    assert art["size_bytes"] < report["teacher"]["size_bytes"] / 5
    assert 0 <= art["knn_overlap_with_teacher"] <= 1
    assert (digits_home / "reports" / "quality_report.md").read_text().count("| trustworthiness |") == 1
    proj = Projector.load(art["path"])
    assert proj.input_dim == 64 and proj.n_components == 2


def test_a_retraining_keeps_the_served_map_when_aligned(digits_home):
    home, _ = digits_home

    def retrain(promote: bool = False, **teacher_config) -> tuple[dict, dict]:
        """Another teacher fit of the same coreset (the project's seed, so the coreset, stay): a retraining
        that is not the served model again. Its layout differs by its SGD (5 negative samples, not 10)."""
        teacher_config = {**TRAIN_CONFIG["teacher"]["config"], "negative_sample_rate": 5, **teacher_config}
        config = {**TRAIN_CONFIG, "teacher": {"config": teacher_config}}
        steps = [coreset, teacher, student, artifact, quality_report] + ([model] if promote else [])
        with dg.instance_for_test() as instance:
            result = _train(home, instance, config, selection=steps, seed=Seed(value=0))
            assert result.success, [c.description for c in result.get_asset_check_evaluations()]
            fitted = result.asset_materializations_for_node("teacher")[0].metadata
        return fitted, json.loads((home / "reports" / "quality_report.json").read_text())

    if not (home / "models" / "artifact.uart").exists():  # something to be served, when this test runs alone
        retrain(promote=True, align_to_served=False, negative_sample_rate=TeacherConfig().negative_sample_rate)
    served = Projector.load(home / "models" / "artifact.uart").version
    _, unaligned = retrain(align_to_served=False)
    fitted, similar = retrain(keep_served_layout=False)
    assert fitted["aligned_to"].value == served and fitted["layout"].value == "fresh"
    assert fitted["alignment_scale"].value > 0
    assert unaligned["stability"]["previous_version"] == similar["stability"]["previous_version"] == served
    # the same fresh layout, in a frame of its own vs carried onto the served model's by a similarity:
    # it moves the map and changes no neighbourhood
    assert similar["stability"]["median_displacement"] != unaligned["stability"]["median_displacement"]
    assert similar["stability"]["knn_overlap"] == pytest.approx(unaligned["stability"]["knn_overlap"], abs=5e-3)
    assert similar["artifact"]["trustworthiness"] == pytest.approx(unaligned["artifact"]["trustworthiness"], abs=2e-3)
    assert similar["artifact"]["knn_accuracy"] == pytest.approx(unaligned["artifact"]["knn_accuracy"], abs=5e-3)
    # the default keeps the served map of the coreset as the layout: the map stays put
    fitted, kept = retrain()
    assert fitted["layout"].value == "served" and fitted["layout_trust_cost"].value <= 0.002
    assert fitted["layout_rows_kept"].value > 0  # the served artifact's saved layout, by uid
    assert fitted["alignment_scale"].value == pytest.approx(1.0)
    # the same rows as the served model's teacher, so the same targets: the very same artifact, or one that
    # barely moves (the report compares only with another version)
    moved = kept.get("stability", {"median_displacement": 0.0, "knn_overlap": 1.0})
    assert kept["artifact"]["version"] == served or "stability" in kept
    assert moved["median_displacement"] < 0.5 * min(unaligned["stability"]["median_displacement"],
                                                     similar["stability"]["median_displacement"])
    assert moved["knn_overlap"] > unaligned["stability"]["knn_overlap"]
    # keeping version 1's layout keeps version 1's quality: on digits a fresh fit of the larger coreset is
    # better by 0.003-0.005 of trustworthiness (bench/RESULTS.md, session 11), within the guard's noise
    assert kept["artifact"]["trustworthiness"] >= unaligned["artifact"]["trustworthiness"] - 5e-3


def test_broken_student_fails_the_gate_reports_why_and_is_not_promoted(digits_home, tmp_path):
    digits_home, _ = digits_home
    broken = {**TRAIN_CONFIG, "student": {"config": {**TRAIN_CONFIG["student"]["config"], "steps": 1,
                                                     "learning_rate": 1e-7}}}
    served = digits_home / "models" / "artifact.uart"
    with dg.instance_for_test() as instance:
        before = served.read_bytes()
        result = _train(digits_home, instance, broken)
        assert not result.success
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        trust = checks["trustworthiness_vs_teacher"]
        assert not trust.passed
        assert "artifact" in trust.description and "teacher" in trust.description and "floor" in trust.description and "FAILED" in trust.description
        materialized = {m.asset_key.path[-1] for m in result.get_asset_materialization_events() for m in [m.event_specific_data.materialization]}
        moved = checks["stable_vs_previous"]  # a one-step student tears the served map apart: it warns
        assert not moved.passed and moved.severity == dg.AssetCheckSeverity.WARN and "WARNING" in moved.description
        # the report is the diagnostic: it materializes; the promotion (model) does not
        assert {"artifact", "quality_report"} <= materialized and "model" not in materialized
        # `model` alone (from the UI, or a re-execution) promotes nothing that was not gated in its own run
        alone = dg.materialize([model], instance=instance, raise_on_error=False,
                               resources={"warehouse": WarehouseResource(home=str(digits_home))})
        assert not alone.success and served.read_bytes() == before
        failure = next(e for e in alone.all_events if e.is_step_failure).step_failure_data.error.message
        assert "gated in the same run" in failure
    report = json.loads((digits_home / "reports" / "quality_report.json").read_text())
    failed = [g for g in report["gates"] if not g["passed"]]
    assert failed and failed[0]["margin"] < 0 and failed[0]["margin_ci95"][1] < 0
    assert report["artifact"]["version"] != Projector.from_bytes(before).version
    assert report["stability"]["previous_version"] == Projector.from_bytes(before).version
    assert report["stability"]["median_displacement"] > 0.02 and 0 <= report["stability"]["knn_overlap"] < 1
    assert served.read_bytes() == before  # the served model is still the previous one


def con_rows(wh, sql: str) -> list[tuple]:
    with connect(wh) as con:
        return con.execute(sql).fetchall()


def test_new_artifact_makes_embeddings_stale_and_automation_re_embeds(digits_home):
    import pyarrow.parquet as pq

    home, keys = digits_home
    resources = {"warehouse": WarehouseResource(home=str(home)), "quality_gates": DIGITS_GATES,
                 "embedding_engine": LocalEmbedding(chunk_rows=100), "contract": SliceContract(), "seed": Seed()}
    all_assets = dg.Definitions(assets=[raw_slices, samples, *TRAIN, embeddings], resources=resources)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("slices", keys)
        for key in keys:  # this instance's own history of the slices
            assert dg.materialize([raw_slices, samples], partition_key=key, instance=instance,
                                  resources=resources, run_config={"ops": FAST}).success
        trained = _train(home, instance, TRAIN_CONFIG)
        assert trained.success, [c.description for c in trained.get_asset_check_evaluations()]
        first = Projector.load(home / "models" / "artifact.uart").version
        for key in keys:
            res = dg.materialize([embeddings], partition_key=key, instance=instance, resources=resources)
            assert res.asset_materializations_for_node("embeddings")[0].metadata["artifact_version"].value == first
        wh = Warehouse(home / "warehouse", home / "warehouse.duckdb")
        out = pq.read_table(wh.embeddings_path(first, keys[0]))
        assert out.column_names == ["id", "x", "y", "coverage", "label", "artifact_version"]
        assert set(out.column("artifact_version").to_pylist()) == {first}
        coverage = out.column("coverage").to_numpy()  # the slice's own rows: like the training data
        assert np.isfinite(coverage).all() and 0.2 < np.median(coverage) < 2
        # the DuckDB view covers every slice
        with connect(wh) as con:
            rows = con.execute("SELECT label, avg(x), count(*) FROM embeddings GROUP BY label ORDER BY label").fetchall()
        assert len(rows) == 10 and sum(r[2] for r in rows) == 1797

        evaluation = dg.evaluate_automation_conditions(defs=all_assets, instance=instance, asset_selection=EVERY_CONDITION)
        assert evaluation.get_requested_partitions(embeddings.key) == set()

        # a new artifact (other sparsity, so other weights) passes its gates
        retrain = dg.materialize([artifact, quality_report, model], instance=instance, resources=resources,
                                 run_config={"ops": {"artifact": {"config": {"sparsity": 0.15, "finetune_steps": 170}}}})
        assert retrain.success, [c.description for c in retrain.get_asset_check_evaluations()]
        second = Projector.load(home / "models" / "artifact.uart").version
        assert second != first

        evaluation = dg.evaluate_automation_conditions(defs=all_assets, instance=instance, asset_selection=EVERY_CONDITION,
                                                     cursor=evaluation.cursor)
        assert evaluation.get_requested_partitions(embeddings.key) == set(keys)

        res = dg.materialize([embeddings], partition_key=keys[1], instance=instance, resources=resources)
        assert res.success
        again = pq.read_table(wh.embeddings_path(second, keys[1]))
        assert set(again.column("artifact_version").to_pylist()) == {second}
        # the view reads the first model's maps until every slice has the second's: never a mixture
        view = lambda: con_rows(wh, "SELECT DISTINCT artifact_version FROM embeddings")  # noqa: E731
        assert view() == [(first,)]
        for key in keys:
            if key != keys[1]:
                dg.materialize([embeddings], partition_key=key, instance=instance, resources=resources)
        assert view() == [(second,)]
        assert wh.embeddings_path(first, keys[0]).exists()  # the version before it stays (keep_versions)

        # a rollback is a materialization of `model` with an earlier promoted version
        coverage_second = (home / "models" / "coverage.npz").read_bytes()
        back = dg.materialize([model], instance=instance, resources=resources,
                              run_config={"ops": {"model": {"config": {"version": first}}}})
        assert back.success
        assert Projector.load(home / "models" / "artifact.uart").version == first
        md = back.asset_materializations_for_node("model")[0].metadata
        assert md["rollback"].value is True and md["version"].value == first
        assert (home / "models" / "coverage.npz").read_bytes() == (home / "models" / "artifacts" / f"{first}.coverage.npz").read_bytes()
        assert coverage_second == (home / "models" / "artifacts" / f"{second}.coverage.npz").read_bytes()
        from umap_assets.defs.promotion import promoted_versions

        assert promoted_versions(instance)[:2] == [first, second]
        never = dg.materialize([model], instance=instance, resources=resources, raise_on_error=False,
                               run_config={"ops": {"model": {"config": {"version": "0123456789abcdef"}}}})
        assert not never.success and Projector.load(home / "models" / "artifact.uart").version == first


def test_a_pickle_planted_in_the_home_does_not_run(digits_home, tmp_path):
    """Files planted under ``models/`` (the old pickle slots, and a record at the version the history
    names) hold data at most: materializing `student` or `quality_report` alone runs none of them."""
    import pickle

    import numpy as np

    from .test_records import _Planted

    home, _ = digits_home
    marker = tmp_path / "ran"
    models = home / "models"
    for name in ("teacher.pkl", "student.pt", "candidate.uart"):
        (models / name).write_bytes(pickle.dumps(_Planted(marker)))
    planted = np.empty(1, object)
    planted[0] = _Planted(marker)
    version = "0123456789abcdef"
    for kind in ("teachers", "students"):
        (models / kind).mkdir(parents=True, exist_ok=True)
        with open(models / kind / f"{version}.npz", "wb") as fh:
            np.savez(fh, __header__=np.frombuffer(b'{"kind": "x"}', np.uint8), rows=planted)
    resources = {"warehouse": WarehouseResource(home=str(home)), "quality_gates": DIGITS_GATES, "seed": Seed()}
    try:
        with dg.instance_for_test() as instance:
            for asset in (student, quality_report):  # alone, with nothing upstream on this instance
                assert not dg.materialize([asset], instance=instance, resources=resources, raise_on_error=False).success
            for asset in ("teacher", "artifact"):  # the history names the planted version
                instance.report_runless_asset_event(dg.AssetMaterialization(
                    asset, metadata={"version": version, "student_version": version}))
            for asset in (student, quality_report):
                assert not dg.materialize([asset], instance=instance, resources=resources, raise_on_error=False).success
        assert not marker.exists(), "a planted pickle ran"
    finally:
        for name in ("teacher.pkl", "student.pt", "candidate.uart"):
            (models / name).unlink()
        for kind in ("teachers", "students"):
            (models / kind / f"{version}.npz").unlink()
