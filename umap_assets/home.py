"""Where the project keeps its files.

Every path the project writes lies under one home directory: ``--home``, else the environment
variable ``UMAP_ASSETS_HOME``, else ``./data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "UMAP_ASSETS_HOME"

#: The concurrency pool of every training asset, and the tag of every ``train_model`` run.
TRAINING_POOL, TRAINING_TAG = "training", "umap_assets/training"
#: The home's Dagster instance. At most one training per home, enforced by Dagster: every training
#: asset is in pool ``TRAINING_POOL`` (one slot: two runs never compute training steps at once, in-process
#: or launched), and the daemon's queue starts one ``train_model`` run at a time (its tag ``TRAINING_TAG``).
DAGSTER_YAML = f"""\
# Written by umap-assets.
concurrency:
  pools:
    default_limit: 1
  runs:
    tag_concurrency_limits:
      - key: {TRAINING_TAG}
        limit: 1
telemetry:
  enabled: false
nux:
  enabled: false  # no sign-up dialog over the demo's results
"""


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
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(layout.dagster_home)
    os.environ[HOME_ENV] = str(layout.home)
    return layout.dagster_home
