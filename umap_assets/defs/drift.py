"""``drift``: how well the current model's training data covers each slice.

The score is plain numerics (:mod:`umap_assets.numerics.drift`); ``training_sensor`` reads the
``drifted`` flag from the materializations of new slices to decide whether to retrain.
"""

import functools
import time

import dagster as dg
import pyarrow.parquet as pq
from pydantic import Field

from ..contract import features_matrix
from ..numerics.drift import drift_score
from ..numerics.metrics import subsample
from ..warehouse import take_rows
from ..map_names import DEFAULT_NAMES, MapNames
from .binding import map_asset
from .resources import Seed, WarehouseResource
from .groups import MAPS



class DriftConfig(dg.Config):
    """How a slice is scored, and where drift starts."""

    max_rows: int = Field(5_000, ge=1)  # sample rows scored (a subsample drawn with the project's Seed)
    max_uncovered_fraction: float = Field(0.05, ge=0, le=1)  # rows like the training data leave about 1% uncovered
    max_median_distance_ratio: float = Field(1.10, gt=0)  # and sit at about 1.00 times the held-out rows' median


def compute_drift(context: dg.AssetExecutionContext, config: DriftConfig, warehouse: WarehouseResource,
          seed: Seed) -> dg.MaterializeResult:
    """The share of a slice's sampled rows that the served model's training data does not cover.

    A row is uncovered when it lies farther from every row of the promoted artifact's coreset (in
    the leading components that keep 0.9 of the training rows' variance, plus the row's residual off
    them) than 99% of held-out validation rows do. Rows like the training data
    leave about 1% uncovered, at a median distance about 1.0 times the held-out rows'. Above
    ``max_uncovered_fraction`` or ``max_median_distance_ratio`` the slice is marked ``drifted`` and
    ``training_sensor`` retrains the model. Measured again whenever a new artifact is promoted.
    """
    key = context.partition_key
    started = time.perf_counter()
    try:
        reference = warehouse.store().load_coverage()
    except FileNotFoundError as exc:
        raise dg.Failure(f"slice '{key}': cannot score drift: {exc}") from exc
    path = warehouse.warehouse().table_path("samples", key)
    n = pq.ParquetFile(path).metadata.num_rows
    rows = take_rows(path, subsample(n, config.max_rows, seed.value), ["features"])
    try:
        score = drift_score(reference, features_matrix(rows.column("features")))
    except ValueError as exc:
        raise dg.Failure(f"slice '{key}': cannot score drift: {exc}") from exc
    drifted = score.drifted(config.max_uncovered_fraction, config.max_median_distance_ratio)
    summary = (f"{score.uncovered_fraction:.1%} of {score.rows:,} rows uncovered (about "
               f"{score.expected_uncovered:.0%} for rows like the training data; drift above "
               f"{config.max_uncovered_fraction:.0%}), median distance {score.median_distance_ratio:.2f}x the "
               f"held-out rows' (drift above {config.max_median_distance_ratio:.2f}x)")
    context.log.info(f"slice {key}: {summary}" + (": drifted" if drifted else ""))
    return dg.MaterializeResult(
        metadata={
            "drifted": drifted,
            "uncovered_fraction": score.uncovered_fraction,
            "expected_uncovered_fraction": score.expected_uncovered,
            "max_uncovered_fraction": config.max_uncovered_fraction,
            "median_distance_ratio": score.median_distance_ratio,
            "max_median_distance_ratio": config.max_median_distance_ratio,
            "rows_scored": score.rows,
            "summary": summary,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )


@functools.cache
def drift_definitions(names: MapNames) -> dg.Definitions:
    """The map's ``drift`` (per slice, measured again by automation when a new model is served)."""
    return dg.Definitions(assets=[map_asset(
        names, "drift", compute_drift, group=MAPS, deps=("samples", "model"), partitioned=True, kinds={"numpy"},
        automation_condition=dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed())])


definitions = drift_definitions
(drift,) = drift_definitions(DEFAULT_NAMES).assets
