"""The data contract for a slice, and its validation.

A slice is one Parquet file with an ``id`` column (int64 or string, unique), the features (either a
fixed-size list column ``features`` of numbers, or numeric columns named in config) and optionally a
``label`` column (int or string; a null label is an unlabelled row), and the columns the contract
carries (``SliceSpec.carry``: text or numbers, such as a title or a URL, that travel with each row into
the embeddings and the map's hover, find, selection and export). :func:`iter_validated_batches`
streams a slice in chunks, checks
every rule, and yields canonical batches; anything else raises :class:`SliceError`, which names the
file, the column or row, and what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# the features' stored form and their one decoder live in a module that Spark's executors import alone
from .features import (VECTOR_ENCODING, columns_matrix, features_dim, features_list, features_matrix,
                       features_type, is_vector_field, vector_field)

#: Rows per chunk wherever a slice is streamed: 8,192 rows of 784 float32 features are 26 MB, so a
#: reader holds a few of them whatever the size of the file (bench/RESULTS.md, issue 12).
CHUNK_ROWS = 8_192
#: Bytes the Parquet reader buffers per column: it reads pages as it decodes them instead of whole
#: column chunks (``pre_buffer`` off), so a file with huge row groups still streams in flat memory.
READ_BUFFER_BYTES = 1 << 20

#: Columns a contract may carry with each row into the embeddings, and the characters a carried text may hold.
MAX_CARRY = 8
MAX_CARRY_CHARS = 2_000
#: Names a carried column may not take: the canonical slice's, the embeddings' and the map's own columns.
RESERVED_COLUMNS = frozenset({"id", "features", "label", "x", "y", "coverage", "slice", "artifact_version", "distance",
                              "row", "stratum", "split", "filename", "file_row_number"})
_COORDINATE_NAME = re.compile(r"x\d+")

_UNSAFE_KEY_CHARS = re.compile(r"[,|\[\]\s\x00-\x1f\x7f]+|\.{3,}")  # Dagster refuses these in keys


class SliceError(ValueError):
    """A slice broke the data contract. The message names the file and the problem.

    The only failure that rejects a file until it changes (:data:`umap_assets.errors.CONTRACT_VIOLATION`):
    any other failure of an ingest (a full disk, a read-only home, a killed process) leaves the file
    eligible for the next run.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{Path(path).name}: {problem}")


def partition_key_for(path: str | Path) -> str:
    """The Dagster partition key for a slice file: its stem when that is a safe key, else the stem with
    ``, | [ ]``, blanks and control characters made ``_`` plus a hash of the whole name, so that every
    name maps to a valid key and two names never map to the same one (``a b`` -> ``a_b-3f2c1d0e``,
    ``_`` -> ``slice-9b1e...``).
    """
    import hashlib

    name = Path(path).name
    stem = Path(path).stem
    key = _UNSAFE_KEY_CHARS.sub("_", stem).strip("_")[:100]
    if key == stem and key:
        return key
    return f"{key or 'slice'}-{hashlib.sha256(name.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


#: Bytes read at a time when a slice file is hashed.
HASH_CHUNK_BYTES = 1 << 20


def file_identity(path: str | Path) -> str | None:
    """A slice file's identity: its size and a SHA-256 of its whole content (``size:sha256``).

    Copies and renames keep the identity, an edit anywhere (a data page too) changes it, and mtimes
    play no part. The file is streamed in 1 MiB chunks: 0.07 s for 100 MB (1.5 GB/s with the CPU's
    SHA instructions; BLAKE2b measured 0.12 s). ``None`` when the file is not a complete Parquet
    file (no magic bytes at both ends, or a footer that runs past the start): a file still being
    written.
    """
    try:
        with open(path, "rb") as fh:
            return content_identity(fh, fh.seek(0, 2))
    except OSError:
        return None


