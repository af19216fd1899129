"""The ``umap-assets`` command line: demo data, a full run of the asset graph, batch embedding."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from .contract import SliceSpec
from .errors import os_error_line
from .home import HOME_ENV, Layout, prepare_instance_home
from .map_names import DEFAULT_MAP
from .runner import Busy, ConfigError, rollback, run_pipeline
from .slices import add_remove_command

__all__ = ["main", "prepare_instance_home", "rollback", "run_pipeline"]

MAP_HELP = (f"the map of the code location, by its UmapMap name (default {DEFAULT_MAP}); its home is the map's own "
            "unless --home is given")

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
        summary = run_pipeline(args.home, force=args.force, retrain=args.retrain, config=config, until=args.until,
                               map_name=args.map)
    except ConfigError as exc:
        print(f"error: {args.config or '--map'}: {exc}", file=sys.stderr)
        return 2
    layout = Layout.at(str(summary.home))
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


def _home_of(args: argparse.Namespace) -> str | None:
    """``--home`` when given, else the home of the map ``--map`` names (its ``UmapMap``'s), else the default home."""
    if args.home is not None or args.map is None:
        return args.home
    from .runner import location_definitions, map_home, map_names

    names = map_names(args.map)
    return map_home(location_definitions(names), names, None)


def _cmd_rollback(args: argparse.Namespace) -> int:
    if args.list:
        import dagster as dg

        from .history import promoted_versions
        from .runner import map_names

        names = map_names(args.map)
        prepare_instance_home(Layout.at(_home_of(args)))
        with dg.DagsterInstance.get() as instance:
            for i, version in enumerate(promoted_versions(instance, names.asset_key("model"))):
                print(f"{version}{'  (served)' if i == 0 else ''}")
        return 0
    summary = rollback(args.home, args.to, map_name=args.map)
    for label, reason in summary.failed.items():
        print(f"failed: {label}: {reason}", file=sys.stderr)
    return 1 if summary.failed else 0


def _cmd_embed(args: argparse.Namespace) -> int:
    """The same transform as the ``embeddings`` asset, for an existing batch job."""
    from .contract import SliceError
    from .engines import LocalEngine, OutputPathError, SparkEngine, embed
    from .runtime import ArtifactError

    try:
        spec = slice_spec_from_arguments(args)
    except ValueError as exc:  # SliceContract.carry names too many columns, or one the map uses
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engine = (LocalEngine(args.chunk_rows) if args.engine == LocalEngine.name
              else SparkEngine(args.spark_master, dict(args.spark_conf)))
    try:
        stats = embed(engine, args.artifact, args.input, args.output, spec, models_dirs=(Layout.at(_home_of(args)).models,))
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
    import dagster as dg

    from .planner import limit_training

    with dg.DagsterInstance.get() as instance:
        limit_training(instance)  # the UI's queue then starts one training run at a time
    # `dg dev` in the project (its pyproject's [tool.dg]); the `dg` beside this interpreter, and this
    # interpreter's virtualenv named, so it works with none activated
    bin_dir = Path(sys.executable).parent
    dg_cli = bin_dir / "dg"
    cmd = [str(dg_cli) if dg_cli.exists() else "dg", "dev", *args.dagster_args]
    os.environ["VIRTUAL_ENV"] = str(bin_dir.parent)
    os.chdir(Path(__file__).resolve().parent.parent)
    print(f"DAGSTER_HOME={layout.dagster_home} {' '.join(cmd)}")
    os.execvpe(cmd[0], cmd, os.environ)
    return 0


def _cmd_map(args: argparse.Namespace) -> int:
    """Serve the current embeddings of the home as an explorable map."""
    from .map_server import MapUnavailable, serve
    from .warehouse import Warehouse

    layout = Layout.at(_home_of(args))
    try:
        serve(Warehouse.of(layout), host=args.host, port=args.port,
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
        elif f.name == "carry":
            parser.add_argument(flag, default=(), type=lambda v: tuple(c for c in v.split(",") if c), metavar="A,B,...",
                                help="carry these string or number columns with each row into the embeddings")
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
    from .engines import ENGINES, LocalEngine, SparkEngine

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
    run.add_argument("--until", choices=("ingest", "train", "embed"), default="embed", help="stop after this stage (default: embed)")
    run.add_argument("--config", default=None, help="YAML run config: {ops: {<asset>: {config: {...}}}, resources: {<resource>: {config: {...}}}}")
    run.add_argument("--map", default=DEFAULT_MAP, help=MAP_HELP)
    run.set_defaults(func=_cmd_run)

    embed = sub.add_parser("embed", help="embed a Parquet file with an artifact (outside Dagster)")
    embed.add_argument("--artifact", required=True, help="artifact file (.uart)")
    embed.add_argument("--input", required=True, help="input Parquet file (id, features[, label])")
    embed.add_argument("--output", required=True, help="output Parquet file (never the input, the artifact or under models/)")
    embed.add_argument("--home", default=None, help=f"project home whose models/ is protected (default ${HOME_ENV} or ./data)")
    embed.add_argument("--engine", choices=list(ENGINES), default="local")
    embed.add_argument("--chunk-rows", type=int, default=LocalEngine.chunk_rows, help="rows per chunk (local engine)")
    embed.add_argument("--spark-master", default=SparkEngine.master,
                       help=f"Spark master URL (spark engine; default {SparkEngine.master})")
    embed.add_argument("--spark-conf", action="append", default=[], type=_key_value, metavar="KEY=VALUE", help="Spark setting, repeatable")
    embed.add_argument("--map", default=None, help=MAP_HELP.replace("the map of", "the map whose models/ is protected, of"))
    add_slice_spec_arguments(embed)
    embed.set_defaults(func=_cmd_embed)

    back = sub.add_parser("rollback", help="serve an earlier promoted model again, and re-embed every slice with it")
    back.add_argument("--home", default=None, help=f"project home (default ${HOME_ENV} or ./data)")
    back.add_argument("--to", default=None, help="artifact version (default: the one promoted before the current)")
    back.add_argument("--list", action="store_true", help="list the promoted versions, newest first")
    back.add_argument("--map", default=DEFAULT_MAP, help=MAP_HELP)
    back.set_defaults(func=_cmd_rollback)

    add_remove_command(sub)

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
    explore.add_argument("--map", default=None, help=MAP_HELP)
    explore.set_defaults(func=_cmd_map)

    ui = sub.add_parser("ui", help="run `dg dev` (the Dagster UI) on the instance under <home>/dagster")
    ui.add_argument("--home", default=None, help=f"project home (default ${HOME_ENV} or ./data)")
    ui.add_argument("dagster_args", nargs=argparse.REMAINDER, help="extra arguments for dg dev")
    ui.set_defaults(func=_cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Busy as exc:
        print(exc, file=sys.stderr)
        return 1
    except ConfigError as exc:  # --map names no map of the code location (a --config file's problems: _cmd_run)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a failure of the machine (full disk, read-only home): one line, the trace to the log
        print(f"error: {os_error_line(exc, Layout.at(getattr(args, 'home', None)).log_path)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
