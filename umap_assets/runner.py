"""``umap-assets run`` and ``rollback``: plan, execute, plan again, in this process.

Each :class:`~umap_assets.planner.Step` is one run of its job on the home's instance, reported in one
line. No decisions here: what runs is :mod:`umap_assets.planner`'s answer, the sensors' own. This module
only runs it, prints one line per run and per failed check, and appends full traces to ``<home>/logs/``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from . import planner
from .map_names import DEFAULT_MAP, DEFAULT_NAMES, MapNames
from .errors import NOTICE, root_cause
from .history import latest
from .home import Layout, prepare_instance_home
from .planner import LAUNCHER_TAG, Step, launcher
from .sources import Source, local_source

#: Keep Dagster's per-event DEBUG lines out of the terminal; the runs are in the UI in full.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
JOBS = ("ingest_slice", "train_model", "embed_slice", "compact_tiles")


@dataclass
class RunSummary:
    succeeded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # label -> reason
    skipped: list[str] = field(default_factory=list)
    run_ids: dict[str, str] = field(default_factory=dict)  # label -> Dagster run id
    log_path: Path = Path("umap-assets.log")  # full traces of failed steps
    home: Path | None = None  # the home the steps ran on (a map's own, with --map)


class ConfigError(ValueError):
    """A ``--config`` file that does not fit the definitions; the message is one line per problem."""


def job_run_config(job, config: dict | None) -> dict:
    """The run config for ``job``: quiet logging, plus the ``ops`` entries for its own nodes and the
    ``resources`` entries for the resources it uses, from ``config`` (``--config``)."""
    config = config or {}
    ops = {name: cfg for name, cfg in (config.get("ops") or {}).items() if name in job.graph.node_dict}
    resources = {name: cfg for name, cfg in (config.get("resources") or {}).items()
                 if name in job.required_resource_keys}
    return {**QUIET, **({"ops": ops} if ops else {}), **({"resources": resources} if resources else {})}


def check_run_config(defs, config: dict, jobs: tuple[str, ...] = JOBS, names: MapNames = DEFAULT_NAMES) -> None:
    """Refuse unknown sections, assets, resources and fields of the map ``names`` before any run starts."""
    problems = [f"unknown section '{k}' (expected ops: and resources:)" for k in config if k not in ("ops", "resources")]
    if "warehouse" in (config.get("resources") or {}):
        problems.append("resources: warehouse is set by --home, not by the config file")
    config, jobs, warehouse = for_map(config, names), tuple(names.job(j) for j in jobs), names.resource_key("warehouse")
    problems += [f"ops: {name}: the project has one seed, for every step: set resources: {{seed: {{config: {{value: N}}}}}}"
                 for name, cfg in (config.get("ops") or {}).items()
                 if isinstance(cfg, dict) and isinstance(cfg.get("config"), dict) and "seed" in cfg["config"]]
    job_defs = [defs.resolve_job_def(name) for name in jobs if has_job(defs, name)]
    known_ops = {n for job in job_defs for n in job.graph.node_dict}
    known_resources = {r for job in job_defs for r in job.required_resource_keys} - {"io_manager", warehouse}
    problems += [f"ops: unknown asset '{k}' (one of {sorted(known_ops)})" for k in config.get("ops") or {}
                 if k not in known_ops]
    problems += [f"resources: unknown resource '{k}' (one of {sorted(known_resources)})"
                 for k in config.get("resources") or {} if k not in known_resources and k != warehouse]
    for job in job_defs if not problems else []:
        try:
            dg.validate_run_config(job, job_run_config(job, config))
        except dg.DagsterInvalidConfigError as exc:
            problems += [e.message for e in exc.errors]
    if not problems:
        problems += range_problems(defs, job_defs, config)
    if problems:
        raise ConfigError("; ".join(dict.fromkeys(problems)))


def range_problems(defs, job_defs: list, config: dict) -> list[str]:
    """Each value the config sets, checked against its field's range: Dagster's config check reads
    the types, not the pydantic ``Field`` constraints (``gt``, ``le``, ...), which a run would only meet
    at its start. Building each ``Config`` or resource from the values does; one problem per value."""
    problems = []
    for name, entry in (config.get("ops") or {}).items():
        node = next(job.graph.node_dict[name] for job in job_defs if name in job.graph.node_dict)
        problems += _out_of_range(f"ops: {name}", op_config_class(node.definition), entry)
    for name, entry in (config.get("resources") or {}).items():
        resource = (defs.resources or {}).get(name)
        problems += _out_of_range(f"resources: {name}", type(resource) if resource is not None else None, entry)
    return problems


def op_config_class(op_def) -> type | None:
    """The ``dg.Config`` class an asset's function takes as ``config``, if any."""
    import typing

    fn = getattr(getattr(op_def, "compute_fn", None), "decorated_fn", None)
    try:
        hint = typing.get_type_hints(fn).get("config") if fn is not None else None
    except (NameError, TypeError):  # an annotation that does not resolve: nothing to check here
        return None
    return hint if isinstance(hint, type) and issubclass(hint, dg.Config) else None