def content_identity(fh, size: int, checksum: str | None = None, max_footer: int | None = None) -> str | None:
    """The identity of a Parquet file of ``size`` bytes open in ``fh`` (any seekable binary file: on disk,
    or in an object store): ``size:sha256`` of its whole content, or, given the store's ``checksum`` of
    that content, ``size:checksum:footer=sha256`` of its footer alone (two ranged reads). ``None`` when
    it is not a complete Parquet file (no magic bytes at both ends, or a footer that runs past the
    start) or its footer is longer than ``max_footer``."""
    import hashlib
    import struct

    if size < 12:
        return None
    fh.seek(0)
    head = fh.read(4)
    fh.seek(size - 8)
    tail = fh.read(8)
    (footer_len,) = struct.unpack("<I", tail[:4])
    if head != b"PAR1" or tail[4:] != b"PAR1" or footer_len + 12 > size or footer_len > (max_footer or size):
        return None
    digest = hashlib.sha256()
    if checksum is not None:
        fh.seek(size - 8 - footer_len)
        digest.update(fh.read(footer_len))
        return f"{size}:{checksum}:footer={digest.hexdigest()[:32]}"
    fh.seek(0)
    while chunk := fh.read(HASH_CHUNK_BYTES):
        digest.update(chunk)
    return f"{size}:{digest.hexdigest()[:32]}"


@dataclass(frozen=True)
class SliceSpec:
    """How to read a slice: which columns hold the id, the features and the label, and which columns
    it carries into the embeddings (``carry``: at most :data:`MAX_CARRY` string or number columns,
    stored under their own names; a text holds at most :data:`MAX_CARRY_CHARS` characters)."""

    id_column: str = "id"
    features_column: str = "features"
    feature_columns: Sequence[str] | None = None
    label_column: str = "label"
    carry: Sequence[str] = ()

    def __post_init__(self):
        problem = carry_problem(self)
        if problem:
            raise ValueError(f"SliceContract.carry: {problem}")


def carry_problem(spec: SliceSpec) -> str | None:
    """Why ``spec.carry`` cannot be carried (too many, repeated, or a name the map uses), or None."""
    names = list(spec.carry)
    taken = {spec.id_column, spec.features_column, spec.label_column, *(spec.feature_columns or ())}
    if len(names) > MAX_CARRY:
        return f"{len(names)} columns named; at most {MAX_CARRY} travel with each row"
    for name in names:
        if not isinstance(name, str) or not 1 <= len(name) <= 64 or re.search(r'["\x00-\x1f\x7f]', name):
            return f"{name!r} is not a column name (1 to 64 characters, no quote or control character)"
        if name in taken or name in RESERVED_COLUMNS or _COORDINATE_NAME.fullmatch(name):
            return f"'{name}' is a column the contract or the map already uses; rename it in the file"
    if len(set(names)) != len(names):
        return f"a column is named twice in {names}"
    return None


def carried_columns(names: Sequence[str]) -> list[str]:
    """The carried columns of an embeddings file or a canonical slice, from its column names: every
    column that is not one of the project's own (id, features, label, coordinates, coverage, version)."""
    return [n for n in names if n not in RESERVED_COLUMNS and not _COORDINATE_NAME.fullmatch(n)]


def canonical_spec(path: str | Path) -> SliceSpec:
    """How to read a canonical slice of the warehouse: the default columns, carrying what it carries."""
    return SliceSpec(carry=tuple(carried_columns(pq.read_schema(path).names)))


def carried_type(t: pa.DataType) -> pa.DataType | None:
    """How a carried column is stored: int64, float64 or string; None for a type that cannot be carried."""
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return pa.float64()
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        return pa.string()
    return None


def carried_fields(schema: pa.Schema, spec: SliceSpec) -> list[pa.Field]:
    """The canonical fields of ``spec.carry`` in ``schema`` (checked by :func:`check_schema`)."""
    return [pa.field(name, carried_type(schema.field(name).type)) for name in spec.carry]


@dataclass
class SliceBatch:
    """One validated chunk of a slice, in canonical form."""

    ids: pa.Array
    features: np.ndarray  # (n, d) float32, C-contiguous, finite
    labels: pa.Array | None
    offset: int  # row number of the first row in the file
    carried: dict[str, pa.Array] = field(default_factory=dict)  # SliceSpec.carry's columns, canonical types

    def to_arrow(self) -> pa.RecordBatch:
        return canonical_batch(self.ids, self.features, self.labels, self.carried)


@dataclass
class SliceSummary:
    rows: int = 0
    dim: int | None = None
    id_type: str = ""
    label_type: str | None = None
    label_counts: dict[str, int] = field(default_factory=dict)  # the labelled rows, per label
    unlabelled: int = 0  # rows whose label is null (0 when the slice has no label column)
    refused: "RefusedRows | None" = None  # rows left out: their ids were already in other slices


