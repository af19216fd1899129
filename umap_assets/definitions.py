"""The code location: every definition under :mod:`umap_assets.defs`."""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


def load_definitions() -> dg.Definitions:
    """The same definitions, resolved eagerly (for the CLI and tests)."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
