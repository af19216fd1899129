"""Partitions: one dynamic partition per incoming slice file."""

import dagster as dg

slices_partitions = dg.DynamicPartitionsDefinition(name="slices")