@dataclass(frozen=True)
class RefusedRows:
    """Rows of a slice left out because their ids are already in another slice of the home."""

    count: int
    first_ids: list  # up to 5, sorted
    owner: str  # the slice that holds the first of them

    def line(self, name: str) -> str:
        ids = ", ".join(map(repr, self.first_ids)) + (", ..." if self.count > len(self.first_ids) else "")
        return (f"{name}: {self.count} row(s) refused: their ids are already in slice '{self.owner}' "
                f"(ids {ids}); an id is on the map once")


def canonical_schema(dim: int, id_type: pa.DataType, label_type: pa.DataType | None,
                     carried: Sequence[pa.Field] = ()) -> pa.Schema:
    """id, features, [label], then the carried columns under their own names."""
    fields = [pa.field("id", id_type, nullable=False), vector_field("features", dim)]
    if label_type is not None:
        fields.append(pa.field("label", label_type))
    return pa.schema(fields + list(carried))


def canonical_batch(ids: pa.Array, features: np.ndarray, labels: pa.Array | None,
                    carried: dict[str, pa.Array] | None = None) -> pa.RecordBatch:
    n, d = features.shape
    raw = np.ascontiguousarray(features, dtype="<f4")
    feats = pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 * d), n, [None, pa.py_buffer(raw)])
    carried = carried or {}
    arrays = [ids, feats] + ([labels] if labels is not None else []) + list(carried.values())
    schema = canonical_schema(d, ids.type, labels.type if labels is not None else None,
                              [pa.field(name, a.type) for name, a in carried.items()])
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def write_options(schema: pa.Schema) -> dict:
    """How every table this project writes is encoded (``pq.ParquetWriter``'s keyword arguments).

    Features stored as float32 bytes are not compressed: they decode 2.7 times faster than with
    LZ4 (1.2 µs a 784-d row instead of 3.3, bench/RESULTS.md, session 14), which kept embedding
    from the model's speed. Embeddings' floats do not compress anyway; sparse pixels take 2.5 times
    the disk. A list's values are LZ4, the fastest to decode of the list encodings measured. Other
    columns are zstd. Floats (coordinates, a list's values) are byte-stream-split: dictionary pages
    rarely pay for floats, and trying them costs the writer about 0.3 µs a row. Every other column
    gets a dictionary. Every page carries a CRC checksum, which every reader here verifies
    (:func:`parquet_reader`, :func:`read_verified`): a byte changed after the write is named, never read.
    """
    leaves = _leaf_paths(schema)
    vectors = [f.name for f in schema if is_vector_field(f)]
    lists = [path for path in leaves if "." in path]
    floats = [path for path in leaves if _is_float_leaf(schema.field(path.split(".")[0]).type)]
    codec = {**{path: "zstd" for path in leaves}, **{path: "lz4" for path in lists}, **{name: "none" for name in vectors}}
    return {
        "compression": codec,
        "use_dictionary": [path for path in leaves if path not in vectors + lists + floats],
        "use_byte_stream_split": floats,
        "write_page_checksum": True,
    }


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)


def _is_float_leaf(t: pa.DataType) -> bool:
    return pa.types.is_floating(t.value_type if _is_list(t) else t)


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """The Parquet column paths of ``schema``'s leaves (``features.list.element`` for a list)."""
    paths = []
    for f in schema:
        if _is_list(f.type):
            paths.append(f"{f.name}.list.element")  # pyarrow writes Parquet's compliant three-level lists
        else:
            paths.append(f.name)
    return paths


