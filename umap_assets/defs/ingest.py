"""Per-slice assets: ``raw_slices`` (validated, canonical) and ``samples`` (stratified)."""


import contextlib
import functools
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from ..discovery import SOURCE_IDENTITY
from ..contract import SliceError, features_matrix, iter_chunks, parquet_reader, read_verified
from ..errors import CONTRACT_VIOLATION, NOTICE, describe_os_error
from ..home_contract import CONTRACT_FILE, HomeContract, check_slice, slice_facts
from ..numerics.sampling import ClusterStrata, derive_seed, effective_rate, fit_rows, held_out_ids, stratified_sample
from ..warehouse import home_relative, publish_catalog, record_slice, take_rows, write_canonical_slice, write_table
from ..map_names import DEFAULT_NAMES, MapNames
from ..sources import Source, source_record
from .binding import map_asset
from .groups import INGEST
from .resources import Seed, SliceContract, WarehouseResource


def find_source_file(source: Source, key: str) -> str:
    """The name of the file of the map's ``source`` whose partition key is ``key``."""
    matches = source.names_for_key(key)
    if not matches:
        raise dg.Failure(f"slice '{key}': no Parquet file in {source} has this partition key")
    if len(matches) > 1:
        raise dg.Failure(f"slice '{key}': several files map to this partition key: {matches}")
    return matches[0]


def compute_raw_slices(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, contract: SliceContract
) -> dg.MaterializeResult:
    """One slice file of the map's source, validated against the data contract and written in canonical form.

    Canonical form: ``id`` (int64 or string), ``features`` (fixed-size list of float32) and
    ``label`` when present. A slice that breaks the contract fails with a message that names the
    file and the problem, and nothing of it reaches the warehouse. A file in an object store is read
    from a local copy checked against its identity (:meth:`~umap_assets.sources.Source.local_copy`).
    """
    key = context.partition_key
    layout = warehouse.layout()
    wh = warehouse.warehouse()
    found = warehouse.slice_source(layout)
    name = find_source_file(found, key)
    destination = wh.table_path("raw_slices", key)
    started = time.perf_counter()
    with machine_failures(key, destination), found.local_copy(name, layout.cache / "sources") as (source, identity):
        summary = ingest_slice_file(key, source, destination, contract, layout.home / CONTRACT_FILE, found.where(name))
        if summary.refused is not None:
            context.log.warning(summary.refused.line(name))
        size = destination.stat().st_size
        record_slice(wh, key, {
            "rows": summary.rows, "dim": summary.dim, "bytes": size, "label_counts": summary.label_counts,
            "path": home_relative(destination, layout.home), "source": source_record(found, name, layout.home),
        })
        publish_catalog(wh)
    schema = pq.read_schema(destination)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary.rows,
            "dimensions": summary.dim,
            "bytes": size,
            "source": dg.MetadataValue.path(found.where(name)),
            SOURCE_IDENTITY: identity or "",
            "path": dg.MetadataValue.path(str(destination)),
            "label_counts": dg.MetadataValue.json(summary.label_counts),
            "unlabelled_rows": summary.unlabelled,
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(f.name, str(f.type)) for f in schema]
            ),
            "seconds": round(time.perf_counter() - started, 3),
            "refused_rows": summary.refused.count if summary.refused else 0,
            **({NOTICE: summary.refused.line(name)} if summary.refused else {}),
        }
    )