def _out_of_range(where: str, cls: type | None, entry) -> list[str]:
    import pydantic

    values = entry.get("config") if isinstance(entry, dict) else None
    if cls is None or not isinstance(values, dict):
        return []
    try:
        cls(**values)
    except pydantic.ValidationError as exc:
        return [f"{where}: {'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']} (got {e['input']!r})"
                for e in exc.errors()]
    return []


def has_job(defs, name: str) -> bool:
    try:
        defs.resolve_job_def(name)
        return True
    except Exception:  # noqa: BLE001 - dagster raises its own error type for unknown jobs
        return False


@dataclass
class Runner:
    """Runs steps in this process on ``instance``, with the ``--config`` run config, printing with ``say``."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    summary: RunSummary
    config: dict | None = None
    say: object = print
    names: MapNames = DEFAULT_NAMES  # the map of the code location whose jobs run

    def __post_init__(self):
        planner.limit_training(self.instance, self.names)

    def op_config(self, op: str, config_class: type[dg.Config]) -> dg.Config:
        """The ``--config`` run config's ``ops: {<op>: {config: ...}}`` as ``config_class`` (its defaults where absent)."""
        return config_class(**(((self.config or {}).get("ops") or {}).get(op) or {}).get("config", {}))

    def recover_dead_runs(self) -> int:
        """Mark runs whose launching process died (killed mid-write) as failed, and free their
        concurrency-pool slots; they would otherwise show as running forever and hold their slots."""
        from .planner import dead_runs

        dead = dead_runs(self.instance)
        for run in dead:
            self.instance.report_run_failed(run, "the `umap-assets run` process that ran it died")
            self.instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            self.say(f"  recovered run {run.run_id[:8]} ({run.job_name}) left behind by a killed process")
        return len(dead)

    def execute(self, step: Step, *, summary: RunSummary | None = None, config: dict | None = None) -> bool:
        """Run ``step``; one line for it (and one per failed check); True when it succeeded."""
        summary = self.summary if summary is None else summary
        if step.job == self.names.job("train_model") and (refusal := planner.training_refusal(self.instance, self.names)):
            summary.failed[step.label] = refusal
            self.say(f"  FAILED  {step.label}: {refusal}")
            return False
        job = self.defs.resolve_job_def(step.job)
        started = time.perf_counter()
        selection = {"asset_selection": [self.names.asset_key(a) for a in step.assets]} if step.assets else {}
        result = job.execute_in_process(
            instance=self.instance, raise_on_error=False, partition_key=step.partition,
            run_config=job_run_config(job, for_map(self.config if config is None else config, self.names)),
            tags={LAUNCHER_TAG: launcher(), **step.tags}, **selection)
        summary.run_ids[step.label] = result.run_id
        seconds, steps = time.perf_counter() - started, _step_seconds(result)
        checks = _failed_checks(result)
        if result.success:
            summary.succeeded.append(step.label)
            self.say(f"  ok      {step.label}  ({seconds:.1f}s{'; ' + steps if steps else ''})")
            for line in checks:  # checks that warn and do not block
                self.say(f"          warning {line}")
            for event in result.get_asset_materialization_events():
                if (notice := event.materialization.metadata.get(NOTICE)) is not None:
                    self.say(f"          note    {notice.value}")
            return True
        log_failures(result, summary.log_path, step.label)
        summary.failed[step.label] = reason = _failure_reason(result, checks)
        self.say(f"  FAILED  {step.label}  ({seconds:.1f}s): {reason}")
        for line in checks:
            self.say(f"          gate {line}")
        return False


def _step_seconds(result) -> str:
    """Seconds per step of a run of several steps ("coreset 9.5s, teacher 75.0s, ...")."""
    done = [(e.step_key, e.event_specific_data.duration_ms / 1000) for e in result.all_events if e.is_step_success]
    return ", ".join(f"{key} {sec:.1f}s" for key, sec in done) if len(done) > 1 else ""