def iter_chunks(pf: pq.ParquetFile, columns: list[str], batch_rows: int = CHUNK_ROWS) -> Iterator[pa.RecordBatch]:
    """``pf``'s rows in batches of at most ``batch_rows``, sized to split its row groups evenly.

    A batch that spans two row groups costs the reader a concatenation: float32 bytes then decode
    1.5 to 2.3 times more slowly (bench/RESULTS.md, session 12). Files are written in row groups of
    one size (the last one shorter), so batches of ``ceil(group / ceil(group / batch_rows))`` rows
    never span one. The batches come from one reader, decoded in this thread (a reader per row group
    costs milliseconds each).
    """
    size = batch_rows
    group = pf.metadata.row_group(0).num_rows if pf.num_row_groups else 0
    if group:
        parts = -(-group // batch_rows)  # ceiling divisions
        size = -(-group // parts)
    yield from pf.iter_batches(batch_size=size, columns=columns, use_threads=False)


def parquet_reader(path: str | Path) -> pq.ParquetFile:
    """A Parquet file opened for streaming: pages are read as they are decoded (bounded buffers), and
    each page that carries a checksum (every page this project writes) is verified against it."""
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=READ_BUFFER_BYTES, page_checksum_verification=True)


class DamagedFile(OSError):
    """A file this project wrote whose pages no longer match their checksums; the message names it."""

    def __init__(self, path: str | Path, cause: BaseException):
        self.path = str(path)
        super().__init__(f"{path}: damaged: a page no longer matches its checksum ({cause})")


def read_verified(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """``pq.read_table`` with every page's checksum verified (see :func:`parquet_reader`); a page that
    fails raises :class:`DamagedFile`."""
    try:
        return pq.read_table(path, columns=columns, page_checksum_verification=True)
    except OSError as exc:
        raise (DamagedFile(path, exc) if is_checksum_error(exc) else exc) from exc


def is_checksum_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a reader's report of a page whose bytes do not match their checksum."""
    return isinstance(exc, OSError) and "checksum verification failed" in str(exc)


def open_parquet(path: Path) -> pq.ParquetFile:
    """A slice file opened with :func:`parquet_reader`; :class:`SliceError` when it is missing, empty or not Parquet."""
    if not path.exists():
        raise SliceError(path, "file not found")
    if path.stat().st_size == 0:
        raise SliceError(path, "empty file (0 bytes); expected a Parquet file")
    try:
        return parquet_reader(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SliceError(path, f"not a Parquet file ({exc})") from exc


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def check_schema(path: Path, schema: pa.Schema, spec: SliceSpec) -> None:
    """Raise :class:`SliceError` unless ``schema`` has the contract's id, features and label columns."""
    names = set(schema.names)
    if spec.id_column not in names:
        raise SliceError(path, f"missing id column '{spec.id_column}' (found columns: {sorted(names)})")
    id_type = schema.field(spec.id_column).type
    if not (pa.types.is_integer(id_type) or pa.types.is_string(id_type) or pa.types.is_large_string(id_type)):
        raise SliceError(path, f"column '{spec.id_column}' has type {id_type}; expected int64 or string ids")
    if spec.feature_columns:
        missing = [c for c in spec.feature_columns if c not in names]
        if missing:
            raise SliceError(path, f"missing feature columns {missing} named in config")
        for col in spec.feature_columns:
            t = schema.field(col).type
            if not _is_numeric(t):
                raise SliceError(path, f"feature column '{col}' has type {t}; expected a numeric type")
    else:
        _check_features_column(path, schema, spec)
    if spec.label_column in names:
        t = schema.field(spec.label_column).type
        if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
            raise SliceError(path, f"column '{spec.label_column}' has type {t}; expected int or string labels "
                             "(null where a row has none)")
    _check_carried_schema(path, schema, spec)


def _check_carried_schema(path: Path, schema: pa.Schema, spec: SliceSpec) -> None:
    """Each column of ``spec.carry`` is in the file, as text or numbers."""
    for name in spec.carry:
        if name not in schema.names:
            raise SliceError(path, f"missing column '{name}' that SliceContract.carry names "
                                   f"(found columns: {sorted(schema.names)})")
        if carried_type(schema.field(name).type) is None:
            raise SliceError(path, f"carried column '{name}' has type {schema.field(name).type}; expected a string "
                                   "or number column (SliceContract.carry)")


def _checked_carried(path: Path, batch: pa.RecordBatch, spec: SliceSpec, offset: int) -> dict[str, pa.Array]:
    """The batch's carried columns in their canonical types; a text longer than :data:`MAX_CARRY_CHARS` is refused."""
    out = {}
    for name in spec.carry:
        column = batch.column(name)
        column = column.cast(carried_type(column.type))
        if pa.types.is_string(column.type) and len(column) - column.null_count:
            lengths = pc.utf8_length(column).fill_null(0).to_numpy(zero_copy_only=False)
            if lengths.max() > MAX_CARRY_CHARS:
                r = int(np.argmax(lengths > MAX_CARRY_CHARS))
                raise SliceError(path, f"carried column '{name}' holds {int(lengths[r]):,} characters at row "
                                       f"{offset + r}; expected at most {MAX_CARRY_CHARS:,}")
        out[name] = column
    return out


def _check_features_column(path: Path, schema: pa.Schema, spec: SliceSpec) -> None:
    """A list of numbers, or float32 bytes as the warehouse stores them (:func:`vector_field`)."""
    if spec.features_column not in schema.names:
        raise SliceError(
            path,
            f"missing features: expected a list column '{spec.features_column}' of float32, "
            f"or numeric columns named in config (found columns: {sorted(schema.names)})",
        )
    f = schema.field(spec.features_column)
    if is_vector_field(f):
        return
    if not _is_list(f.type):
        raise SliceError(path, f"column '{spec.features_column}' has type {f.type}; expected a fixed-size list of float32")
    if not _is_numeric(f.type.value_type):
        raise SliceError(path, f"column '{spec.features_column}' holds {f.type.value_type} values; expected numeric (float32)")


def _features_from_batch(path: Path, batch: pa.RecordBatch, spec: SliceSpec, offset: int) -> np.ndarray:
    if spec.feature_columns:
        for name in spec.feature_columns:
            col = batch.column(name)
            if col.null_count:
                row = offset + int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
                raise SliceError(path, f"feature column '{name}' is null at row {row}")
        return columns_matrix([batch.column(name) for name in spec.feature_columns])
    col = batch.column(spec.features_column)
    if col.null_count:
        row = offset + int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise SliceError(path, f"column '{spec.features_column}' is null at row {row}")
    if pa.types.is_fixed_size_binary(col.type):  # checked to be float32 bytes by check_schema
        return features_matrix(col)
    if pa.types.is_fixed_size_list(col.type):
        d = col.type.list_size
    else:
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        d = int(lengths[0]) if len(lengths) else 0
        bad = np.flatnonzero(lengths != d)
        if bad.size:
            r = int(bad[0])
            raise SliceError(
                path,
                f"column '{spec.features_column}' has {lengths[r]} values at row {offset + r} but {d} at "
                f"row {offset}; expected a fixed dimension",
            )
    values = col.flatten()
    if values.null_count:
        flat_row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0]) // max(d, 1)
        raise SliceError(path, f"column '{spec.features_column}' has a null value at row {offset + flat_row}")
    return features_matrix(col)


def iter_validated_batches(
    path: str | Path,
    spec: SliceSpec = SliceSpec(),
    *,
    expected_dim: int | None = None,
    batch_rows: int = CHUNK_ROWS,
    summary: SliceSummary | None = None,
    expected_dim_source: str = "the other slices have",
    check_unique_ids: bool = True,
) -> Iterator[SliceBatch]:
    """Stream a slice in validated, canonical chunks.

    Raises :class:`SliceError` on the first broken rule. Duplicate ids are only known at the end,
    so the last check runs after the last batch: consumers must not publish anything until the
    iterator is exhausted (see :func:`umap_assets.warehouse.write_canonical_slice`).
    """
    path = Path(path)
    pf = open_parquet(path)
    check_schema(path, pf.schema_arrow, spec)
    summary = summary if summary is not None else SliceSummary()
    has_label = spec.label_column in pf.schema_arrow.names
    columns = ([spec.id_column, *(spec.feature_columns or [spec.features_column])] + ([spec.label_column] if has_label else [])
               + list(spec.carry))
    id_chunks: list[pa.Array] = []
    label_counts: dict[str, int] = {}
    unlabelled = 0
    offset = 0
    try:
        for batch in iter_chunks(pf, columns, batch_rows):
            if batch.num_rows == 0:
                continue
            ids = _checked_ids(path, batch, spec, offset)
            X = _features_from_batch(path, batch, spec, offset)
            _check_dim(path, X.shape[1], offset, summary, expected_dim, expected_dim_source)
            _check_finite(path, X, ids, offset)
            labels = _checked_labels(batch, spec, label_counts) if has_label else None
            unlabelled += labels.null_count if labels is not None else 0
            if check_unique_ids:
                id_chunks.append(ids)
            carried = _checked_carried(path, batch, spec, offset)
            yield SliceBatch(ids=ids, features=X, labels=labels, offset=offset, carried=carried)
            offset += batch.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        if is_checksum_error(exc):
            raise SliceError(path, f"damaged: a page no longer matches its checksum ({exc})") from exc
        raise SliceError(path, f"unreadable Parquet data ({exc})") from exc
    if offset == 0:
        raise SliceError(path, "the file has no rows")
    summary.rows = offset
    if check_unique_ids:
        all_ids = pa.chunked_array(id_chunks)
        _check_unique(path, all_ids, spec)
        summary.id_type = str(all_ids.type)
        summary.label_type = None if not has_label else _label_type(pf.schema_arrow.field(spec.label_column).type)
        summary.label_counts = dict(sorted(label_counts.items()))
        summary.unlabelled = unlabelled


def _first_null(column: pa.Array, offset: int) -> int:
    return offset + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])


