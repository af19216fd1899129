"""A Postgres-backed Dagster instance, the storage for tens of thousands of slices (README, "Scale").

Runs against a real server (Debian's ``postgresql``) that the fixture starts on a free local port.
"""

import time

import dagster as dg
import pytest

from umap_assets.defs.ingest import raw_slices
from umap_assets.defs.resources import Seed, SliceContract, WarehouseResource
from umap_assets.defs.sensors import new_slices_sensor

from .conftest import make_slice
from .postgres_server import postgres_server, server_bin


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("dagster_postgres", reason="the postgres extra is not installed")
    if server_bin() is None:
        pytest.skip("no PostgreSQL server on this machine (Debian's postgresql package)")
    with postgres_server() as url:
        yield url


def test_twenty_thousand_slices_on_a_postgres_instance(postgres_url, layout):
    resources = {"warehouse": WarehouseResource(home=str(layout.home)), "contract": SliceContract(), "seed": Seed()}
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": postgres_url}}}) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        known = [f"day_{i:05d}" for i in range(20_000)]
        instance.add_dynamic_partitions("slices", known)
        make_slice(layout.incoming / "day_20000.parquet")
        started = time.perf_counter()
        given = {"warehouse": resources["warehouse"]}
        first = new_slices_sensor(dg.build_sensor_context(instance=instance, resources=given))
        ctx = dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=given)
        result = new_slices_sensor(ctx)
        seconds = time.perf_counter() - started
        assert [r.partition_key for r in result.run_requests] == ["day_20000"]
        assert result.dynamic_partitions_requests[0].partition_keys == ["day_20000"]
        assert seconds < 30, f"two sensor ticks over 20,000 partitions took {seconds:.1f}s"
        instance.add_dynamic_partitions("slices", ["day_20000"])
        assert dg.materialize([raw_slices], partition_key="day_20000", instance=instance, resources=resources).success
        assert len(instance.get_dynamic_partitions("slices")) == 20_001
        event = instance.get_latest_materialization_event(dg.AssetKey("raw_slices"))
        assert event.asset_materialization.partition == "day_20000"
