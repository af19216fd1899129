"""``UmapMap``: one map as a Dagster Component (``type: umap_assets.UmapMap`` in a ``defs.yaml``).

Its attributes name the map, its home, its source, the slice's columns, the seed, the quality gates,
the embedding engine and which sensors and schedules run. ``build_defs`` calls each wiring module of
:mod:`umap_assets.defs` with the map's :class:`umap_assets.map_names.MapNames` (``definitions(names)``, a
factory) and returns its assets, checks, jobs, sensors and schedules with the resources these attributes
configure, under the map's resource keys. Several maps load side by side in one code location; the map
named ``default`` keeps today's names, any other prefixes them.
"""

import copy
import importlib
import pkgutil
import textwrap
from typing import Literal

import dagster as dg
from pydantic import Field

from .atomic import atomic_write_bytes
from .map_names import DEFAULT_MAP, MapNames

#: Today's sensors that start running, and schedules that start stopped (the defaults of the attributes).
SENSORS_ON = ("new_slices_sensor", "training_sensor", "automation_sensor")
SCHEDULES_ON: tuple[str, ...] = ()


class EngineModel(dg.Resolvable, dg.Model):
    """Where ``embeddings`` runs: ``local`` (``chunk_rows`` at a time) or ``spark`` (``master``, ``conf``)."""

    kind: Literal["local", "spark"] = "local"
    chunk_rows: int | None = Field(None, ge=1)
    master: str | None = None
    conf: dict[str, str] = {}


class ColumnsModel(dg.Resolvable, dg.Model):
    """Which columns of a slice hold the id, the features (one list column, or ``feature_columns``) and the label,
    and which string or number columns travel with each row into the map (``carry``, :class:`SliceContract`)."""

    id_column: str = "id"
    features_column: str = "features"
    feature_columns: list[str] | None = None
    label_column: str = "label"
    dim: int | None = Field(None, ge=1)
    id_type: Literal["int64", "string"] = "int64"
    carry: list[str] = []


class SourceModel(dg.Resolvable, dg.Model):
    """Where the map's slice files come from (:mod:`umap_assets.sources`): ``path``, a folder or any URL that
    fsspec opens (``s3://bucket/vectors``; default ``<home>/incoming``), the ``storage_options`` of its
    filesystem (``endpoint_url``, credentials: ``{{ env.NAME }}``), and ``asset``, the key (``a/b``) of an
    asset of your project that writes its Parquet files there: ``raw_slices`` then depends on it."""

    path: str | None = None
    storage_options: dict[str, str] = {}
    asset: str | None = None


