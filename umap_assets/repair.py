"""What ``umap-assets run`` puts right before it plans anything: the home's own files.

- ``models/artifact.uart`` missing or unreadable: the served version (the newest ``model``
  materialization's) is copied back from ``models/artifacts/`` (:func:`restore_served`). Nothing retrains.
- ``warehouse.duckdb`` missing or damaged: rebuilt from the catalogue records and the published
  embeddings (:func:`rebuild_catalog`); it holds nothing else.
- A damaged Parquet file of the warehouse (:func:`umap_assets.integrity.find_damage`): a slice is
  ingested again from its file in the map's source (:func:`plan_repairs`), or named when that file is gone;
  a sample is drawn again from its slice; an embeddings file is deleted, and embedded again with the
  rest of the map.

Plain functions over a :class:`dagster.DagsterInstance` and the home; the runs are
:class:`~umap_assets.planner.Step`, executed by :mod:`umap_assets.runner`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from .history import latest_metadata
from .home import Layout
from .integrity import find_damage
from .model_store import ModelStore
from .map_names import DEFAULT_NAMES, MapNames
from .planner import Step
from .sources import Source, source_record
from .warehouse import CATALOG, Warehouse, home_relative, publish_catalog, published_embeddings, record_slice


@dataclass
class RepairPlan:
    steps: list[Step] = field(default_factory=list)  # runs that re-derive damaged files
    notes: list[str] = field(default_factory=list)  # what was put right here, one line each
    named: dict[str, str] = field(default_factory=dict)  # label -> why it cannot be put right


def restore_served(instance: dg.DagsterInstance, layout: Layout, names: MapNames = DEFAULT_NAMES) -> str:
    """Copy the served version (the newest ``model`` materialization's) back to ``models/artifact.uart``
    when that file is missing or unreadable; one line on what was done, or "" when the file is sound or
    nothing was ever promoted. A sound file of another version is left: a run killed between the copy
    and its materialization promoted it."""
    from .runtime import ArtifactError, Projector

    store = ModelStore(layout)
    version = latest_metadata(instance, names.asset_key("model"), "version")
    if version is None:
        return ""
    try:
        if not store.artifact_path.exists():
            problem = "is missing"
        else:
            Projector.load(store.artifact_path)  # another version than the record's: a kill right after a promotion
            return ""
    except (ArtifactError, OSError, ValueError) as exc:
        problem = f"is unreadable ({str(exc).splitlines()[0][:120]})"
    source = store.versioned_artifact_path(version)
    if not source.exists():
        return (f"{home_relative(store.artifact_path, layout.home)} {problem}, and the served version {version} is gone "
                f"from {home_relative(store.artifacts_dir, layout.home)}: the next training serves a new model")
    store.promote(version)
    return f"restored {home_relative(store.artifact_path, layout.home)} ({problem}): the served version {version}"


def restore_records(instance: dg.DagsterInstance, layout: Layout, source: Source,
                    names: MapNames = DEFAULT_NAMES) -> str:
    """Write the catalogue record of each slice in the warehouse that has none (``warehouse/catalog``
    deleted) from its newest ``raw_slices`` materialization, its file named in the map's ``source`` as
    it is now (a home moved since keeps its records right), and rebuild ``warehouse.duckdb`` with them;
    one line on it, or ""."""
    from .history import latest

    wh, restored = Warehouse.of(layout), []
    for key in wh.keys("raw_slices"):
        if (wh.table_dir(CATALOG) / f"{key}.json").exists() or (record := latest(instance, names.asset_key("raw_slices"), key)) is None:
            continue
        meta = {name: value.value for name, value in record.asset_materialization.metadata.items()}
        record_slice(wh, key, {"rows": meta.get("dagster/row_count"), "dim": meta.get("dimensions"),
                               "bytes": meta.get("bytes"), "label_counts": meta.get("label_counts") or {},
                               "path": home_relative(wh.table_path("raw_slices", key), layout.home),
                               "source": source_record(source, Path(meta.get("source") or f"{key}.parquet").name,
                                                       layout.home)})
        restored.append(key)
    if not restored:
        return ""
    publish_catalog(wh)
    return f"restored the catalogue records of {len(restored)} slice(s) from the Dagster history ({', '.join(restored[:5])})"


def plan_repairs(layout: Layout, served: str | None, source: Source, names: MapNames = DEFAULT_NAMES) -> RepairPlan:
    """Find the damaged warehouse files and say how each is re-derived from the map's ``source`` (or why it cannot be)."""
    from .discovery import SliceFile, ingest_tags

    wh, plan, ingest = Warehouse.of(layout), RepairPlan(), names.job("ingest_slice")
    damage = find_damage(wh, (published_embeddings(wh).get("current"), served))
    reingest = {d.key for d in damage if d.table == "raw_slices"}
    for d in damage:
        line = d.line(layout.home)
        if d.table == "raw_slices":
            found = source.names_for_key(d.key)
            if len(found) != 1:
                plan.named[f"raw_slices[{d.key}]"] = (f"{line}; its file is no longer in {source}"
                                                      ": put it back there to ingest it again")
                continue
            plan.notes.append(f"{line}; ingesting it again from {found[0]}")
            item = SliceFile(d.key, found[0], source.where(found[0]), source.identity(found[0]) or "")
            plan.steps.append(Step(ingest, f"{found[0]} (again: its warehouse copy was damaged)", partition=d.key,
                                   tags=ingest_tags(item, names), names=names))
        elif d.table == "samples" and d.key not in reingest:
            plan.notes.append(f"{line}; drawing it again from its slice")
            plan.steps.append(Step(ingest, f"samples[{d.key}]", partition=d.key, assets=("samples",), names=names))
        elif d.table == "embeddings":
            d.path.unlink(missing_ok=True)
            plan.notes.append(f"{line}; deleted, to be embedded again")
    return plan
