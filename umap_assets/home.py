"""Where the project keeps its files.

Every path the project writes lies under one home directory: ``--home``, else the environment
variable ``UMAP_ASSETS_HOME``, else ``./data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write_bytes
from .map_names import DEFAULT_NAMES

HOME_ENV = "UMAP_ASSETS_HOME"

#: The concurrency pool of every training asset (``coreset`` to ``model``).
TRAINING_POOL = DEFAULT_NAMES.training_pool
#: The concurrency pool of ``map_tile_runs``: one slot (``default_limit``), so two compactions never
#: merge the same version's tiles at once (the file lock in :func:`umap_assets.tiles.compact` as well).
TILE_RUNS_POOL = DEFAULT_NAMES.tile_runs_pool
#: The home's Dagster instance. At most one training per home, enforced by Dagster: pool
#: ``TRAINING_POOL`` has one slot, counted per run (``granularity: run``), so the run queue starts no
#: run that holds a training asset while another such run is in progress, however it was launched
#: (the UI, a sensor, the schedule, a backfill, or ``umap-assets run`` in its own process).
DAGSTER_YAML = f"""\
# Written by umap-assets.
concurrency:
  pools:
    granularity: run
    default_limit: 1
telemetry:
  enabled: false
nux:
  enabled: false  # no sign-up dialog over the demo's results
"""
_OURS = "# Written by umap-assets."


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """The absolute home directory: the argument, else ``$UMAP_ASSETS_HOME``, else ``./data``."""
    chosen = home if home not in (None, "") else os.environ.get(HOME_ENV) or "data"
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class Layout:
    """The directory layout under a home directory."""

    home: Path

    @classmethod
    def at(cls, home: str | os.PathLike | None = None) -> "Layout":
        return cls(resolve_home(home))

    @property
    def incoming(self) -> Path:
        return self.home / "incoming"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse"

    @property
    def duckdb_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def cache(self) -> Path:
        return self.home / "cache"

    @property
    def log_path(self) -> Path:
        """Full traces of the CLI's failed steps."""
        return self.home / "logs" / "umap-assets.log"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def writable_dirs(self):
        """The home and every folder under it but Dagster's own (where killed writers may leave temp files)."""
        yield self.home
        yield from (p for p in self.home.rglob("*")
                    if p.is_dir() and p != self.dagster_home and self.dagster_home not in p.parents)

    def ensure(self) -> "Layout":
        for path in (self.incoming, self.warehouse, self.models, self.reports, self.dagster_home):
            path.mkdir(parents=True, exist_ok=True)
        return self


def prepare_instance_home(layout: Layout) -> Path:
    """Point Dagster at the persistent instance under ``<home>/dagster`` (created on first use)."""
    layout.ensure()
    config = layout.dagster_home / "dagster.yaml"
    if not config.exists() or (config.read_text() != DAGSTER_YAML and config.read_text().startswith(_OURS)):
        atomic_write_bytes(config, DAGSTER_YAML.encode())  # ours, from an older release: bring it up to date
    os.environ["DAGSTER_HOME"] = str(layout.dagster_home)
    os.environ[HOME_ENV] = str(layout.home)
    return layout.dagster_home
