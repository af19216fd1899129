"""How one map's definitions reach that map's resources.

Each wiring module declares its assets, checks, ops and sensors as plain functions whose parameters
name the resources they use (``warehouse``, ``seed``, ...) and, when they look up the instance's
history, ``names`` (the map's :class:`~umap_assets.map_names.MapNames`). :func:`bound` turns such a
function into the compute function Dagster calls: it requires the map's own resource keys
(``warehouse`` for the default map, ``<name>__warehouse`` for another) and hands each one over under
the parameter's name, so two maps in one code location never share a resource by accident.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import dagster as dg

from ..map_names import MapNames

#: The resource parameters a wiring function may take; each is the map's resource of that name.
RESOURCES = ("warehouse", "contract", "seed", "quality_gates", "embedding_engine")


def resource_keys(names: MapNames, fn: Callable) -> set[str]:
    """The map's resource keys that ``fn``'s parameters ask for."""
    return {names.resource_key(p) for p in inspect.signature(fn).parameters if p in RESOURCES}


def bound(names: MapNames, fn: Callable, *, sensor: bool = False) -> Callable:
    """``fn`` as a compute function (an evaluation function when ``sensor``) of ``context`` (and ``config``,
    when ``fn`` takes one): its other parameters are the map's resources and ``names``. Its name and docstring
    are ``fn``'s."""
    params = inspect.signature(fn).parameters
    wanted = [p for p in params if p in RESOURCES]

    def given(context) -> dict:
        found = {p: getattr(context.resources, names.resource_key(p)) for p in wanted}
        return {**found, **({"names": names} if "names" in params else {})}

    if sensor:  # a sensor called directly is also handed its required resources by key: the context has them too
        def compute(context, **_by_key):
            return fn(context, **given(context))
    elif "config" in params:
        def compute(context, config):
            return fn(context, config=config, **given(context))
    elif inspect.isgeneratorfunction(fn):
        def compute(context):
            yield from fn(context, **given(context))
    else:
        def compute(context):
            return fn(context, **given(context))
    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):  # not __wrapped__: Dagster reads the signature
        setattr(compute, attribute, getattr(fn, attribute))
    # what Dagster reads: the context's class, and the config's (the run config's schema)
    compute.__annotations__ = {p: params[p].annotation for p in list(params)[:1] + ["config"] if p in params}
    return compute


def map_asset(names: MapNames, asset: str, fn: Callable, *, group: str, deps: tuple[str, ...] = (),
              partitioned: bool = False, training: bool = False, pool: str | None = None,
              **kwargs) -> dg.AssetsDefinition:
    """The map's asset ``asset`` computed by ``fn``: its key, deps and group the map's, per slice
    (``partitioned``) in the map's ``slices``, in the map's one-slot training pool (``training``) or
    in ``pool`` (a name of the map's, :meth:`MapNames.pool`)."""
    from .partitions import slices_partitions_of

    return dg.asset(key=names.asset_key(asset), deps=[names.asset_key(d) for d in deps], group_name=names.group(group),
                    partitions_def=slices_partitions_of(names) if partitioned else None,
                    pool=names.training_pool if training else pool, required_resource_keys=resource_keys(names, fn),
                    **kwargs)(bound(names, fn))
