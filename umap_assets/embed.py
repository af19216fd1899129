"""Streaming batch transform: Parquet in, map coordinates out, in bounded memory.

Shared by the ``embeddings`` asset, the ``umap-assets embed`` command and the engines. Rows are read
in chunks that follow the file's row groups (:func:`umap_assets.contract.iter_chunks`), validated,
transformed with the numpy runtime and written chunk by chunk to a temporary file that is renamed
into place at the end. Three stages overlap (Arrow's decoding and numpy's matmul both release the
GIL): a reader thread runs ``PREFETCH`` chunks ahead, a pool of transform threads maps the chunks
that are ready, each with one BLAS thread, and this thread writes them in order. The chunks in
flight are bounded by ``IN_FLIGHT_BYTES``, so memory stays flat whatever the file's size.
"""

from __future__ import annotations

import os
import queue
import resource
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
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


#: Chunks read ahead of the transform.
PREFETCH = 1


def prefetched(items: Iterable, depth: int = PREFETCH) -> Iterator:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    An exception raised while producing is raised in the consumer, at the item it replaced; when
    the consumer stops early the producer stops at its next item, and closes ``items`` when it is a
    generator.
    """
    done = object()
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        box.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put((done, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            box.put((done, exc))
        finally:  # a generator's own cleanup (an open file, say) runs now, not at garbage collection
            getattr(items, "close", lambda: None)()

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = box.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                box.get_nowait()
            except queue.Empty:
                thread.join(0.05)


#: Bytes of features held at once by one embedding: the chunks read ahead, being transformed and
#: waiting to be written. The transform pool shrinks to fit, so memory is flat on any machine.
IN_FLIGHT_BYTES = 256 * 2**20


def transform_workers(chunk_bytes: int, workers: int | None = None) -> int:
    """Transform threads for chunks of ``chunk_bytes``: ``workers``, or every core this process may
    use, but no more than ``IN_FLIGHT_BYTES`` holds beside the reader's chunks."""
    cores = workers or len(os.sched_getaffinity(0))
    return max(1, min(cores, IN_FLIGHT_BYTES // max(chunk_bytes, 1) - PREFETCH - 2))


def transformed(projector: Projector, batches: Iterable[SliceBatch], workers: int) -> Iterator[tuple[SliceBatch, np.ndarray]]:
    """``(batch, coordinates)`` for each of ``batches``, in order, mapped by ``workers`` threads.

    Each thread runs numpy's matmul with one BLAS thread: a multi-threaded BLAS call scales by about
    1.5 on 2 cores and its threads spin while the reader needs a core; chunks mapped side by side
    use every core (bench/RESULTS.md, session 12). At most ``workers + 1`` chunks are pending.
    """
    pending: deque = deque()
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers, thread_name_prefix="transform") as pool:
        for batch in batches:
            pending.append((batch, pool.submit(projector.transform, batch.features)))
            if len(pending) > workers:
                done, coords = pending.popleft()
                yield done, coords.result()
        while pending:
            done, coords = pending.popleft()
            yield done, coords.result()


def embed_file(
    projector: Projector,
    source: str | Path,
    destination: str | Path,
    *,
    spec: SliceSpec = SliceSpec(),
    chunk_rows: int = CHUNK_ROWS,
    workers: int | None = None,
) -> EmbedStats:
    """Embed every row of ``source`` into ``destination`` (id, x, y | x0..xk, label, artifact_version).

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
            batches = prefetched(iter_validated_batches(
                source, spec, expected_dim=projector.input_dim, batch_rows=chunk_rows,
                expected_dim_source="the artifact expects", check_unique_ids=False,
            ))
            for batch, coords in transformed(projector, batches, threads):
                out = embedding_batch(batch.ids, coords, batch.labels, projector.version)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, out.schema, **write_options(out.schema))
                writer.write_batch(out)
                rows += batch.features.shape[0]
        finally:
            if writer is not None:
                writer.close()
    return EmbedStats(rows, time.perf_counter() - started, rss.peak, projector.version, str(destination),
                      rss.start_rss)
