"""Partitions: one dynamic partition per incoming slice file."""

import dagster as dg

from ..discovery import SLICES

slices_partitions = dg.DynamicPartitionsDefinition(name=SLICES)
