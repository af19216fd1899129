"""Embedding engines: ``local`` (streaming, in this process) and ``spark`` (pyspark ``mapInArrow``).

An engine is one frozen dataclass, :class:`LocalEngine` or :class:`SparkEngine`, with its settings as
fields and their defaults (the chunk size, the Spark master); :func:`embed` is the one entry point.
The ``EmbeddingEngine`` resource builds the dataclass, and hands it to its own process as JSON
(:func:`engine_settings`, :func:`engine_from_settings`).

Both run the same numpy runtime and write the same single Parquet file per input. The Spark engine
broadcasts the artifact's bytes once; each Python worker loads the :class:`Projector` once from the
broadcast value and transforms Arrow batches, their features decoded by the contract's own decoder.
Executors need numpy and pyarrow, not torch and not this package: the runtime and the decoder
(:mod:`umap_assets.features`) are shipped to them with ``addPyFile``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path, atomic_write_bytes
from .contract import (CHUNK_ROWS, MAX_CARRY_CHARS, SliceError, SliceSpec, carried_fields, check_schema, features_dim,
                       open_parquet, parquet_reader, write_options)
from .embed import EmbedStats, embed_file, output_schema, peak_rss_bytes
from .runtime import ArtifactError, Projector

#: The default Spark master: two local cores (the one declaration: ``SparkEngine.master``'s default,
#: which the resource and the CLI take).
SPARK_MASTER = "local[2]"
RUNTIME_MODULE = "umap_assets_runtime"
FEATURES_MODULE = "umap_assets_features"


class OutputPathError(ValueError):
    """An embedding output path that would overwrite something the project needs."""


def check_output_path(destination: str | Path, source: str | Path, artifact: str | Path,
                      models_dirs: tuple[Path, ...] = ()) -> Path:
    """``destination`` made absolute, once it is none of: the input, the artifact, a directory, or
    anything under a model store (``models_dirs``, and the ``models/`` folder holding the artifact).

    Raises
    ------
    OutputPathError
        With one line naming the path and why it is refused.
    """
    out = Path(destination).expanduser().resolve()
    artifact = Path(artifact).expanduser().resolve()
    stores = set(models_dirs) | {p for p in artifact.parents if p.name == "models"}
    if str(destination).endswith(("/", os.sep)) or out.is_dir():
        why = "is a directory; give a Parquet file path"
    elif out == Path(source).expanduser().resolve():
        why = "is the input file; embedding would overwrite what it reads"
    elif out == artifact:
        why = "is the artifact file"
    elif any(out.is_relative_to(store.resolve()) for store in stores):
        why = "lies under a model store (models/), which only the pipeline writes"
    else:
        return out
    raise OutputPathError(f"output {destination}: refused: it {why}")


@dataclass(frozen=True)
class EmbedJob:
    """One embedding, checked before any engine runs: the artifact, the input, the output and its schema.

    Built by :func:`prepare_job`, the one place where every engine's input is validated (the
    contract's own schema checks, plus the artifact's dimension) and its output schema is decided
    (:func:`umap_assets.embed.output_schema`).
    """

    artifact: Path  # the artifact file (the Spark engine broadcasts its bytes)
    projector: Projector
    source: Path
    destination: Path
    spec: SliceSpec
    schema: pa.Schema  # of the output file: id, x, y | x0..xk, [coverage], [label], [carried...], artifact_version


class Engine(Protocol):
    """Embeds a prepared job: writes ``job.destination`` atomically with ``job.schema``."""

    name: str

    def run(self, job: EmbedJob) -> EmbedStats: ...


def prepare_job(artifact: str | Path, source: str | Path, destination: str | Path, spec: SliceSpec = SliceSpec(),
                models_dirs: tuple[Path, ...] = ()) -> EmbedJob:
    """Check the output path, the artifact and the input's schema; the output schema follows from them.

    Raises
    ------
    OutputPathError, ArtifactError, SliceError
        With one line that names the file and the problem.
    """
    destination = check_output_path(destination, source, artifact, models_dirs)
    projector = Projector.load(artifact)
    source = Path(source)
    schema = open_parquet(source).schema_arrow
    check_schema(source, schema, spec)
    dim = len(spec.feature_columns) if spec.feature_columns else features_dim(schema.field(spec.features_column))
    if dim is not None and dim != projector.input_dim:
        raise SliceError(source, f"features have dimension {dim}, but the artifact expects dimension {projector.input_dim}")

    def canonical(name: str) -> pa.DataType | None:  # ids and labels are stored as int64 or string
        if name not in schema.names:
            return None
        return pa.int64() if pa.types.is_integer(schema.field(name).type) else pa.string()

    out = output_schema(projector.output_names, canonical(spec.id_column), canonical(spec.label_column),
                        carried_fields(schema, spec))
    return EmbedJob(Path(artifact), projector, source, destination, spec, out)


@dataclass(frozen=True)
class LocalEngine:
    """Streams the slice through the artifact in this process, ``chunk_rows`` at a time (flat memory)."""

    name: ClassVar[str] = "local"
    chunk_rows: int = CHUNK_ROWS

    def run(self, job: EmbedJob) -> EmbedStats:
        return embed_file(job.projector, job.source, job.destination, spec=job.spec, chunk_rows=self.chunk_rows)


#: What Spark's executors import, shipped with ``addPyFile`` under these names: the runtime (the
#: ``Projector``) and the contract's feature decoder. Each imports numpy and pyarrow, nothing of this package.
SHIPPED_MODULES = {"runtime": RUNTIME_MODULE, "features": FEATURES_MODULE}


def shipped_module(module: str) -> Path:
    """This package's ``module`` (one of :data:`SHIPPED_MODULES`) as a file of its shipped name, at a
    path named by its content.

    Spark registers a file name once per context, so every job of one session must ship the same
    path; a changed module gets a new folder.
    """
    import hashlib

    source = Path(__file__).with_name(f"{module}.py").read_bytes()
    folder = Path(tempfile.gettempdir()) / f"umap-assets-{module}-{hashlib.sha256(source).hexdigest()[:16]}"
    path = folder / f"{SHIPPED_MODULES[module]}.py"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, source)
    return path


@dataclass(frozen=True)
class SparkEngine:
    """Runs the artifact on Spark: its bytes broadcast once, partitions transformed with ``mapInArrow``.

    Executors need numpy and pyarrow, not torch and not this package: the runtime and the contract's
    feature decoder are shipped to them with ``addPyFile``. ``spark`` reuses a running session instead of building one from
    ``master`` and ``conf``.
    """

    name: ClassVar[str] = "spark"
    master: str = SPARK_MASTER
    conf: dict[str, str] = field(default_factory=dict)
    spark: Any = None

    def run(self, job: EmbedJob) -> EmbedStats:
        started = time.perf_counter()
        spark = self.spark or spark_session(self.master, self.conf)
        for module in SHIPPED_MODULES:
            spark.sparkContext.addPyFile(str(shipped_module(module)))
        scratch = Path(tempfile.mkdtemp(prefix="umap-assets-spark-out-", dir=job.destination.parent
                                        if job.destination.parent.exists() else None))
        try:
            mapped = _spark_frame(spark, job)
            mapped.write.mode("overwrite").parquet(str(scratch / "out"))
            rows = _merge_parts(sorted((scratch / "out").glob("part-*.parquet")), job.destination)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return EmbedStats(rows, time.perf_counter() - started, peak_rss_bytes(), job.projector.version,
                          str(job.destination))


#: The engines by name, as the CLI's ``--engine`` and :func:`engine_from_settings` take them.
ENGINES: dict[str, type] = {LocalEngine.name: LocalEngine, SparkEngine.name: SparkEngine}


def engine_settings(engine: LocalEngine | SparkEngine) -> dict:
    """``engine`` as JSON, for the process that runs it: its name and its fields (a live session stays here)."""
    return {"engine": engine.name, **{f.name: getattr(engine, f.name) for f in fields(engine) if f.name != "spark"}}


def engine_from_settings(settings: dict) -> Engine:
    """The engine that :func:`engine_settings` wrote; ``ValueError`` names the engines for another name."""
    name = settings.get("engine")
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {tuple(ENGINES)}, got {name!r}")
    return ENGINES[name](**{key: value for key, value in settings.items() if key != "engine"})


def embed(engine: Engine, artifact: str | Path, source: str | Path, destination: str | Path,
          spec: SliceSpec = SliceSpec(), *, models_dirs: tuple[Path, ...] = (), ordered: bool = False) -> EmbedStats:
    """Embed every row of ``source`` into ``destination`` with ``engine``: the one way to run an engine.

    Every engine gets the same checked job (:func:`prepare_job`) and writes the same schema atomically.
    With ``ordered`` (the warehouse's embeddings), whatever engine ran, the file is finalised in one
    place: its rows sorted along the curve of the version's frame, with its id index
    (:func:`umap_assets.spatial.write_ordered`; the frame lives in ``destination``'s folder).
    """
    job = prepare_job(artifact, source, destination, spec, models_dirs)
    if not ordered:
        return engine.run(job)
    from dataclasses import replace

    from .atomic import temp_path_for
    from .spatial import version_frame, write_ordered

    staged = temp_path_for(job.destination)
    try:
        stats = engine.run(replace(job, destination=staged))
        frame = version_frame(job.destination.parent, job.projector, staged)
        order = write_ordered(staged, job.destination, frame)
    finally:
        staged.unlink(missing_ok=True)
    return replace(stats, output=str(job.destination), seconds=stats.seconds + order.seconds)


def spark_session(master: str, conf: dict[str, str] | None = None, app_name: str = "umap-assets"):
    """A SparkSession for ``master`` (``local[N]``, ``spark://host:port``, ``yarn``, ``k8s://...``) with ``conf`` on top.

    A quiet UI, Arrow transfers, and loopback networking when the master is on this machine. The
    executors' Python is the driver's own interpreter unless ``conf`` names one (see below).
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName(app_name)
    defaults = {
        "spark.ui.enabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.shuffle.partitions": "4",
    }
    if master.startswith("local") or any(h in master for h in ("//127.0.0.1:", "//localhost:")):
        defaults["spark.driver.host"] = "127.0.0.1"  # executors on this machine reach the driver on loopback
    settings = {**defaults, **(conf or {})}
    # The job brings its executors' interpreter: PySpark sends the driver's PYSPARK_PYTHON with every
    # task. By default it is this interpreter, which holds numpy, pandas and pyarrow; that serves
    # local mode and any cluster whose workers share this machine's file system. For other clusters
    # ship a packed environment: spark.archives=env.tar.gz#env, spark.pyspark.python=./env/bin/python.
    python = settings.get("spark.pyspark.python") or os.environ.get("PYSPARK_PYTHON") or sys.executable
    settings["spark.pyspark.python"] = os.environ["PYSPARK_PYTHON"] = python
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _spark_frame(spark, job: EmbedJob):
    """The job's input as a Spark DataFrame mapped through the broadcast artifact, in ``job.schema``.

    Each partition's Arrow batches are decoded by the contract's own decoder
    (:func:`umap_assets.features.features_matrix`, or ``columns_matrix`` for feature columns), shipped
    to the executors with the runtime.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    broadcast = spark.sparkContext.broadcast(job.artifact.read_bytes())
    version, spec, schema = job.projector.version, job.spec, job.schema
    names = job.projector.output_names
    has_label = "label" in schema.names
    feature_cols = list(spec.feature_columns or [spec.features_column])
    carry, longest = list(spec.carry), MAX_CARRY_CHARS
    cols = [spec.id_column, *feature_cols] + ([spec.label_column] if has_label else []) + carry

    def transform_partition(batches):
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
        import umap_assets_features as features
        import umap_assets_runtime as rt

        cache = rt.__dict__.setdefault("_projectors", {})
        proj = cache.get(version)
        if proj is None:
            proj = cache[version] = rt.Projector.from_bytes(broadcast.value, source="broadcast artifact")
        for batch in batches:
            if batch.num_rows == 0:
                continue
            X = (features.columns_matrix([batch.column(c) for c in feature_cols]) if spec.feature_columns
                 else features.features_matrix(batch.column(feature_cols[0])))
            if not np.isfinite(X).all():
                raise ValueError("features hold NaN or inf")
            E = proj.outputs(X)
            arrays = [batch.column(spec.id_column).cast(schema.field("id").type)]
            arrays += [pa.array(E[:, i], pa.float32()) for i in range(len(names))]
            if has_label:
                arrays.append(batch.column(spec.label_column).cast(schema.field("label").type))
            for name in carry:  # the contract's carried columns, checked as the local engine checks them
                column = batch.column(name).cast(schema.field(name).type)
                if pa.types.is_string(column.type) and (pc.max(pc.utf8_length(column)).as_py() or 0) > longest:
                    raise ValueError(f"carried column '{name}' holds a text over {longest} characters")
                arrays.append(column)
            arrays.append(pa.array([version] * batch.num_rows, pa.string()))
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    frame = spark.read.parquet(str(job.source)).select(*cols)
    return frame.mapInArrow(transform_partition, schema=from_arrow_schema(schema))


def _merge_parts(parts: list[Path], destination: Path) -> int:
    """Stream Spark's part files into one Parquet file (atomically), row group by row group."""
    rows = 0
    writer = None
    with atomic_path(destination) as tmp:
        try:
            for part in parts:
                pf = parquet_reader(part)
                for i in range(pf.num_row_groups):
                    table = pf.read_row_group(i)
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema, **write_options(table.schema))
                    writer.write_table(table)
                    rows += table.num_rows
            if writer is None:
                raise ValueError(f"Spark wrote no output for {destination.name}")
        finally:
            if writer is not None:
                writer.close()
    return rows


__all__ = ["ENGINES", "EmbedJob", "Engine", "LocalEngine", "SparkEngine", "prepare_job", "embed", "engine_settings",
           "engine_from_settings", "spark_session", "check_output_path", "ArtifactError", "OutputPathError"]