def _checked_ids(path: Path, batch: pa.RecordBatch, spec: SliceSpec, offset: int) -> pa.Array:
    """The batch's ids, as int64 or string; no nulls."""
    ids = batch.column(spec.id_column)
    if ids.null_count:
        raise SliceError(path, f"column '{spec.id_column}' is null at row {_first_null(ids, offset)}; every row needs an id")
    return ids.cast(pa.int64()) if pa.types.is_integer(ids.type) else ids.cast(pa.string())


def _check_dim(path: Path, d: int, offset: int, summary: SliceSummary, expected_dim: int | None, source: str) -> None:
    """One positive dimension for the whole slice, and the one the home expects."""
    if d == 0:
        raise SliceError(path, "features have dimension 0; expected at least one value per row")
    if summary.dim is None:
        summary.dim = d
        if expected_dim is not None and d != expected_dim:
            raise SliceError(path, f"features have dimension {d}, but {source} dimension {expected_dim}")
    elif d != summary.dim:
        raise SliceError(path, f"features have dimension {d} at row {offset}, but {summary.dim} before it")


def _check_finite(path: Path, X: np.ndarray, ids: pa.Array, offset: int) -> None:
    with np.errstate(over="ignore"):  # huge finite values may overflow the sum: the slow check decides
        if np.isfinite(X.sum()):  # a NaN or an inf makes the sum NaN or inf
            return
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        r = int(np.flatnonzero(~finite)[0])
        bad_val = X[r][~np.isfinite(X[r])][0]
        raise SliceError(path, f"features hold {bad_val} at row {offset + r} (id {ids[r].as_py()}); expected finite numbers")


