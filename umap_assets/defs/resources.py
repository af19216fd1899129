"""Resources: where the data lives and how a slice is read."""


import dagster as dg

from ..contract import CHUNK_ROWS, SliceSpec
from ..home import Layout
from ..home_contract import HomeContract
from ..warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The project's home directory and the embedded warehouse under it.

    ``home`` defaults to ``$UMAP_ASSETS_HOME``, else ``./data``.
    """

    home: str | None = None

    def layout(self) -> Layout:
        return Layout.at(self.home).ensure()

    def warehouse(self) -> Warehouse:
        layout = self.layout()
        return Warehouse(root=layout.warehouse, duckdb_path=layout.duckdb_path)


class SliceContract(dg.ConfigurableResource):
    """Which columns of an incoming Parquet file hold the id, the features and the label, and the
    home's contract (:mod:`umap_assets.home_contract`).

    Set ``feature_columns`` to read the features from numeric columns instead of one list column.
    Set ``dim`` (and ``id_type``, ``int64`` or ``string``) to declare the contract; otherwise the
    first slice ingested records it in ``<home>/contract.json``.
    """

    # the column defaults are SliceSpec's: one declaration for the resource, the CLI and the library
    id_column: str = SliceSpec.id_column
    features_column: str = SliceSpec.features_column
    feature_columns: list[str] | None = None
    label_column: str = SliceSpec.label_column
    dim: int | None = None
    id_type: str = "int64"

    def declared(self) -> HomeContract | None:
        if self.dim is None:
            return None
        if self.id_type not in ("int64", "string"):
            raise ValueError(f"SliceContract.id_type must be 'int64' or 'string', got {self.id_type!r}")
        features = ",".join(self.feature_columns) if self.feature_columns else self.features_column
        return HomeContract(features, self.dim, self.id_type, "config")

    def spec(self) -> SliceSpec:
        return SliceSpec(
            id_column=self.id_column,
            features_column=self.features_column,
            feature_columns=tuple(self.feature_columns) if self.feature_columns else None,
            label_column=self.label_column,
        )


class QualityGates(dg.ConfigurableResource):
    """Thresholds of the blocking gates on ``quality_report`` that decide whether ``model`` promotes the artifact."""

    # defaults from bench/RESULTS.md (session 5): on Fashion-MNIST, digits and a synthetic set the artifact
    # is 0.0012-0.0023 below its teacher at trust@15 (the product's promise is 0.005) and 0.012 below to
    # 0.006 above it in 10-NN accuracy
    trust_tolerance: float = 0.005  # artifact trustworthiness@k >= teacher's - tolerance
    knn_accuracy_tolerance: float = 0.02  # artifact 10-NN accuracy >= teacher's - tolerance (labelled data)
    min_student_overlap: float = 0.95  # artifact kNN overlap with the float student
    k: int = 15
    max_rows: int = 10_000  # validation rows the report and the gates measure on (seeded subsample)
    seed: int = 0


class EmbeddingEngine(dg.ConfigurableResource):
    """Where ``embeddings`` runs: ``local`` (streaming in the run's process) or ``spark``.

    For a cluster, set ``spark_master`` (for example ``spark://host:7077``, ``yarn`` or
    ``k8s://https://host:443``) and any Spark settings in ``spark_conf``; install the extra with
    ``pip install "umap-assets[spark]"`` on the driver. Executors need numpy and pandas only.
    """

    engine: str = "local"
    chunk_rows: int = CHUNK_ROWS
    spark_master: str = "local[2]"
    spark_conf: dict[str, str] = {}

    def build(self):
        """The :class:`umap_assets.engines.Engine` this resource names, with its settings."""
        from ..engines import engine_named

        return engine_named(self.engine, chunk_rows=self.chunk_rows, master=self.spark_master, conf=self.spark_conf)

    def embed(self, artifact: str, source: str, destination: str, spec: SliceSpec = SliceSpec()):
        from ..engines import embed

        return embed(self.build(), artifact, source, destination, spec)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={"warehouse": WarehouseResource(), "contract": SliceContract(), "quality_gates": QualityGates(),
                   "embedding_engine": EmbeddingEngine()}
    )
