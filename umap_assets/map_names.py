"""One map's names: every asset key, group, job, sensor, schedule, pool, run tag, dynamic partition
set and resource key derived from the map's name, in one place.

The map called :data:`DEFAULT_MAP` keeps today's names (``samples``, ``train_model``, the ``training``
pool, the ``slices`` partitions), so ``make demo``, the CLI and the UI are unchanged. Any other name
prefixes them: asset ``products/samples``, group ``products_ingest``, job ``products__train_model``,
pool ``products/training``, partitions ``products__slices``, tag ``umap_assets/products__...``,
resource ``products__warehouse``. Two maps with different names therefore share no name.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg

#: The name of the map whose names are today's, unprefixed.
DEFAULT_MAP = "default"

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclasses.dataclass(frozen=True)
class MapNames:
    """The names of the map called ``name``; see the module's docstring for the rule."""

    name: str = DEFAULT_MAP

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or "__" in self.name:
            raise ValueError(f"map name {self.name!r}: expected a lowercase identifier (a-z, 0-9, _; no '__'), "
                             "at most 40 characters, starting with a letter")

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_MAP

    def asset_key(self, asset: str) -> dg.AssetKey:
        import dagster as dg  # here, so that home.py and the numerics' callers import no Dagster

        return dg.AssetKey(asset) if self.is_default else dg.AssetKey([self.name, asset])

    def group(self, group: str) -> str:
        return group if self.is_default else f"{self.name}_{group}"

    def _joined(self, base: str) -> str:
        return base if self.is_default else f"{self.name}__{base}"

    def job(self, job: str) -> str:
        return self._joined(job)

    def sensor(self, sensor: str) -> str:
        return self._joined(sensor)

    def schedule(self, schedule: str) -> str:
        return self._joined(schedule)

    def op(self, op: str) -> str:
        """An op's (or a multi-asset check's) name: the repository's node names are one namespace."""
        return self._joined(op)

    def resource_key(self, resource: str) -> str:
        return self._joined(resource)

    @property
    def partitions(self) -> str:
        """The dynamic partition set holding the map's slices."""
        return self._joined("slices")

    @property
    def training_pool(self) -> str:
        return self.pool("training")

    @property
    def tile_runs_pool(self) -> str:
        """The one-slot pool of the map's ``map_tile_runs`` (one compaction of its tiles at a time)."""
        return self.pool("map_tile_runs")

    def pool(self, pool: str) -> str:
        return pool if self.is_default else f"{self.name}/{pool}"

    def tag(self, tag: str) -> str:
        """A run tag of this map: ``umap_assets/<tag>``, or ``umap_assets/<name>__<tag>`` (Dagster's tag keys
        hold one namespace: a second ``/`` is refused)."""
        return f"umap_assets/{self._joined(tag)}"


#: The names of the map called ``default``: today's, which the modules' constants (``SLICES``, ``TRAINING_POOL``, the
#: planner's job names and tags) are.
DEFAULT_NAMES = MapNames()