class UmapMapScaffolder(dg.Scaffolder):
    """Writes a ``defs.yaml`` naming the map after its folder, with today's defaults to fill in."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        request.target_path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(request.target_path / "defs.yaml", scaffold_yaml(request.type_name,
                                                                            request.target_path.name).encode())


def scaffold_yaml(type_name: str, folder: str) -> str:
    name = folder.lower().replace("-", "_")
    return textwrap.dedent(f"""\
        type: {type_name}
        attributes:
          name: {name}                 # prefixes the map's asset keys, jobs, sensors, schedules, pools and tags
          home: data/{name}            # the map's home: its incoming/ folder, warehouse and models
          source:
            path: null                 # default <home>/incoming; or a folder or URL: s3://bucket/{name}/
            storage_options: {{}}        # the filesystem's options: endpoint_url, key, secret
            asset: null                # the key of your asset that writes the Parquet files there
          columns:
            id_column: id
            features_column: features  # or feature_columns: [f0, f1, ...]
            label_column: label
            carry: []                  # text or number columns shown with each row: [title, url]
          seed: 0
          engine:
            kind: local                # or: spark, with master: local[2] and conf: {{}}
          sensors_on: [new_slices_sensor, training_sensor, automation_sensor]
          schedules_on: []             # weekly_retrain
        """)


@dg.scaffold_with(UmapMapScaffolder)
class UmapMap(dg.Component, dg.Resolvable, dg.Model):
    """One UMAP map of a growing table of vectors: ingest -> train -> gate -> promote -> embed -> tiles."""

    name: str = DEFAULT_MAP
    home: str | None = None  # None: $UMAP_ASSETS_HOME, else ./data
    source: SourceModel = SourceModel()
    columns: ColumnsModel = ColumnsModel()
    seed: int = Field(0, ge=0, le=2**32 - 1)
    quality_gates: dict[str, float] = {}
    engine: EngineModel | None = None  # None: $UMAP_ASSETS_SPARK_MASTER's Spark, else local
    sensors_on: list[str] = list(SENSORS_ON)
    schedules_on: list[str] = list(SCHEDULES_ON)

    def names(self) -> MapNames:
        return MapNames(self.name)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        names = self.names()
        self._checked_source()
        wiring = map_definitions(names)
        return dg.Definitions(
            assets=[self._with_source_asset(names, a) for a in wiring.assets], asset_checks=wiring.asset_checks,
            jobs=wiring.jobs,
            sensors=[_with_status(s, s.name in {names.sensor(n) for n in self.sensors_on}) for s in wiring.sensors],
            schedules=[_with_status(s, s.name in {names.schedule(n) for n in self.schedules_on})
                       for s in wiring.schedules],
            resources=self.resources(names))

    def _with_source_asset(self, names: MapNames, asset):
        """``raw_slices`` with a dependency on the asset whose files are the source, when there is one."""
        if self.source.asset is None or names.asset_key("raw_slices") not in getattr(asset, "keys", ()):
            return asset
        if self.source.path is None:
            raise dg.DagsterInvalidDefinitionError(
                f"UmapMap '{self.name}': source.asset {self.source.asset!r}: set source.path to the folder where "
                "that asset writes its Parquet files")
        upstream = dg.AssetKey.from_user_string(self.source.asset)
        return asset.map_asset_specs(lambda spec: spec.merge_attributes(deps=[upstream]))

    def _checked_source(self) -> None:
        from .sources import Source

        if self.source.path is not None and (problem := Source(self.source.path).problem()):
            raise dg.DagsterInvalidDefinitionError(f"UmapMap '{self.name}': source.path {problem}")

    def resources(self, names: MapNames) -> dict:
        from .defs.resources import (LocalEmbedding, QualityGates, Seed, SliceContract, SparkEmbedding,
                                     WarehouseResource, embedding_engine_from_env)

        columns = self.columns.model_dump()
        if self.engine is None:
            engine = embedding_engine_from_env()
        elif self.engine.kind == "spark":
            engine = SparkEmbedding(**{k: v for k, v in (("master", self.engine.master), ("conf", self.engine.conf))
                                       if v is not None})
        else:
            engine = LocalEmbedding(**({"chunk_rows": self.engine.chunk_rows} if self.engine.chunk_rows else {}))
        made = {"warehouse": WarehouseResource(home=self.home, source=self.source.path,
                                               source_options=self.source.storage_options),
                "contract": SliceContract(**columns),
                "seed": Seed(value=self.seed), "quality_gates": QualityGates(**self.quality_gates),
                "embedding_engine": engine}
        return {names.resource_key(key): resource for key, resource in made.items()}


def wiring_modules():
    """The modules of :mod:`umap_assets.defs` that build a stage of a map (each has ``definitions(names)``)."""
    from . import defs

    for info in sorted(pkgutil.iter_modules(defs.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{defs.__name__}.{info.name}")
        if callable(getattr(module, "definitions", None)):
            yield module


def map_definitions(names: MapNames) -> dg.Definitions:
    """Every stage's assets, checks, jobs, sensors and schedules of the map ``names`` (no resources)."""
    return dg.Definitions.merge(*(module.definitions(names) for module in wiring_modules()))


def _with_status(definition, on: bool):
    """A copy of a sensor or schedule that starts running (``on``) or stopped, as the attributes say."""
    if isinstance(definition, dg.ScheduleDefinition):
        status = dg.DefaultScheduleStatus.RUNNING if on else dg.DefaultScheduleStatus.STOPPED
    else:
        status = dg.DefaultSensorStatus.RUNNING if on else dg.DefaultSensorStatus.STOPPED
    if definition.default_status == status:
        return definition
    changed = copy.copy(definition)
    changed._default_status = status  # noqa: SLF001 - neither definition's with_attributes takes a status
    return changed
