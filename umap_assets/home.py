"""Where the project keeps its files.

Every path the project writes lies under one home directory: ``--home``, else the environment
variable ``UMAP_ASSETS_HOME``, else ``./data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "UMAP_ASSETS_HOME"


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

    def ensure(self) -> "Layout":
        for path in (self.incoming, self.warehouse, self.models, self.reports, self.dagster_home):
            path.mkdir(parents=True, exist_ok=True)
        return self
