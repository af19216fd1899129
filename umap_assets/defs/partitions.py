"""Partitions: one dynamic partition per incoming slice file, a set of them per map."""

import functools

import dagster as dg

from ..map_names import DEFAULT_NAMES, MapNames


@functools.cache
def slices_partitions_of(names: MapNames) -> dg.DynamicPartitionsDefinition:
    """The map's slices: ``slices`` for the default map, ``<name>__slices`` for another."""
    return dg.DynamicPartitionsDefinition(name=names.partitions)


slices_partitions = slices_partitions_of(DEFAULT_NAMES)
