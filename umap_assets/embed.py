"""Streaming batch transform: Parquet in, map coordinates out, in bounded memory.

Shared by the ``embeddings`` asset, the ``umap-assets embed`` command and the engines. Rows are read
in chunks that split the file's row groups evenly (:func:`umap_assets.contract.iter_chunks`),
validated, transformed with the numpy runtime and written chunk by chunk to a temporary file that
is renamed into place at the end. A pool of threads reads and maps the chunks (Arrow's decoding and
numpy's matmul both release the GIL), each with one BLAS thread, and this thread writes them in
order (:func:`transformed`). The chunks in flight are bounded by ``IN_FLIGHT_BYTES``, so memory
stays flat whatever the file's size.
"""

from __future__ import annotations

import itertools
import os
import resource
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from .atomic import atomic_path, sweep_stale_temps
from .contract import CHUNK_ROWS, SliceBatch, SliceSpec, iter_validated_batches, write_options
from .runtime import Projector


@dataclass
class EmbedStats:
    rows: int
    seconds: float
    peak_rss_bytes: int
    artifact_version: str
    output: str
    start_rss_bytes: int = 0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def metadata(self, engine: str) -> dict:
        """The ``embeddings`` materialization's metadata for this run, made by ``engine``."""
        return {"dagster/row_count": self.rows, "rows_per_s": round(self.rows_per_s, 1), "seconds": round(self.seconds, 3),
                "peak_rss_mb": round(self.peak_rss_bytes / 2**20, 1),
                "rss_growth_mb": round(max(self.peak_rss_bytes - self.start_rss_bytes, 0) / 2**20, 1),
                "artifact_version": self.artifact_version, "engine": engine}


def output_schema(names: list[str], id_type: pa.DataType, label_type: pa.DataType | None,
                  carried: Sequence[pa.Field] = ()) -> pa.Schema:
    """id, the artifact's output columns (``Projector.output_names``: coordinates, then coverage), label,
    the carried columns (``SliceSpec.carry``, under their own names), version."""
    fields = [pa.field("id", id_type, nullable=False)]
    fields += [pa.field(name, pa.float32(), nullable=False) for name in names]
    if label_type is not None:
        fields.append(pa.field("label", label_type))
    fields += list(carried)
    fields.append(pa.field("artifact_version", pa.string(), nullable=False))
    return pa.schema(fields)


def embedding_batch(ids: pa.Array, outputs: np.ndarray, names: list[str], labels: pa.Array | None,
                    version: str, carried: dict[str, pa.Array] | None = None) -> pa.RecordBatch:
    carried = carried or {}
    schema = output_schema(names, ids.type, labels.type if labels is not None else None,
                           [pa.field(name, a.type) for name, a in carried.items()])
    arrays = [ids] + [pa.array(outputs[:, i], type=pa.float32()) for i in range(outputs.shape[1])]
    if labels is not None:
        arrays.append(labels)
    arrays += list(carried.values())
    arrays.append(pa.repeat(pa.scalar(version, pa.string()), len(ids)))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (for the whole process lifetime)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssSampler:
    """Samples this process's RSS in a background thread; ``peak`` is the highest value seen.

    ``ru_maxrss`` only ever grows over the life of a process, so inside a long-lived run it says
    nothing about one step; this measures the step itself.
    """

    def __init__(self, interval_s: float = 0.01):
        import psutil

        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self.start_rss = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


#: Bytes of features held at once by one embedding: the chunks being read, mapped and waiting to be
#: written. The transform pool shrinks to fit, so memory is flat on any machine.
IN_FLIGHT_BYTES = 256 * 2**20


def transform_workers(chunk_bytes: int, workers: int | None = None) -> int:
    """Transform threads for chunks of ``chunk_bytes``: ``workers``, or every core this process may
    use, but no more than ``IN_FLIGHT_BYTES`` holds (each thread has up to two chunks in flight)."""
    cores = workers or len(os.sched_getaffinity(0))
    return max(1, min(cores, IN_FLIGHT_BYTES // max(chunk_bytes, 1) // 2))


def transformed(projector: Projector, batches: Iterable[SliceBatch], workers: int,
                outputs: bool = False) -> Iterator[tuple[SliceBatch, np.ndarray]]:
    """``(batch, coordinates)`` for each of ``batches``, in order, read and mapped by ``workers`` threads;
    with ``outputs``, every output column instead (:meth:`~umap_assets.runtime.Projector.outputs`).

    Each thread takes the next batch from ``batches`` (one thread at a time: the reader is
    sequential) and maps it with one BLAS thread, so reading one chunk overlaps mapping the others
    and every core is busy: a multi-threaded BLAS call scales by about 1.5 on 2 cores, and its
    threads spin while the reader needs a core (bench/RESULTS.md, session 12). At most
    ``2 * workers`` batches are in flight. An exception raised by ``batches`` is raised here, in
    order; ``batches`` is closed (its open file, say) when this generator ends or is closed.
    """
    source, lock, numbers = iter(batches), threading.Lock(), itertools.count()

    def task() -> tuple[int, SliceBatch | Exception | None, np.ndarray | None]:
        with lock:
            number = next(numbers)
            try:
                batch = next(source, None)
            except Exception as exc:  # raised to the consumer once the batches before it are out
                return number, exc, None
        fn = projector.outputs if outputs else projector.transform
        return number, batch, None if batch is None else fn(batch.features)

    ready: dict[int, tuple] = {}
    running: set = set()
    wanted, exhausted = 0, False
    try:
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers, thread_name_prefix="transform") as pool:
            while True:
                while not exhausted and len(running) + len(ready) < 2 * workers:  # a slow batch holds the rest
                    running.add(pool.submit(task))
                if not running:
                    return
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    number, batch, coords = future.result()
                    ready[number] = (batch, coords)
                    exhausted |= not isinstance(batch, SliceBatch)
                while wanted in ready:
                    batch, coords = ready.pop(wanted)
                    wanted += 1
                    if isinstance(batch, Exception):
                        raise batch
                    if batch is not None:
                        yield batch, coords
    finally:
        getattr(source, "close", lambda: None)()  # after the pool is done with it


def embed_file(
    projector: Projector,
    source: str | Path,
    destination: str | Path,
    *,
    spec: SliceSpec = SliceSpec(),
    chunk_rows: int = CHUNK_ROWS,
    workers: int | None = None,
) -> EmbedStats:
    """Embed every row of ``source`` into ``destination`` (id, x, y | x0..xk, coverage, label, the carried
    columns, artifact_version).

    ``workers`` transform threads (default: one per core, see :func:`transform_workers`).
    """
    source, destination = Path(source), Path(destination)
    started = time.perf_counter()
    sweep_stale_temps(destination.parent, destination.name)
    rows = 0
    writer: pq.ParquetWriter | None = None
    threads = transform_workers(chunk_rows * projector.input_dim * 4, workers)
    with RssSampler() as rss, atomic_path(destination) as tmp:
        try:
            batches = iter_validated_batches(
                source, spec, expected_dim=projector.input_dim, batch_rows=chunk_rows,
                expected_dim_source="the artifact expects", check_unique_ids=False,
            )
            for batch, mapped in transformed(projector, batches, threads, outputs=True):
                out = embedding_batch(batch.ids, mapped, projector.output_names, batch.labels, projector.version,
                                      batch.carried)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, out.schema, **write_options(out.schema))
                writer.write_batch(out)
                rows += batch.features.shape[0]
        finally:
            if writer is not None:
                writer.close()
    return EmbedStats(rows, time.perf_counter() - started, rss.peak, projector.version, str(destination),
                      rss.start_rss)
