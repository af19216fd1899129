"""Streaming batch transform: Parquet in, map coordinates out, in bounded memory.

Shared by the ``embeddings`` asset, the ``umap-assets embed`` command and the engines. Rows are read
in chunks (``pyarrow.ParquetFile.iter_batches``), validated, transformed with the numpy runtime and
written chunk by chunk to a temporary file that is renamed into place at the end.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path, sweep_stale_temps
from .contract import SliceSpec, iter_validated_batches
from .runtime import Projector


@dataclass
class EmbedStats:
    rows: int
    seconds: float
    peak_rss_bytes: int
    artifact_version: str
    output: str

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def coordinate_names(n_components: int) -> list[str]:
    return ["x", "y"] if n_components == 2 else [f"x{i}" for i in range(n_components)]


def output_schema(n_components: int, id_type: pa.DataType, label_type: pa.DataType | None) -> pa.Schema:
    fields = [pa.field("id", id_type, nullable=False)]
    fields += [pa.field(name, pa.float32(), nullable=False) for name in coordinate_names(n_components)]
    if label_type is not None:
        fields.append(pa.field("label", label_type))
    fields.append(pa.field("artifact_version", pa.string(), nullable=False))
    return pa.schema(fields)


def embedding_batch(ids: pa.Array, coords: np.ndarray, labels: pa.Array | None, version: str) -> pa.RecordBatch:
    schema = output_schema(coords.shape[1], ids.type, labels.type if labels is not None else None)
    arrays = [ids] + [pa.array(coords[:, i], type=pa.float32()) for i in range(coords.shape[1])]
    if labels is not None:
        arrays.append(labels)
    arrays.append(pa.array([version] * len(ids), type=pa.string()))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def embed_file(
    projector: Projector,
    source: str | Path,
    destination: str | Path,
    *,
    spec: SliceSpec = SliceSpec(),
    chunk_rows: int = 65_536,
) -> EmbedStats:
    """Embed every row of ``source`` into ``destination`` (id, x, y | x0..xk, label, artifact_version)."""
    source, destination = Path(source), Path(destination)
    started = time.perf_counter()
    sweep_stale_temps(destination.parent, destination.name)
    rows = 0
    writer: pq.ParquetWriter | None = None
    with atomic_path(destination) as tmp:
        try:
            for batch in iter_validated_batches(
                source, spec, expected_dim=projector.input_dim, batch_rows=chunk_rows,
                expected_dim_source=f"the artifact expects", check_unique_ids=False,
            ):
                coords = projector.transform(batch.features)
                out = embedding_batch(batch.ids, coords, batch.labels, projector.version)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, out.schema, compression="zstd")
                writer.write_batch(out)
                rows += batch.features.shape[0]
        finally:
            if writer is not None:
                writer.close()
    return EmbedStats(rows, time.perf_counter() - started, peak_rss_bytes(), projector.version, str(destination))