def ingest_slice_file(key: str, source: Path, destination: Path, contract: SliceContract, contract_path: Path,
                      shown: str | None = None):
    """Validate ``source`` against the home contract and write it canonically, leaving out rows whose
    ids are in another slice; a contract failure is a ``dg.Failure`` marked :data:`CONTRACT_VIOLATION`,
    naming the file as ``shown`` (its path or URL in the map's source; default ``source``)."""
    try:
        home_contract, claimed = settle_contract(source, key, contract, contract_path)
        try:
            return write_canonical_slice(source, destination, contract.spec(), expected_dim=home_contract.dim,
                                         unique_in_home=True)
        except SliceError:
            if claimed:  # the first slice broke the rules after recording the contract: take it back
                contract_path.unlink(missing_ok=True)
            raise
    except SliceError as exc:
        shown = shown or str(source)
        raise dg.Failure(description=f"slice '{key}' rejected: {Path(shown).name}: {exc.problem}",
                         metadata={"file": shown, CONTRACT_VIOLATION: True}) from exc


@contextlib.contextmanager
def machine_failures(key: str, where: Path) -> Iterator[None]:
    """A failure of the machine (a full disk, a read-only home, an I/O error) as one line, not marked
    as a verdict on the slice: the next run tries the file again."""
    try:
        yield
    except OSError as exc:
        raise dg.Failure(description=f"slice '{key}': {describe_os_error(exc, where)} (the file stays eligible: "
                                     "the next run tries it again)") from exc


def settle_contract(source: Path, key: str, contract: SliceContract, path: Path) -> tuple[HomeContract, bool]:
    """The home contract that ``source`` must meet, and whether this slice just recorded it.

    Raises :class:`SliceError` when the slice's schema breaks it, before any data is read.
    """
    facts = slice_facts(source, contract.spec(), key)
    home_contract = contract.declared() or HomeContract.load(path)
    claimed = False
    if home_contract is None:
        home_contract = facts.claim(path)
        claimed = home_contract is facts
    check_slice(source, facts, home_contract, path)
    return home_contract, claimed


class SampleConfig(dg.Config):
    """How a slice is sampled."""

    rate: float = Field(1.0, gt=0, le=1)
    max_rows: int | None = Field(20_000, ge=1)  # per slice: a large slice is sampled at max_rows / n instead
    floor: int = Field(50, ge=0)
    # the quality report measures on validation rows: without them no model can pass its gates
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    n_clusters: int = Field(10, ge=1)
    pca_dim: int = Field(16, ge=1)
    max_fit_rows: int = Field(50_000, ge=1)  # rows the k-means strata are fitted on (unlabelled slices)


def compute_samples(
    context: dg.AssetExecutionContext, config: SampleConfig, warehouse: WarehouseResource, seed: Seed
) -> dg.MaterializeResult:
    """A stratified sample of one slice, with a fixed fraction held out as ``validation``.

    Strata are the label when there is one (the unlabelled rows of a partly labelled slice make one
    stratum of their own), otherwise k-means clusters on a PCA projection. Each
    stratum gets ``max(floor, round(rate * n))`` rows (capped at n), where the rate is lowered to
    ``max_rows / n`` for a slice of more than ``max_rows`` rows, drawn with a seed derived from the
    project's (:class:`~umap_assets.defs.resources.Seed`) and the partition key, so the sample is identical on every re-run. Validation rows never train a
    model; the quality report measures on them.
    """
    key = context.partition_key
    wh = warehouse.warehouse()
    source = wh.table_path("raw_slices", key)
    slice_seed = derive_seed(seed.value, key)
    source_file = parquet_reader(source)
    n_rows = source_file.metadata.num_rows
    has_label = "label" in source_file.schema_arrow.names
    columns = read_verified(source, columns=["id", "label"] if has_label else ["id"])
    labels = columns.column("label") if has_label else None
    if labels is not None and labels.null_count < len(labels):
        strata_kind = "label"
        strata = label_strata(labels)
    else:  # no label column, or no row labelled
        strata_kind = "kmeans"
        strata = streamed_cluster_strata(source, n_rows, config, slice_seed)
    rate = effective_rate(n_rows, config.rate, config.max_rows)
    held = held_out_ids(columns.column("id"), config.validation_fraction, seed.value)
    sample = stratified_sample(strata, rate=rate, floor=config.floor, validation_fraction=config.validation_fraction,
                               seed=slice_seed, held_out=held)
    kept = [c for c in ("id", "features", "label") if c in source_file.schema_arrow.names]  # not the carried columns
    picked = take_rows(source, sample.indices, kept)  # only the sampled rows are ever in memory
    n = len(sample.indices)
    out = picked.append_column("stratum", pa.array(strata[sample.indices].astype(str)))
    out = out.append_column("split", pa.array(np.where(sample.validation, "validation", "train")))
    out = out.append_column("row", pa.array(sample.indices, type=pa.int64()))
    out = out.add_column(0, "slice", pa.array([key] * n, type=pa.string()))
    with machine_failures(key, wh.table_path("samples", key)):
        size = write_table(out, wh.table_path("samples", key))
    rows = "\n".join(
        f"| {s} | {c['rows']} | {c['sampled']} | {c['validation']} |" for s, c in sample.counts.items()
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n,
            "source_rows": n_rows,
            "validation_rows": sample.n_validation,
            "sample_rate": rate,
            "floor": config.floor,
            "strata": strata_kind,
            "seed": slice_seed,
            "bytes": size,
            "counts_per_stratum": dg.MetadataValue.md(
                "| stratum | rows | sampled | validation |\n|---|---|---|---|\n" + rows
            ),
            "counts_json": dg.MetadataValue.json(sample.counts),
        }
    )


