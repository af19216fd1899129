"""Resources: where the data lives and how a slice is read."""

import collections.abc
import dataclasses
import types
import typing

import dagster as dg
import pydantic
from pydantic import Field

from ..contract import MAX_CARRY, SliceSpec
from ..engines import Engine, LocalEngine, SparkEngine, engine_settings
from ..home import Layout
from ..home_contract import HomeContract
from ..model_store import ModelStore
from ..sources import Source
from ..warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The map's home directory, the embedded warehouse under it, and where its slice files come from.

    ``home`` defaults to ``$UMAP_ASSETS_HOME``, else ``./data``. ``source`` is a folder or any URL
    that fsspec opens (``s3://bucket/vectors``), with ``source_options`` for its filesystem
    (``endpoint_url``, credentials); it defaults to ``<home>/incoming`` (:mod:`umap_assets.sources`).
    """

    home: str | None = None
    source: str | None = None
    source_options: dict[str, str] = {}

    def layout(self) -> Layout:
        return Layout.at(self.home).ensure()

    def slice_source(self, layout: Layout | None = None) -> Source:
        """The folder the map's slices come from (``<home>/incoming`` of ``layout`` unless ``source`` is set)."""
        folder = self.source or str((layout or self.layout()).incoming)
        return Source(folder, dict(self.source_options))

    def warehouse(self) -> Warehouse:
        return Warehouse.of(self.layout())

    def store(self) -> ModelStore:
        """Where the training chain keeps its records and artifacts."""
        return ModelStore(self.layout())


def config_fields(declaration, ranges: dict[str, dict], *, leave_out: tuple[str, ...] = ()) -> dict:
    """Pydantic field specs for a dataclass's fields but ``leave_out``, for a Dagster config or resource
    made from it with ``pydantic.create_model``: one declaration of each field and its default, with
    its range from ``ranges`` (``Field`` constraints). Dagster config has no tuples or sequences:
    they become lists."""
    hints = typing.get_type_hints(declaration)
    fields = {}
    for f in dataclasses.fields(declaration):
        if f.name not in leave_out:
            default = list(f.default) if isinstance(f.default, tuple) else f.default
            fields[f.name] = (_as_config_type(hints[f.name]), Field(default, **ranges[f.name]))
    return fields


def _as_config_type(annotation):
    origin = typing.get_origin(annotation)
    if origin in (tuple, collections.abc.Sequence):
        return list[typing.get_args(annotation)[0]]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_as_config_type(a) for a in typing.get_args(annotation))]
    return annotation


class _SliceContract(dg.ConfigurableResource):
    """Which columns of an incoming Parquet file hold the id, the features and the label (the fields
    of :class:`~umap_assets.contract.SliceSpec`, with its defaults), and the home's contract
    (:mod:`umap_assets.home_contract`).

    Set ``feature_columns`` to read the features from numeric columns instead of one list column.
    Set ``carry`` to name up to 8 string or number columns (a title, a URL) that travel with each row
    into the embeddings, and show on the map's hover, find, selection and export.
    Set ``dim`` (and ``id_type``, ``int64`` or ``string``) to declare the contract; otherwise the
    first slice ingested records it in ``<home>/contract.json``.
    """

    dim: int | None = Field(None, ge=1)
    id_type: str = Field("int64", pattern="^(int64|string)$")

    def declared(self) -> HomeContract | None:
        if self.dim is None:
            return None
        if self.id_type not in ("int64", "string"):
            raise ValueError(f"SliceContract.id_type must be 'int64' or 'string', got {self.id_type!r}")
        features = ",".join(self.feature_columns) if self.feature_columns else self.features_column
        return HomeContract(features, self.dim, self.id_type, "config")

    @pydantic.model_validator(mode="after")
    def _carry_fits(self):
        """A ``carry`` that names too many columns, or one the contract or the map uses, is refused in config."""
        self.spec()  # SliceSpec checks it: one ValueError naming SliceContract.carry
        return self

    def spec(self) -> SliceSpec:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(SliceSpec)}
        return SliceSpec(**{**values, "carry": tuple(values["carry"]),
                            "feature_columns": tuple(values["feature_columns"]) if values["feature_columns"] else None})


#: The resource's column fields are :class:`SliceSpec`'s own (one declaration for the resource, the CLI
#: and the library), besides ``dim`` and ``id_type``.
SliceContract = pydantic.create_model("SliceContract", __base__=_SliceContract, __module__=__name__,
                                      __doc__=_SliceContract.__doc__,
                                      **config_fields(SliceSpec, {**{f.name: {"min_length": 1} for f in dataclasses.fields(SliceSpec)},
                                                                   "carry": {"max_length": MAX_CARRY}}))


class Seed(dg.ConfigurableResource):
    """The project's one seed. Every step that draws at random uses it: ``samples`` (a seed per slice
    derived from it and the partition key), ``coreset``, ``teacher``, ``student``, ``artifact``,
    ``quality_report`` and ``drift``; so the same data and the same seed give the same artifact.

    Set it once, for every step: ``resources: {seed: {config: {value: 7}}}``.
    """

    value: int = Field(0, ge=0, le=2**32 - 1)  # umap-learn's random_state takes a 32-bit seed


