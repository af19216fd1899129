"""The Spark engine as a process of its own, launched by the ``embeddings`` asset with Dagster Pipes.

``python -m umap_assets.spark_job`` reads its job from the Pipes extras (``artifact``, ``source``,
``destination``, ``master``, ``conf``), runs :class:`umap_assets.engines.SparkEngine`, and reports
its logs and the materialization's metadata (rows, rows/s, artifact version) back to the run that
launched it (:class:`umap_assets.defs.resources.SparkEmbedding`).
"""

from __future__ import annotations

from dagster_pipes import open_dagster_pipes

from .engines import SparkEngine, embed


def main() -> None:
    with open_dagster_pipes() as pipes:
        job = pipes.extras
        pipes.log.info(f"spark: embedding {job['source']} on {job['master']}")
        stats = embed(SparkEngine(job["master"], dict(job.get("conf") or {})), job["artifact"], job["source"],
                      job["destination"])
        pipes.log.info(f"spark: {stats.rows:,} rows in {stats.seconds:.1f}s ({stats.rows_per_s:,.0f} rows/s) "
                       f"with artifact {stats.artifact_version}")
        pipes.report_asset_materialization(metadata=stats.metadata(SparkEngine.name))


if __name__ == "__main__":
    main()
