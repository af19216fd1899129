import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from umap_assets.defs.partitions import slices_partitions
from umap_assets.defs.resources import Seed, SliceContract, WarehouseResource
from umap_assets.home import Layout

os.environ.setdefault("UMAP_ASSETS_OFFLINE", "1")  # tests never download


@contextlib.contextmanager
def running_map(data, **kwargs) -> Iterator[str]:
    """The map server over ``data`` (a ``MapData`` or ``MapSource``) on a free port, serving from a
    thread: yields its base URL, and is shut down and closed on the way out."""
    from umap_assets.map_server import make_server

    server = make_server(data, port=0, **kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def make_slice(
    path: Path,
    n: int = 300,
    dim: int = 8,
    *,
    seed: int = 0,
    n_labels: int | None = 3,
    id_start: int = 0,
    label_weights: list[float] | None = None,
) -> Path:
    """A small, valid slice: clustered Gaussian features with integer labels."""
    rng = np.random.default_rng(seed)
    labels = (
        rng.choice(n_labels, size=n, p=label_weights) if n_labels else None
    )
    centres = rng.normal(0, 5, size=(max(n_labels or 1, 1), dim))
    X = (centres[labels if labels is not None else np.zeros(n, int)] + rng.normal(0, 1, size=(n, dim))).astype(
        np.float32
    )
    cols = {
        "id": pa.array(np.arange(id_start, id_start + n, dtype=np.int64)),
        "features": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), dim),
    }
    if labels is not None:
        cols["label"] = pa.array(labels.astype(np.int64))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)
    return path


@pytest.fixture
def layout(tmp_path) -> Layout:
    return Layout.at(tmp_path / "home").ensure()


@pytest.fixture
def resources(layout):
    return {"warehouse": WarehouseResource(home=str(layout.home)), "contract": SliceContract(), "seed": Seed()}


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def add_partitions(instance, *keys: str) -> None:
    instance.add_dynamic_partitions(slices_partitions.name, list(keys))
