"""One slice's embeddings in a process of its own, launched by the ``embeddings`` asset with Dagster Pipes.

``python -m umap_assets.embed_job`` reads its job from the Pipes extras (``artifact``, ``source``,
``destination``, and ``engine``: the engine's dataclass as :func:`umap_assets.engines.engine_settings`
wrote it; ``ordered``: sort the file along the map's curve, :mod:`umap_assets.spatial`), runs it with
:func:`umap_assets.engines.embed`, and reports its logs and the
materialization's metadata (rows, rows/s, peak memory, artifact version) back to the run that
launched it (:class:`umap_assets.defs.resources.EmbeddingEngine`).

The process imports numpy, pyarrow and the runtime, not Dagster, torch or umap-learn, so the
embedding's memory is its own: flat, whatever the slice's size (bench/RESULTS.md).
"""

from __future__ import annotations

from dagster_pipes import open_dagster_pipes

from .contract import canonical_spec
from .engines import embed, engine_from_settings


def main() -> None:
    with open_dagster_pipes() as pipes:
        job = pipes.extras
        engine = engine_from_settings(job["engine"])
        where = f" on {engine.master}" if hasattr(engine, "master") else ""
        pipes.log.info(f"{engine.name}: embedding {job['source']}{where}")
        spec = canonical_spec(job["source"])  # a warehouse slice: the default columns, and what it carries
        stats = embed(engine, job["artifact"], job["source"], job["destination"], spec, ordered=bool(job.get("ordered")))
        pipes.log.info(f"{engine.name}: {stats.rows:,} rows in {stats.seconds:.1f}s ({stats.rows_per_s:,.0f} rows/s, "
                       f"peak {stats.peak_rss_bytes / 2**20:,.0f} MB) with artifact {stats.artifact_version}")
        pipes.report_asset_materialization(metadata=stats.metadata(engine.name))


if __name__ == "__main__":
    main()