class QualityGates(dg.ConfigurableResource):
    """Thresholds of the blocking gates on ``quality_report`` that decide whether ``model`` promotes the artifact."""

    # defaults from bench/RESULTS.md (session 5): on Fashion-MNIST, digits and a synthetic set the artifact
    # is 0.0012-0.0023 below its teacher at trust@15 (the product's promise is 0.005) and 0.012 below to
    # 0.006 above it in 10-NN accuracy
    trust_tolerance: float = Field(0.005, ge=0)  # artifact trustworthiness@k >= teacher's - tolerance
    knn_accuracy_tolerance: float = Field(0.02, ge=0)  # artifact 10-NN accuracy >= teacher's - tolerance (labelled data)
    min_student_overlap: float = Field(0.95, ge=0, le=1)  # artifact kNN overlap with the float student
    # stable_vs_previous (warns, never blocks): the candidate's median displacement from the served
    # model's map of the same validation rows, as a fraction of that map's spread
    stability_tolerance: float = Field(0.02, ge=0)
    k: int = Field(15, ge=1)
    max_rows: int = Field(10_000, ge=1)  # validation rows the report and the gates measure on (a subsample drawn with Seed)
    # kNN accuracy (and its gate) is measured on the labelled rows alone, when there are at least this
    # many labelled validation rows and as many labelled training rows; otherwise the gate says why not
    min_labelled_rows: int = Field(50, ge=1)


class SingleWriterMessageReader(dg.PipesTempFileMessageReader):
    """Dagster's temp-file reader, for the one process that writes into it.

    Dagster 1.13's Pipes session reads ``expected_writer_count`` from every reader, and the base
    property is marked preview, so each launch warned (``PreviewWarning``) about a call our code
    never made. A single writer is the base class's documented default; this states it plainly.
    """

    @property
    def expected_writer_count(self) -> int:
        return 1


class EmbeddingEngine(dg.ConfigurableResource):
    """Where ``embeddings`` runs: bind :class:`LocalEmbedding` (the default) or :class:`SparkEmbedding`.

    Either way the slice is embedded in a process of its own (``python -m umap_assets.embed_job``)
    launched with Dagster Pipes: its logs and its metadata (rows, rows/s, peak memory, artifact
    version) reach the run, and its memory is the embedding's alone, not the code location's.
    """

    def engine(self) -> Engine:
        """The engine this resource declares (:mod:`umap_assets.engines`), with its settings."""
        raise NotImplementedError(f"{type(self).__name__} names no engine; bind LocalEmbedding or SparkEmbedding")

    def embed(self, context: dg.AssetExecutionContext, artifact: str, source: str, destination: str,
              ordered: bool = False) -> dict:
        """Embed ``source`` into ``destination``; returns the materialization's metadata. ``ordered``:
        in the map's spatial order, with an id index (:mod:`umap_assets.spatial`)."""
        import sys

        extras = {"artifact": artifact, "source": source, "destination": destination,
                  "engine": engine_settings(self.engine()), "ordered": ordered}
        # The op's context: given the asset's, Dagster 1.13's Pipes reads its deprecated ``run_id``.
        done = dg.PipesSubprocessClient(message_reader=SingleWriterMessageReader()).run(
            context=context.op_execution_context, extras=extras, command=[sys.executable, "-m", "umap_assets.embed_job"])
        return dict(done.get_materialize_result().metadata)


class LocalEmbedding(EmbeddingEngine):
    """Streams each slice through the artifact, ``chunk_rows`` at a time, on this machine."""

    chunk_rows: int = Field(LocalEngine.chunk_rows, ge=1)

    def engine(self) -> LocalEngine:
        return LocalEngine(self.chunk_rows)


class SparkEmbedding(EmbeddingEngine):
    """Runs each slice on Spark; the launched process is the Spark driver.

    ``master`` is any Spark master URL (``local[N]``, ``spark://host:7077``, ``yarn``,
    ``k8s://https://host:443``); ``conf`` holds Spark settings. Executors need numpy, pandas and
    pyarrow, not torch and not this package (see :mod:`umap_assets.engines`).
    """

    master: str = Field(SparkEngine.master, min_length=1)
    conf: dict[str, str] = {}

    def engine(self) -> SparkEngine:
        return SparkEngine(self.master, dict(self.conf))


def embedding_engine_from_env() -> EmbeddingEngine:
    """:class:`SparkEmbedding` on ``$UMAP_ASSETS_SPARK_MASTER`` when it is set, else :class:`LocalEmbedding`."""
    import os

    master = os.environ.get("UMAP_ASSETS_SPARK_MASTER")
    return SparkEmbedding(master=master) if master else LocalEmbedding()


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={"warehouse": WarehouseResource(), "contract": SliceContract(), "seed": Seed(),
                   "quality_gates": QualityGates(), "embedding_engine": embedding_engine_from_env()}
    )