def _failed_checks(result) -> list[str]:
    """One line per failed asset check of a run: its name and what it measured."""
    return [e.description or f"{e.check_name}: failed" for e in result.get_asset_check_evaluations() if not e.passed]


def _failure_reason(result, failed_checks: list[str]) -> str:
    if failed_checks:
        return "quality gates failed; the candidate was not promoted (see the quality report)"
    reasons = []
    for event in result.all_events:
        if event.is_step_failure:
            err = event.step_failure_data.error
            reasons.append(f"{event.step_key}: {root_cause(err) if err else 'failed'}")
    return "; ".join(reasons) or "the run failed"


def log_failures(result, log_path: Path, label: str) -> None:
    """Append the full traces of a failed run's steps to the log file under the home."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as fh:
        fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {label} (run {result.run_id})\n")
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data.error is not None:
                fh.write(f"--- step {event.step_key}\n{event.step_failure_data.error.to_string()}\n")


class Busy(RuntimeError):
    """Runs are in progress on the home: another ``umap-assets run``, or the daemon's."""


def map_names(name: str) -> MapNames:
    """The names of the map called ``name`` (``--map``); a bad name is a :class:`ConfigError` in one line."""
    try:
        return MapNames(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def location_definitions(names: MapNames, defs: dg.Definitions | None = None) -> dg.Definitions:
    """The code location's definitions (``defs``, default this project's), which must hold the map ``names``;
    else one line naming the maps there."""
    from .definitions import load_definitions

    defs = load_definitions() if defs is None else defs
    if not has_job(defs, names.job("ingest_slice")):
        maps = sorted(j.name.removesuffix("ingest_slice").removesuffix("__") or DEFAULT_MAP for j in defs.jobs
                      if j.name.endswith("ingest_slice"))
        raise ConfigError(f"no map named '{names.name}' in this code location (maps: {', '.join(maps) or 'none'})")
    return defs


def _map_warehouse(defs: dg.Definitions, names: MapNames):
    """The map's ``warehouse`` resource as its ``UmapMap`` configured it (None when the definitions bind none)."""
    return (defs.resources or {}).get(names.resource_key("warehouse"))


def map_home(defs: dg.Definitions, names: MapNames, home: str | None) -> str | None:
    """``home`` when given, else the map's own (its ``UmapMap``'s ``home``; None: $UMAP_ASSETS_HOME, else ./data)."""
    return home if home is not None else getattr(_map_warehouse(defs, names), "home", None)


def map_source(defs: dg.Definitions, names: MapNames, layout: Layout) -> Source:
    """Where the map's slice files come from: its ``UmapMap``'s ``source``, else ``incoming/`` of ``layout``."""
    from .defs.resources import WarehouseResource

    warehouse = _map_warehouse(defs, names)
    return warehouse.slice_source(layout) if isinstance(warehouse, WarehouseResource) else local_source(layout.incoming)


def for_map(config: dict | None, names: MapNames) -> dict | None:
    """``--config`` as the map's run config: its ``ops`` and ``resources`` named as the map names them."""
    if not config or names.is_default:
        return config
    renamed = {"ops": {names.op(k): v for k, v in (config.get("ops") or {}).items()},
               "resources": {names.resource_key(k): v for k, v in (config.get("resources") or {}).items()}}
    return {**config, **{k: v for k, v in renamed.items() if k in config}}


def run_pipeline(home: str | None = None, *, say=print, force: bool = False, retrain: bool = False,
                 config: dict | None = None, until: str = "embed", map_name: str = DEFAULT_MAP,
                 defs: dg.Definitions | None = None) -> RunSummary:
    """Plan, execute, plan again until nothing is left: ingest the files of the map's source, train
    when :func:`~umap_assets.planner.plan_training` says so (or ``retrain``), embed the stale slices.

    Every decision is :mod:`umap_assets.planner`'s, the sensors' own; the runs go to the home's
    instance (``<home>/dagster``). ``config`` is run config (``ops``, ``resources``), checked first. The map is
    ``map_name`` of the code location ``defs`` (default: this project's); ``home`` defaults to the map's own.
    """
    from .atomic import sweep_stale_temps

    names = map_names(map_name)
    defs = location_definitions(names, defs)
    layout = Layout.at(map_home(defs, names, home))
    prepare_instance_home(layout)
    check_run_config(defs, config or {}, names=names)
    summary = RunSummary(log_path=layout.log_path, home=layout.home)
    say(f"home: {layout.home}")
    with dg.DagsterInstance.get() as instance:
        run = Runner(defs, instance, summary, config, say, names)
        run.recover_dead_runs()
        if planner.busy(instance):
            raise Busy(f"another `umap-assets run` is using {layout.home}; wait for it to finish")
        if swept := sum(sweep_stale_temps(d) for d in layout.writable_dirs()):
            say(f"  removed {swept} temp file(s) left by killed writers")
        source = map_source(defs, names, layout)
        _repair(run, layout, source)
        # the CLI's cursor: the samples before this run are decided on, unless nothing is served yet
        handled = getattr(latest(instance, names.asset_key("samples")), "storage_id", 0) if _served(layout) else 0
        _ingest(run, source, force)
        keys = home_slices(instance, layout, names)
        if not keys:
            say("no slice was ingested; nothing to train on")
        elif until != "ingest" and has_job(defs, names.job("train_model")) and _train(run, layout, handled, retrain) \
                and until != "train" and has_job(defs, names.job("embed_slice")):
            _embed(run, layout, keys)
    return summary


def home_slices(instance: dg.DagsterInstance, layout: Layout, names: MapNames = DEFAULT_NAMES) -> list[str]:
    """Every slice in the home: the map's ``slices`` partitions whose rows are in the warehouse, whether or
    not their file is still in ``incoming/``."""
    from .warehouse import Warehouse

    return sorted(set(Warehouse.of(layout).keys("raw_slices")) & set(instance.get_dynamic_partitions(names.partitions)))


def _repair(run: Runner, layout: Layout, source: Source) -> None:
    """Put the home's own files right before planning (:mod:`umap_assets.repair`): the served artifact,
    the DuckDB catalogue, and each damaged warehouse file, re-derived from its source or named."""
    from .integrity import rebuild_catalog
    from .repair import plan_repairs, restore_records, restore_served
    from .warehouse import Warehouse

    for line in (restore_served(run.instance, layout, run.names), restore_records(run.instance, layout, source, run.names),
                 rebuild_catalog(Warehouse.of(layout))):
        if line:
            run.say(f"  {line}")
    plan = plan_repairs(layout, _served(layout), source, run.names)
    if plan.notes or plan.named:
        run.say("check: the warehouse files, each page against its checksum")
    for line in plan.notes:
        run.say(f"  {line}")
    for label, reason in plan.named.items():
        run.summary.failed[label] = reason
        run.say(f"  FAILED  {label}: {reason}")
    for step in plan.steps:
        run.execute(step)


def _embed(run: Runner, layout: Layout, keys: list[str]) -> None:
    """Embed every slice of the home that is stale against the served model, publish the map once
    all are done, and say in one line where the map stands; a map that is not complete fails the run."""
    from .defs.embeddings import EmbeddingsConfig
    from .tiles import tiled_keys
    from .warehouse import Warehouse, map_status, publish_embeddings

    served, wh = _served(layout), Warehouse.of(layout)
    run.say("embed: embeddings, tiles and drift, per slice")
    steps = {s.partition: s for s in planner.plan_maps(run.instance, keys, served, present=set(wh.embedded_keys(served)),
                                                        tiled=set(tiled_keys(wh.embeddings_dir(served))),
                                                        names=run.names)}
    for key in keys:
        if key not in steps or steps[key].assets == ("map_tiles",):
            run.say(f"  up to date  embeddings[{key}]")
        if key in steps:  # a map that is current may still need its tiles
            run.execute(steps[key])
    status = map_status(wh, served, keys)
    if not status.stale and status.view != served:  # every file is there, but no embedding ran to publish them
        publish_embeddings(wh, served, keys, keep=run.op_config("embeddings", EmbeddingsConfig).keep_versions)
        status = map_status(wh, served, keys)
    run.say(f"  {status.line()}")
    if not status.complete:
        run.summary.failed["map"] = status.line()
    _compact(run, wh)


def _compact(run: Runner, wh) -> None:
    """Merge the served version's partial tiles in levels, in a step of its own after the slices'
    (:func:`~umap_assets.planner.plan_compaction`), so no slice's step pays for the home's merges."""
    from .defs.map_tile_runs import MapTileRunsConfig
    from .warehouse import published_embeddings

    version = published_embeddings(wh).get("current")
    fanout = run.op_config("map_tile_runs", MapTileRunsConfig).fanout
    step = planner.plan_compaction(wh.embeddings_dir(version) if version else None, fanout, names=run.names)
    run.say("compact: the served version's tiles, merged in levels")
    if step is None:
        run.say("  up to date  map_tile_runs")
    else:
        run.execute(step)


def _ingest(run: Runner, source: Source, force: bool) -> None:
    """Look at the map's ``source`` twice (a file must be unchanged between the looks) and ingest what the
    planner finds ready; one line for each file of the source."""
    previous = {}
    while True:
        plan = planner.plan_ingest(run.instance, source, previous, force=force, resume=True, names=run.names)
        if plan.new_partitions:
            run.instance.add_dynamic_partitions(run.names.partitions, plan.new_partitions)
        if plan.steps:
            run.say("ingest: raw_slices + samples, per slice")
        for step in plan.steps:
            run.execute(step)
        if previous or not plan.waiting:
            break
        previous = plan.seen
        time.sleep(planner.LOOK_AGAIN_S)
    run.say(f"{len(plan.steps) + len(plan.up_to_date)} slice file(s) in {source}")
    for key, name in plan.up_to_date.items():
        run.summary.skipped.append(name)
        run.say(f"  up to date  {name}" + (f"  (slice '{key}', renamed)" if name in plan.renamed else ""))
    for name, line in plan.copies.items():
        run.summary.skipped.append(name)
        run.say(f"  copy    {name}: {line}")
    for name, reason in {**plan.rejected, **_unready(plan.waiting)}.items():
        run.summary.failed[name] = reason
        run.say(f"  skipped {name}: {reason}")


def _train(run: Runner, layout: Layout, handled: int, retrain: bool) -> bool:
    """Measure the drift the planner asks for, then train when it says so; True when a model is served."""
    measured: set[str] = set()
    while True:
        plan = planner.plan_training(run.instance, served=_served(layout) is not None, handled=handled,
                                     asked="asked for (--retrain)" if retrain else None, names=run.names)
        todo = [key for key in plan.measure if key not in measured]
        if not todo:
            break
        run.say("drift: does the served model cover the new slices?")
        for key in todo:  # a drift that cannot be measured asks for a new model; it fails no slice
            run.execute(planner.Step(run.names.job("embed_slice"), f"drift[{key}]", partition=key, assets=("drift",),
                                     names=run.names),
                        summary=RunSummary(log_path=layout.log_path))
        measured.update(todo)
    if plan.step is None:
        run.say(f"train: {plan.reason}")
    else:
        run.say(f"train: coreset -> teacher -> student -> artifact -> quality_report -> model  ({plan.reason})")
        run.execute(plan.step)
    return _served(layout) is not None


def _served(layout: Layout) -> str | None:
    """The version of the served model, or None."""
    from .model_store import ModelStore
    from .runtime import ArtifactError, Projector

    path = ModelStore(layout).artifact_path
    try:
        return Projector.load(path).version if path.exists() else None
    except ArtifactError:  # unreadable, and its version gone from models/artifacts (repair.restore_served said so)
        return None


def _unready(waiting: dict[str, str]) -> dict[str, str]:
    """Reasons for files that were not ready at this run's second look."""
    return {name: "not a complete Parquet file (no PAR1 footer): still being written, or not a Parquet file"
            if not identity else "changed while this run looked at it: still being written?"
            for name, identity in waiting.items()}


def rollback(home: str | None = None, to: str | None = None, *, say=print, map_name: str = DEFAULT_MAP,
             defs: dg.Definitions | None = None) -> RunSummary:
    """Serve an earlier promoted artifact again (``to``, default the one before the current), then
    re-embed every slice with it. The promotion is a materialization of ``model``, so the UI shows it."""
    from .history import promoted_versions

    names = map_names(map_name)
    defs = location_definitions(names, defs)
    layout = Layout.at(map_home(defs, names, home))
    prepare_instance_home(layout)
    summary = RunSummary(log_path=layout.log_path)
    with dg.DagsterInstance.get() as instance:
        run = Runner(defs, instance, summary, None, say, names)
        versions = promoted_versions(instance, names.asset_key("model"))
        if to is None and len(versions) < 2:
            summary.failed["rollback"] = f"no earlier promoted version to roll back to (promoted: {versions})"
            return summary
        to = to or versions[1]
        say(f"rollback: serve artifact {to} (now serving {versions[0] if versions else 'nothing'})")
        if run.execute(planner.Step(names.job("train_model"), "model", assets=("model",), names=names),
                       config={"ops": {"model": {"config": {"version": to}}}}):
            _embed(run, layout, home_slices(instance, layout, names))
    return summary