#: The stratum of the rows without a label in a partly labelled slice.
UNLABELLED_STRATUM = "(unlabelled)"


def label_strata(labels: pa.ChunkedArray) -> np.ndarray:
    """The labels as a compact numpy array: integers as they are, strings through Arrow's
    dictionary (never one Python object per row). Null labels, when there are any, make the stratum
    :data:`UNLABELLED_STRATUM` (and the labels are then strings)."""
    if pa.types.is_integer(labels.type) and not labels.null_count:
        return labels.to_numpy()
    encoded = pc.dictionary_encode(pc.fill_null(labels.cast(pa.string()), UNLABELLED_STRATUM)).combine_chunks()
    values = np.asarray(encoded.dictionary.to_pylist(), dtype=str)
    return values[encoded.indices.to_numpy()]


def streamed_cluster_strata(source: Path, n_rows: int, config: SampleConfig, seed: int) -> np.ndarray:
    """k-means strata for an unlabelled slice: fitted on a subsample, predicted batch by batch."""
    fit_at = fit_rows(n_rows, config.max_fit_rows, seed)  # in draw order: k-means is order-sensitive
    order = np.argsort(fit_at)
    X_sorted = features_matrix(take_rows(source, fit_at[order], ["features"]).column("features"))
    X_fit = np.empty_like(X_sorted)
    X_fit[order] = X_sorted
    model = ClusterStrata(config.n_clusters, config.pca_dim, seed).fit(X_fit)
    parts = [
        model.predict(features_matrix(batch.column("features")))
        for batch in iter_chunks(parquet_reader(source), ["features"])
    ]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


@functools.cache
def ingest_definitions(names: MapNames) -> dg.Definitions:
    """The map's ``raw_slices`` and ``samples`` (per slice) and its job ``ingest_slice``."""
    raw = map_asset(names, "raw_slices", compute_raw_slices, group=INGEST, partitioned=True, kinds={"parquet", "duckdb"})
    sampled = map_asset(names, "samples", compute_samples, group=INGEST, deps=("raw_slices",), partitioned=True,
                        kinds={"parquet", "numpy"})
    job = dg.define_asset_job(names.job("ingest_slice"), selection=dg.AssetSelection.groups(names.group(INGEST)),
                              description="Validate one slice and draw its stratified sample.")
    return dg.Definitions(assets=[raw, sampled], jobs=[job])


definitions = ingest_definitions
raw_slices, samples = ingest_definitions(DEFAULT_NAMES).assets
(ingest_job,) = ingest_definitions(DEFAULT_NAMES).jobs
