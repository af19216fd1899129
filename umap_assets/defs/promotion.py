"""``model``: the served model. Its materialization is the promotion of an artifact."""

import functools
import time
from datetime import timedelta

import dagster as dg

from ..history import checks_in_run, in_run, metadata_of, promoted_versions
from ..runtime import Projector
from ..map_names import DEFAULT_NAMES, MapNames
from .binding import map_asset
from .groups import TRAINING
from .quality import GATE_NAMES
from .resources import WarehouseResource
#: The served model, and the maps it made, show as stale in the UI when their newest
#: materialization is older than this (``weekly_retrain`` keeps them fresh when it is on).
MAP_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=30), warn_window=timedelta(days=8))


class ModelConfig(dg.Config):
    """Which artifact ``model`` promotes."""

    version: str | None = None  # an earlier promoted version to serve again (a rollback); default: the one the report measured


def compute_model(context: dg.AssetExecutionContext, config: ModelConfig, warehouse: WarehouseResource,
                  names: MapNames) -> dg.MaterializeResult:
    """The artifact that ``embeddings`` and ``drift`` use (``models/artifact.uart``).

    Runs only after the blocking gates on ``quality_report`` (checks declared on it) pass, and promotes the
    exact artifact that the report measured (by version), with the drift reference of the coreset
    it was trained on. With ``config.version`` it serves an earlier promoted version again (a
    rollback: ``umap-assets rollback``). Its data version is the artifact's version, so every
    slice's embeddings show which model made them.
    """
    started = time.perf_counter()
    store = warehouse.store()
    if config.version and config.version not in (served := promoted_versions(context.instance, names.asset_key("model"))):
        raise dg.Failure(f"artifact {config.version} was never promoted; roll back to one of "
                         f"{served[:5]} (`umap-assets rollback --list`)")
    report_version = metadata_of(in_run(context.instance, context.run.run_id, names.asset_key("quality_report")), "report_version")
    candidate = None
    if not config.version:
        _refuse_unless_gated_here(context, report_version, names)
        try:
            candidate = store.candidate(report_version)
        except FileNotFoundError as exc:
            raise dg.Failure(str(exc)) from exc
    version = config.version or candidate.version
    source = store.versioned_artifact_path(version)
    if not source.exists():
        raise dg.Failure(f"artifact {version} is gone from {source}; re-materialize `artifact` and `quality_report`")
    path = store.promote(version)
    projector = Projector.load(path)
    context.log.info(f"promoted artifact {version} to {path}" + (" (rollback)" if config.version else ""))
    metrics = candidate.report.metrics if candidate is not None else {}
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "candidate": version,
            "report_version": report_version if candidate is not None else "none (a rollback)",
            "rollback": bool(config.version),
            "bytes": path.stat().st_size,
            "input_dim": projector.input_dim,
            **({"trustworthiness": metrics["artifact"]["trustworthiness"],
                "teacher_trustworthiness": metrics["teacher"]["trustworthiness"]} if metrics else {}),
            "path": dg.MetadataValue.path(str(path)),
            "seconds": round(time.perf_counter() - started, 3),
        },
        data_version=dg.DataVersion(version),
    )


def _refuse_unless_gated_here(context: dg.AssetExecutionContext, report_version: str | None, names: MapNames) -> None:
    """``model`` promotes only the candidate that this very run measured and whose gates passed in it."""
    if report_version is None:
        raise dg.Failure("`model` promotes only a candidate measured and gated in the same run: materialize "
                         "`quality_report` with it (job `train_model`), or serve an earlier version "
                         "(`umap-assets rollback`)")
    verdicts = checks_in_run(context.instance, context.run.run_id, names.asset_key("quality_report"))
    failed = [name for name in GATE_NAMES if verdicts.get(name) is not True]
    if failed:
        raise dg.Failure(f"candidate {report_version}: gate(s) {', '.join(failed)} did not pass in this run; "
                         "not promoted")


@functools.cache
def promotion_definitions(names: MapNames) -> dg.Definitions:
    """The map's ``model``: the promotion, after the map's blocking gates."""
    return dg.Definitions(assets=[map_asset(names, "model", compute_model, group=TRAINING, training=True,
                                            deps=("quality_report", "artifact", "coreset"), kinds={"numpy"},
                                            freshness_policy=MAP_FRESHNESS)])


definitions = promotion_definitions
(model,) = promotion_definitions(DEFAULT_NAMES).assets