def _label_type(t: pa.DataType) -> str:
    """How a label column is stored: int64 for integers, string otherwise (a column of nulls too)."""
    return "int64" if pa.types.is_integer(t) else "string"


def _checked_labels(batch: pa.RecordBatch, spec: SliceSpec, counts: dict[str, int]) -> pa.Array:
    """The batch's labels, as int64 or string, null where a row is unlabelled; adds the counts of
    the labelled rows to ``counts``."""
    labels = batch.column(spec.label_column)
    labels = labels.cast(pa.int64()) if _label_type(labels.type) == "int64" else labels.cast(pa.string())
    count_labels(labels, counts)
    return labels


def count_labels(labels: pa.Array | pa.ChunkedArray, counts: dict[str, int]) -> int:
    """Add the counts of the labelled rows of ``labels`` to ``counts`` (by label, as text); the number
    of unlabelled (null) rows."""
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks()
    for value, count in zip(*_value_counts(labels.drop_null())):
        counts[str(value)] = counts.get(str(value), 0) + count
    return labels.null_count


def _check_unique(path: Path, all_ids: pa.ChunkedArray, spec: SliceSpec) -> None:
    n_unique = len(pc.unique(all_ids))
    if n_unique != len(all_ids):
        counts = pc.value_counts(all_ids)
        dup = next(item["values"].as_py() for item in counts if item["counts"].as_py() > 1)
        raise SliceError(
            path, f"column '{spec.id_column}' has {len(all_ids) - n_unique} duplicate ids (for example {dup!r}); "
            "expected unique ids"
        )


def _value_counts(arr: pa.Array) -> tuple[list, list[int]]:
    vc = pc.value_counts(arr)
    return vc.field("values").to_pylist(), vc.field("counts").to_pylist()


