"""``umap-assets remove SLICE``: run the ``remove_slice`` job (the UI's own) on one slice of the home."""

from __future__ import annotations

import argparse
import sys

import dagster as dg

from .contract import partition_key_for
from .home import HOME_ENV, Layout, prepare_instance_home
from .map_names import DEFAULT_MAP
from .runner import Busy, Runner, RunSummary, location_definitions, map_home, map_names
from .planner import Step, busy


def slice_key(name: str) -> str:
    """The partition key a user means: a key as it is, or a file name (``a.parquet``) made one."""
    return partition_key_for(name) if name.endswith(".parquet") else name


def remove(home: str | None, name: str, *, say=print, map_name: str = DEFAULT_MAP) -> RunSummary:
    """Remove slice ``name`` (its key, or its file's name) from the map's home, in one line; refused when
    the home has no such slice, or while runs are in progress on it."""
    names = map_names(map_name)
    defs = location_definitions(names)
    layout = Layout.at(map_home(defs, names, home))
    prepare_instance_home(layout)
    summary = RunSummary(log_path=layout.log_path)
    key = slice_key(name)
    with dg.DagsterInstance.get() as instance:
        run = Runner(defs, instance, summary, None, say, names)
        run.recover_dead_runs()
        if busy(instance):
            raise Busy(f"another `umap-assets run` is using {layout.home}; wait for it to finish")
        known = instance.get_dynamic_partitions(names.partitions)
        if key not in known:
            summary.failed[name] = (f"no slice '{key}' in {layout.home} (slices: {', '.join(sorted(known)[:10]) or 'none'})")
            return summary
        if run.execute(Step(names.job("remove_slice"), f"remove {key}", partition=key, names=names)):
            say(f"slice '{key}' removed: its rows left the samples and the map; the next model trains without them")
    return summary


def add_remove_command(sub) -> None:
    """``umap-assets remove SLICE [--home DIR]`` on the CLI's subcommands."""
    parser = sub.add_parser("remove", help="remove a slice from the home: its rows leave the samples, the next "
                            "model's training data and the map")
    parser.add_argument("slice", help="the slice's key, or its file's name (move or delete the file from incoming/ first)")
    parser.add_argument("--home", default=None, help=f"project home (default ${HOME_ENV} or ./data)")
    parser.add_argument("--map", default=DEFAULT_MAP, help=f"the map of the code location (default {DEFAULT_MAP})")
    parser.set_defaults(func=_cmd_remove)


def _cmd_remove(args: argparse.Namespace) -> int:
    summary = remove(args.home, args.slice, map_name=args.map)
    for label, reason in summary.failed.items():
        print(f"failed: {label}: {reason}", file=sys.stderr)
    return 1 if summary.failed else 0
