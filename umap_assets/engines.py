"""Embedding engines: ``local`` (streaming, in this process) and ``spark`` (pyspark ``mapInPandas``).

Both run the same numpy runtime and write the same single Parquet file per input. The Spark engine
broadcasts the artifact's bytes once; each Python worker loads the :class:`Projector` once from the
broadcast value and transforms Arrow batches. Executors need numpy and pandas, not torch and not
this package: the runtime module is shipped to them with ``addPyFile``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from .atomic import atomic_path
from .contract import SliceError, SliceSpec, open_parquet
from .embed import EmbedStats, coordinate_names, embed_file, peak_rss_bytes
from .runtime import ArtifactError, Projector

ENGINES = ("local", "spark")
RUNTIME_MODULE = "umap_assets_runtime"


def embed_local(artifact: str | Path, source: str | Path, destination: str | Path,
                spec: SliceSpec = SliceSpec(), chunk_rows: int = 65_536) -> EmbedStats:
    return embed_file(Projector.load(artifact), source, destination, spec=spec, chunk_rows=chunk_rows)


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


def embed(engine: str, artifact: str | Path, source: str | Path, destination: str | Path,
          spec: SliceSpec = SliceSpec(), *, chunk_rows: int = 65_536, master: str = "local[2]",
          conf: dict[str, str] | None = None, models_dirs: tuple[Path, ...] = ()) -> EmbedStats:
    """Embed every row of ``source`` into ``destination`` with the named engine (one of :data:`ENGINES`).

    ``destination`` is checked first (:func:`check_output_path`).
    """
    check_output_path(destination, source, artifact, models_dirs)
    if engine == "local":
        return embed_local(artifact, source, destination, spec=spec, chunk_rows=chunk_rows)
    if engine == "spark":
        return embed_spark(artifact, source, destination, spec=spec, master=master, conf=conf)
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")


def spark_session(master: str = "local[2]", conf: dict[str, str] | None = None, app_name: str = "umap-assets"):
    """A SparkSession with a quiet UI and loopback networking unless ``conf`` says otherwise."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName(app_name)
    defaults = {
        "spark.ui.enabled": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.shuffle.partitions": "4",
    }
    if master.startswith("local"):
        # local workers run this interpreter, so they see the same numpy and pandas
        defaults["spark.pyspark.python"] = sys.executable
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in {**defaults, **(conf or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _check_input(projector: Projector, source: Path, spec: SliceSpec) -> bool:
    """Refuse an input the artifact cannot read; returns whether it has a label column."""
    pf = open_parquet(source)
    names = pf.schema_arrow.names
    if spec.id_column not in names:
        raise SliceError(source, f"missing id column '{spec.id_column}' (found columns: {sorted(names)})")
    if spec.features_column not in names:
        raise SliceError(source, f"missing features: expected a list column '{spec.features_column}'")
    t = pf.schema_arrow.field(spec.features_column).type
    size = getattr(t, "list_size", None)
    if size is not None and size != projector.input_dim:
        raise SliceError(source, f"features have dimension {size}, but the artifact expects dimension {projector.input_dim}")
    return spec.label_column in names


def embed_spark(
    artifact: str | Path,
    source: str | Path,
    destination: str | Path,
    *,
    spec: SliceSpec = SliceSpec(),
    master: str = "local[2]",
    conf: dict[str, str] | None = None,
    spark=None,
) -> EmbedStats:
    """Embed ``source`` on Spark; the result is written as one Parquet file like the local engine's."""
    import numpy as np
    import pandas as pd

    source, destination = Path(source), Path(destination)
    started = time.perf_counter()
    blob = Path(artifact).read_bytes()
    projector = Projector.from_bytes(blob, source=str(artifact))  # refuse a bad artifact on the driver
    has_label = _check_input(projector, source, spec)
    spark = spark or spark_session(master, conf)
    sc = spark.sparkContext
    shipped = Path(tempfile.mkdtemp(prefix="umap-assets-spark-")) / f"{RUNTIME_MODULE}.py"
    shutil.copy(Path(__file__).with_name("runtime.py"), shipped)
    sc.addPyFile(str(shipped))
    broadcast = sc.broadcast(blob)
    version = projector.version
    names = coordinate_names(projector.n_components)
    df = spark.read.parquet(str(source))
    id_type = dict(df.dtypes)[spec.id_column]
    cols = [spec.id_column, spec.features_column] + ([spec.label_column] if has_label else [])
    label_type = dict(df.dtypes)[spec.label_column] if has_label else None
    schema = ", ".join(
        [f"id {id_type}"] + [f"{n} float" for n in names]
        + ([f"label {label_type}"] if has_label else []) + ["artifact_version string"]
    )
    id_col, feat_col, label_col = spec.id_column, spec.features_column, spec.label_column

    def transform_partition(batches):
        import umap_assets_runtime as rt

        cache = rt.__dict__.setdefault("_projectors", {})
        proj = cache.get(version)
        if proj is None:
            proj = cache[version] = rt.Projector.from_bytes(broadcast.value, source="broadcast artifact")
        for pdf in batches:
            if len(pdf) == 0:
                continue
            X = np.stack(pdf[feat_col].to_numpy()).astype(np.float32, copy=False)
            if not np.isfinite(X).all():
                raise ValueError("features hold NaN or inf")
            E = proj.transform(X)
            out = {"id": pdf[id_col].to_numpy()}
            for i, n in enumerate(names):
                out[n] = E[:, i]
            if has_label:
                out["label"] = pdf[label_col].to_numpy()
            out["artifact_version"] = version
            yield pd.DataFrame(out)

    result = df.select(*cols).mapInPandas(transform_partition, schema=schema)
    scratch = Path(tempfile.mkdtemp(prefix="umap-assets-spark-out-", dir=destination.parent if destination.parent.exists() else None))
    try:
        result.write.mode("overwrite").parquet(str(scratch / "out"))
        rows = _merge_parts(sorted((scratch / "out").glob("part-*.parquet")), destination)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(shipped.parent, ignore_errors=True)
    return EmbedStats(rows, time.perf_counter() - started, peak_rss_bytes(), version, str(destination))


def _merge_parts(parts: list[Path], destination: Path) -> int:
    """Stream Spark's part files into one Parquet file (atomically), row group by row group."""
    rows = 0
    writer = None
    with atomic_path(destination) as tmp:
        try:
            for part in parts:
                pf = pq.ParquetFile(part)
                for i in range(pf.num_row_groups):
                    table = pf.read_row_group(i)
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                    writer.write_table(table)
                    rows += table.num_rows
            if writer is None:
                raise ValueError(f"Spark wrote no output for {destination.name}")
        finally:
            if writer is not None:
                writer.close()
    return rows


__all__ = ["ENGINES", "embed", "embed_local", "embed_spark", "spark_session", "check_output_path", "ArtifactError",
           "OutputPathError"]
