"""``model``: the served model. Its materialization is the promotion of an artifact."""

import json
import time
from datetime import timedelta

import dagster as dg

from ..runtime import Projector
from .model import store_of
from .quality import quality_report
from .resources import WarehouseResource
from .groups import TRAINING

GROUP = TRAINING
#: The served model, and the maps it made, show as stale in the UI when their newest
#: materialization is older than this (``weekly_retrain`` keeps them fresh when it is on).
MAP_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=30), warn_window=timedelta(days=8))


@dg.asset(
    deps=[quality_report],
    group_name=GROUP,
    kinds={"numpy"},
    freshness_policy=MAP_FRESHNESS,
)
def model(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The artifact that ``embeddings`` and ``drift`` use (``models/artifact.uart``).

    Runs only after the blocking ``quality_report_gates`` on ``quality_report`` pass, and promotes the
    exact artifact that the report measured (by version), with the drift reference of the coreset
    it was trained on. Its data version is the artifact's version, so every slice's embeddings
    show which model made them.
    """
    started = time.perf_counter()
    store = store_of(warehouse)
    report = json.loads((warehouse.layout().reports / "quality_report.json").read_text())
    version = report["artifact"]["version"]
    source = store.versioned_artifact_path(version)
    if not source.exists():
        raise dg.Failure(f"artifact {version} that the quality report measured is gone from {source}; "
                         "re-materialize `artifact` and `quality_report`")
    path = store.promote(source)
    projector = Projector.load(path)
    context.log.info(f"promoted artifact {version} to {path}")
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "bytes": path.stat().st_size,
            "input_dim": projector.input_dim,
            "trustworthiness": report["artifact"]["trustworthiness"],
            "teacher_trustworthiness": report["teacher"]["trustworthiness"],
            "path": dg.MetadataValue.path(str(path)),
            "seconds": round(time.perf_counter() - started, 3),
        },
        data_version=dg.DataVersion(version),
    )
