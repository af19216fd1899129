"""The ``umap-assets`` command line: demo data, a full run of the asset graph, batch embedding."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import LockTimeout, held_lock
from .contract import CHUNK_ROWS, SliceSpec
from .defs.errors import root_cause
from .home import HOME_ENV, Layout

DAGSTER_YAML = """\
# Written by umap-assets.
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
nux:
  enabled: false  # no sign-up dialog over the demo's results
"""


def prepare_instance_home(layout: Layout) -> Path:
    """Point Dagster at the persistent instance under ``<home>/dagster`` (created on first use)."""
    layout.ensure()
    config = layout.dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(layout.dagster_home)
    os.environ[HOME_ENV] = str(layout.home)
    return layout.dagster_home


#: Keep Dagster's per-event DEBUG lines out of the terminal; the runs are in the UI in full.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class RunSummary:
    succeeded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # label -> reason
    skipped: list[str] = field(default_factory=list)
    run_ids: dict[str, str] = field(default_factory=dict)  # label -> Dagster run id
    log_path: Path = Path("umap-assets.log")  # full traces of failed steps


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


#: Tag on every run the CLI starts, so a later CLI run can recognise its dead predecessors.
CLI_TAG = "umap_assets/launched_by"
#: Seconds between the two looks at ``incoming`` (a file must be unchanged across them).
READY_PAUSE_S = 0.5


def exclusive_cli_lock(layout: Layout):
    """Hold ``<home>/dagster/cli.lock`` for the duration of a CLI run (one CLI run per home);
    :class:`LockTimeout` at once when another CLI run holds it."""
    return held_lock(layout.dagster_home / "cli.lock",
                     busy=f"another `umap-assets run` is using {layout.home}; wait for it to finish")


def recover_dead_cli_runs(instance, say=print) -> int:
    """Mark runs of a killed CLI process as failed and free their concurrency-pool slots.

    Only called while holding :func:`exclusive_cli_lock`, so any CLI run still marked as in
    progress belongs to a process that died (for example, killed mid-write); it would otherwise show
    as running forever, and hold any concurrency slot it had claimed.
    """
    import dagster as dg

    in_progress = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED]
    stale = instance.get_runs(filters=dg.RunsFilter(statuses=in_progress, tags={CLI_TAG: "cli"}))
    for run in stale:
        instance.report_run_failed(run, "the `umap-assets run` process that ran it died")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        say(f"  recovered run {run.run_id[:8]} ({run.job_name}) left behind by a killed process")
    return len(stale)


def job_run_config(job, config: dict | None) -> dict:
    """The run config for ``job``: quiet logging, plus the ``ops`` entries for its own nodes and the
    ``resources`` entries for the resources it uses, from ``config`` (``--config``)."""
    config = config or {}
    ops = {name: cfg for name, cfg in (config.get("ops") or {}).items() if name in job.graph.node_dict}
    resources = {name: cfg for name, cfg in (config.get("resources") or {}).items()
                 if name in job.required_resource_keys}
    return {**QUIET, **({"ops": ops} if ops else {}), **({"resources": resources} if resources else {})}


class ConfigError(ValueError):
    """A ``--config`` file that does not fit the definitions; the message is one line per problem."""


def check_run_config(defs, config: dict, jobs: tuple[str, ...]) -> None:
    """Refuse unknown sections, assets, resources and fields before any run starts."""
    import dagster as dg

    problems = [f"unknown section '{k}' (expected ops: and resources:)" for k in config if k not in ("ops", "resources")]
    if "warehouse" in (config.get("resources") or {}):
        problems.append("resources: warehouse is set by --home, not by the config file")
    job_defs = [defs.resolve_job_def(name) for name in jobs if _has_job(defs, name)]
    known_ops = {n for job in job_defs for n in job.graph.node_dict}
    known_resources = {r for job in job_defs for r in job.required_resource_keys} - {"io_manager", "warehouse"}
    problems += [f"ops: unknown asset '{k}' (one of {sorted(known_ops)})" for k in config.get("ops") or {}
                 if k not in known_ops]
    problems += [f"resources: unknown resource '{k}' (one of {sorted(known_resources)})"
                 for k in config.get("resources") or {} if k not in known_resources and k != "warehouse"]
    for job in job_defs if not problems else []:
        try:
            dg.validate_run_config(job, job_run_config(job, config))
        except dg.DagsterInvalidConfigError as exc:
            problems += [e.message for e in exc.errors]
    if problems:
        raise ConfigError("; ".join(dict.fromkeys(problems)))


def _execute(job, instance, say, label: str, summary: RunSummary, config: dict | None = None, tags=None,
             **kwargs) -> bool:
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance, raise_on_error=False, run_config=job_run_config(job, config),
        tags={CLI_TAG: "cli", **(tags or {})}, **kwargs
    )
    summary.run_ids[label] = result.run_id
    seconds = time.perf_counter() - started
    if not result.success:
        log_failures(result, summary.log_path, label)
    steps = _step_seconds(result)
    if result.success:
        summary.succeeded.append(label)
        say(f"  ok      {label}  ({seconds:.1f}s{'; ' + steps if steps else ''})")
        for line in _failed_checks(result):  # checks that warn and do not block
            say(f"          warning {line}")
        return True
    checks = _failed_checks(result)
    reason = _failure_reason(result, checks)
    summary.failed[label] = reason
    say(f"  FAILED  {label}  ({seconds:.1f}s): {reason}")
    for line in checks:
        say(f"          gate {line}")
    return False


STAGES = ("ingest", "train", "embed")


def run_pipeline(
    home: str | None = None, *, say=print, force: bool = False, retrain: bool = False, config: dict | None = None,
    until: str = "embed",
) -> RunSummary:
    """Register every slice in ``<home>/incoming`` and materialize what is stale, the sensors' way.

    Ingest is ``new_slices_sensor``'s discovery; training follows ``training_sensor``'s rule (no
    promoted model yet, or a new slice drifts), or ``retrain``; embedding redoes the slices whose
    embeddings are older than their raw rows or the served model. ``config`` is run config: ``ops``
    maps asset names to their config (``{"samples": {"config": {"rate": 0.1}}}``), ``resources``
    resource names to theirs (``{"quality_gates": {"config": {...}}}``). It is checked against the
    definitions first (:class:`ConfigError`).
    """
    import dagster as dg

    from .definitions import load_definitions
    from .atomic import sweep_stale_temps

    layout = Layout.at(home)
    prepare_instance_home(layout)
    defs = load_definitions()
    check_run_config(defs, config or {}, ("ingest_slice", "train_model", "embed_slice"))
    summary = RunSummary(log_path=layout.log_path)
    say(f"home: {layout.home}")
    with exclusive_cli_lock(layout), dg.DagsterInstance.get() as instance:
        recover_dead_cli_runs(instance, say)
        swept = sum(sweep_stale_temps(d) for d in _dirs(layout))
        if swept:
            say(f"  removed {swept} temp file(s) left by killed writers")
        fresh, current = _ingest_incoming(defs, instance, layout, say, summary, config, force)
        if not fresh + current:
            say("no slice was ingested; nothing to train on")
            return summary
        if until == "ingest":
            return summary
        measured = _train(defs, instance, layout, say, summary, config, fresh, retrain) if _has_job(defs, "train_model") else set()
        if measured is None:
            return summary  # nothing to serve yet; with a promoted model, embedding goes on
        if until == "train" or not _has_job(defs, "embed_slice"):
            return summary
        say("embed: embeddings and drift, per slice")
        embed = defs.resolve_job_def("embed_slice")
        stale = set(_stale_slices(instance, layout, fresh + current))
        for key in fresh + current:
            if key not in stale:
                say(f"  up to date  embeddings[{key}]")
                continue
            only = {"asset_selection": [dg.AssetKey("embeddings")]} if key in measured else {}  # drift is current
            _execute(embed, instance, say, f"embeddings[{key}]", summary, config, partition_key=key, **only)
    return summary


def _train(defs, instance, layout: Layout, say, summary: RunSummary, config: dict | None, fresh: list[str],
           retrain: bool) -> set[str] | None:
    """Run ``train_model`` when ``training_sensor``'s rule (or ``retrain``) asks for it. Returns the
    slices whose ``drift`` was measured against the model served afterwards (so is current), or None
    when no model is served."""
    from .model_store import ModelStore

    served, measured = ModelStore(layout).artifact_path.exists(), set()
    if retrain or not served:
        reason = "asked for (--retrain)" if retrain else "no promoted model yet"
    else:
        reason, measured = _drift_reason(defs, instance, layout, say, config, fresh)
    if reason is None:
        return measured
    say(f"train: coreset -> teacher -> student -> artifact -> quality_report -> model  ({reason})")
    if _execute(defs.resolve_job_def("train_model"), instance, say, "train_model", summary, config,
                tags={"umap_assets/retrain_reason": reason}):
        return set()  # a new model: every drift is measured again
    return measured if ModelStore(layout).artifact_path.exists() else None


def _drift_reason(defs, instance, layout: Layout, say, config: dict | None,
                  fresh: list[str]) -> tuple[str | None, set[str]]:
    """Measure ``drift`` of the newly ingested slices against the served model: the reason to
    retrain (None when it covers them), and the slices measured."""
    from .defs.automation import coverage_summary, retrain_reason
    from .defs.drift import drift

    if not fresh:
        say("train: nothing new was ingested; the served model stays")
        return None, set()
    say("drift: does the served model cover the new slices?")
    job, measured, failed = defs.resolve_job_def("embed_slice"), {}, []
    for key in fresh:  # a drift that cannot be measured asks for a new model; it fails no slice
        if _execute(job, instance, say, f"drift[{key}]", RunSummary(log_path=layout.log_path), config,
                    partition_key=key, asset_selection=[drift.key]):
            measured[key] = _latest(instance, drift.key, key).asset_materialization.metadata
        else:
            failed.append(key)
    reason = retrain_reason(measured, failed)
    if reason is None:
        say(f"train: {coverage_summary(measured)}; the served model stays")
    return reason, set(measured)


def _stale_slices(instance, layout: Layout, keys: list[str]) -> list[str]:
    """The slices whose newest ``embeddings`` are missing, older than their ``raw_slices``, or of
    another model than the served artifact (their data version starts with its version)."""
    import dagster as dg

    from .model_store import ModelStore
    from .runtime import Projector

    served = Projector.load(ModelStore(layout).artifact_path).version
    stale = []
    for key in keys:
        record, raw = _latest(instance, dg.AssetKey("embeddings"), key), _latest(instance, dg.AssetKey("raw_slices"), key)
        if (record is None or (raw is not None and raw.storage_id > record.storage_id)
                or not record.asset_materialization.tags.get("dagster/data_version", "").startswith(f"{served}:")):
            stale.append(key)
    return stale


def _latest(instance, asset_key, partition: str):
    """The newest materialization record of one partition of ``asset_key``, or None."""
    import dagster as dg

    page = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1)
    return page.records[0] if page.records else None


def _ingest_incoming(defs, instance, layout: Layout, say, summary: RunSummary, config: dict | None,
                     force: bool) -> tuple[list[str], list[str]]:
    """Discover ``<home>/incoming`` the sensor's way, register new partitions, and ingest what is
    ready; return the keys of the slices ingested now, and of those that already were."""
    from .defs.discovery import discover_slices, ingest_tags, look
    from .defs.partitions import slices_partitions

    previous = {name: identity for name, identity in look(layout.incoming).items() if identity}
    time.sleep(READY_PAUSE_S)  # a file is ready when it is unchanged since the previous look
    found = discover_slices(instance, layout.incoming, previous, force=force)
    say(f"{len(found.ready) + len(found.up_to_date)} slice file(s) in {layout.incoming}")
    for name, reason in {**found.rejected, **_unready(found.waiting)}.items():
        summary.failed[name] = reason
        say(f"  skipped {name}: {reason}")
    new = sorted({f.key for f in found.ready} - set(instance.get_dynamic_partitions(slices_partitions.name)))
    if new:
        instance.add_dynamic_partitions(slices_partitions.name, new)
    say("ingest: raw_slices + samples, per slice")
    ingest = defs.resolve_job_def("ingest_slice")
    fresh: list[str] = []
    current: list[str] = []
    for item in found.up_to_date:
        if not (layout.warehouse / "samples" / f"{item.key}.parquet").exists():
            found.ready.append(item)  # its samples never landed: ingest again
            continue
        summary.skipped.append(item.path.name)
        current.append(item.key)
        say(f"  up to date  {item.path.name}")
    for item in found.ready:
        if _execute(ingest, instance, say, item.path.name, summary, config, partition_key=item.key,
                    tags=ingest_tags(item)):
            fresh.append(item.key)
    return fresh, current


def _dirs(layout: Layout):
    """The home and every folder under it but Dagster's own (where killed writers may have left temp files)."""
    yield layout.home
    yield from (p for p in layout.home.rglob("*")
                if p.is_dir() and p != layout.dagster_home and layout.dagster_home not in p.parents)


def _unready(waiting: dict[str, str]) -> dict[str, str]:
    """Reasons for files that were not ready at this run's second look."""
    return {
        name: "not a complete Parquet file (no PAR1 footer): still being written, or not a Parquet file"
        if not identity else "changed while this run looked at it: still being written?"
        for name, identity in waiting.items()
    }


def _has_job(defs, name: str) -> bool:
    try:
        defs.resolve_job_def(name)
        return True
    except Exception:  # noqa: BLE001 - dagster raises its own error type for unknown jobs
        return False


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from .demo_data import allow_download_default, write_demo_slices

    layout = Layout.at(args.home).ensure()
    write_demo_slices(
        layout.incoming,
        args.dataset,
        args.slices,
        cache=layout.cache,
        allow_download=allow_download_default(),
        seed=args.seed,
        overwrite=args.overwrite,
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = None
    if args.config:
        import yaml

        try:
            config = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            print(f"error: {args.config}: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
        if not isinstance(config, dict):
            print(f"error: {args.config}: expected a mapping with ops: and resources:", file=sys.stderr)
            return 2
    try:
        summary = run_pipeline(args.home, force=args.force, retrain=args.retrain, config=config, until=args.until)
    except ConfigError as exc:
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return 2
    layout = Layout.at(args.home)
    print()
    print(f"{len(summary.succeeded)} step(s) succeeded, {len(summary.skipped)} slice(s) up to date, "
          f"{len(summary.failed)} failed")
    report = layout.reports / "quality_report.md"
    if report.exists():
        print(f"quality report: {report}")
        print(f"quality summary: {layout.reports / 'quality_report.json'}")
    print(f"warehouse: {layout.warehouse}  (DuckDB: {layout.duckdb_path})")
    print(f"Dagster history: DAGSTER_HOME={layout.dagster_home}  (make ui)")
    if summary.failed:
        print("\nfailed:")
        for label, reason in summary.failed.items():
            print(f"  {label}: {reason}")
        if summary.log_path.exists():
            print(f"full traces: {summary.log_path}")
        return 1
    return 0


def rollback(home: str | None = None, to: str | None = None, *, say=print) -> RunSummary:
    """Serve an earlier promoted artifact again (``to``, default the one before the current), then
    re-embed every slice with it. The promotion is a materialization of ``model``, so the UI shows it."""
    import dagster as dg

    from .definitions import load_definitions
    from .defs.partitions import slices_partitions
    from .defs.promotion import promoted_versions

    layout = Layout.at(home)
    prepare_instance_home(layout)
    defs = load_definitions()
    summary = RunSummary(log_path=layout.log_path)
    with exclusive_cli_lock(layout), dg.DagsterInstance.get() as instance:
        versions = promoted_versions(instance)
        if to is None:
            if len(versions) < 2:
                summary.failed["rollback"] = f"no earlier promoted version to roll back to (promoted: {versions})"
                return summary
            to = versions[1]
        say(f"rollback: serve artifact {to} (now serving {versions[0] if versions else 'nothing'})")
        config = {"ops": {"model": {"config": {"version": to}}}}
        train = defs.resolve_job_def("train_model")
        if not _execute(train, instance, say, "model", summary, config, asset_selection=[dg.AssetKey("model")]):
            return summary
        embed = defs.resolve_job_def("embed_slice")
        for key in instance.get_dynamic_partitions(slices_partitions.name):
            if (layout.warehouse / "raw_slices" / f"{key}.parquet").exists():
                _execute(embed, instance, say, f"embeddings[{key}]", summary, partition_key=key)
    return summary


def _cmd_rollback(args: argparse.Namespace) -> int:
    if args.list:
        import dagster as dg

        from .defs.promotion import promoted_versions

        prepare_instance_home(Layout.at(args.home))
        with dg.DagsterInstance.get() as instance:
            for i, version in enumerate(promoted_versions(instance)):
                print(f"{version}{'  (served)' if i == 0 else ''}")
        return 0
    summary = rollback(args.home, args.to)
    for label, reason in summary.failed.items():
        print(f"failed: {label}: {reason}", file=sys.stderr)
    return 1 if summary.failed else 0


def _cmd_embed(args: argparse.Namespace) -> int:
    """The same transform as the ``embeddings`` asset, for an existing batch job."""
    from .contract import SliceError
    from .engines import OutputPathError, embed
    from .runtime import ArtifactError

    spec = slice_spec_from_arguments(args)
    conf = dict(args.spark_conf)
    try:
        stats = embed(args.engine, args.artifact, args.input, args.output, spec, chunk_rows=args.chunk_rows,
                      master=args.spark_master, conf=conf, models_dirs=(Layout.at(args.home).models,))
    except (ArtifactError, SliceError, OutputPathError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"embedded {stats.rows:,} rows in {stats.seconds:.2f}s ({stats.rows_per_s:,.0f} rows/s) "
          f"with artifact {stats.artifact_version} -> {stats.output}")
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    """Open the Dagster UI on the same instance that ``run`` writes to."""
    layout = Layout.at(args.home)
    prepare_instance_home(layout)
    workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
    # the `dagster` beside this interpreter: works with no virtualenv activated
    dagster = Path(sys.executable).parent / "dagster"
    cmd = [str(dagster) if dagster.exists() else "dagster", "dev", "-w", str(workspace), *args.dagster_args]
    print(f"DAGSTER_HOME={layout.dagster_home} {' '.join(cmd)}")
    os.execvpe(cmd[0], cmd, os.environ)
    return 0


def _cmd_map(args: argparse.Namespace) -> int:
    """Serve the current embeddings of the home as an explorable map."""
    from .map_server import MapUnavailable, serve
    from .warehouse import Warehouse

    layout = Layout.at(args.home)
    try:
        serve(Warehouse(root=layout.warehouse, duckdb_path=layout.duckdb_path), host=args.host, port=args.port,
              max_points=args.max_points, open_browser=not args.no_browser, public=args.public, token=args.token)
    except MapUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def add_slice_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`SliceSpec` field (``--id-column``, ...), with its default: one declaration."""
    for f in dataclasses.fields(SliceSpec):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "feature_columns":
            parser.add_argument(flag, default=None, type=lambda v: tuple(v.split(",")), metavar="A,B,...",
                                help="read the features from these numeric columns instead of one list column")
        else:
            parser.add_argument(flag, default=f.default, help=f"(default: {f.default})")


def slice_spec_from_arguments(args: argparse.Namespace) -> SliceSpec:
    return SliceSpec(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SliceSpec)})


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    from .engines import ENGINES

    parser = argparse.ArgumentParser(prog="umap-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo-data", help="write a demo data set as Parquet slices into <home>/incoming")
    demo.add_argument("--home", default=None, help=f"project home (default ${HOME_ENV} or ./data)")
    demo.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "digits", "synthetic"])
    demo.add_argument("--slices", type=int, default=7, help="number of slices (default 7)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--overwrite", action="store_true", help="replace slices that are already there")
    demo.set_defaults(func=_cmd_demo_data)

    run = sub.add_parser("run", help="register every slice in <home>/incoming and materialize the asset graph")
    run.add_argument("--home", default=None, help=f"project home (default ${HOME_ENV} or ./data)")
    run.add_argument("--force", action="store_true", help="re-ingest slices that are already up to date")
    run.add_argument("--retrain", action="store_true", help="train a new model even if the served one covers every slice")
    run.add_argument("--until", choices=STAGES, default="embed", help="stop after this stage (default: embed)")
    run.add_argument("--config", default=None, help="YAML run config: {ops: {<asset>: {config: {...}}}, resources: {<resource>: {config: {...}}}}")
    run.set_defaults(func=_cmd_run)

    embed = sub.add_parser("embed", help="embed a Parquet file with an artifact (outside Dagster)")
    embed.add_argument("--artifact", required=True, help="artifact file (.uart)")
    embed.add_argument("--input", required=True, help="input Parquet file (id, features[, label])")
    embed.add_argument("--output", required=True, help="output Parquet file (never the input, the artifact or under models/)")
    embed.add_argument("--home", default=None, help=f"project home whose models/ is protected (default ${HOME_ENV} or ./data)")
    embed.add_argument("--engine", choices=list(ENGINES), default="local")
    embed.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS, help="rows per chunk (local engine)")
    embed.add_argument("--spark-master", default="local[2]", help="Spark master URL (spark engine)")
    embed.add_argument("--spark-conf", action="append", default=[], type=_key_value, metavar="KEY=VALUE", help="Spark setting, repeatable")
    add_slice_spec_arguments(embed)
    embed.set_defaults(func=_cmd_embed)

    back = sub.add_parser("rollback", help="serve an earlier promoted model again, and re-embed every slice with it")
    back.add_argument("--home", default=None, help=f"project home (default ${HOME_ENV} or ./data)")
    back.add_argument("--to", default=None, help="artifact version (default: the one promoted before the current)")
    back.add_argument("--list", action="store_true", help="list the promoted versions, newest first")
    back.set_defaults(func=_cmd_rollback)

    explore = sub.add_parser("map", help="open the current embeddings in the browser (needs the `map` extra)")
    explore.add_argument("--home", default=None, help=f"project home (default ${HOME_ENV} or ./data)")
    explore.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; another than "
                         "loopback needs --public)")
    explore.add_argument("--public", action="store_true", help="allow a non-loopback --host: the map is open to the "
                         "network, behind a token (printed in the URL)")
    explore.add_argument("--token", default=None, help="require ?token=TOKEN on every request (generated when "
                         "--public and not given)")
    explore.add_argument("--port", type=int, default=8765, help="(default 8765; 0 picks a free one)")
    explore.add_argument("--max-points", type=int, default=200_000, help="rows drawn as points, a seeded sample "
                         "(default 200,000); every row is drawn as density")
    explore.add_argument("--no-browser", action="store_true", help="serve without opening a browser")
    explore.set_defaults(func=_cmd_map)

    ui = sub.add_parser("ui", help="run `dagster dev` on the instance under <home>/dagster")
    ui.add_argument("--home", default=None, help=f"project home (default ${HOME_ENV} or ./data)")
    ui.add_argument("dagster_args", nargs=argparse.REMAINDER, help="extra arguments for dagster dev")
    ui.set_defaults(func=_cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LockTimeout as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
