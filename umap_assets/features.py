"""How a slice's features are stored, and the one decoder that turns them into a matrix.

Part of the data contract (:mod:`umap_assets.contract` re-exports every name here), kept in a module
of its own that imports numpy and pyarrow and nothing else, so that Spark's executors import it
alone (the Spark engine ships it with ``addPyFile``, as it ships the runtime): the local engine,
ingest and the Spark engine decode features with the same functions.

The forms a features column takes: float32 bytes (fixed-size binary, the canonical stored form; or
variable-width binary of one width, as Spark reads it back), a list of numbers of one length (fixed
size or not), or numeric columns, one a feature.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

#: Field metadata that marks a ``fixed_size_binary(4 * d)`` column as ``d`` float32 values a row,
#: little-endian: the canonical, stored form of the features.
VECTOR_ENCODING = {b"umap_assets.encoding": b"float32-le"}
_F32 = np.dtype("<f4")


def features_type(dim: int) -> pa.DataType:
    """The contract's list form of the features: ``dim`` float32 values, none of them null
    (how the demo and the benchmarks write a user's slice)."""
    return pa.list_(pa.field("element", pa.float32(), nullable=False), dim)


def features_list(X: np.ndarray) -> pa.FixedSizeListArray:
    """The rows of ``X`` as a list-form ``features`` column (:func:`features_type`)."""
    flat = pa.array(np.ascontiguousarray(X, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, type=features_type(X.shape[1]))


def vector_field(name: str, dim: int) -> pa.Field:
    """The canonical ``features`` field: each row's ``dim`` float32 values as ``4 * dim`` bytes.

    Parquet stores a list with a repetition and a definition level per value, and rebuilding the
    list from them is what bounds reading: fixed-size bytes decode six times as fast, uncompressed,
    and the bytes are the matrix (zero-copy). DuckDB reads the column as a BLOB (bench/RESULTS.md,
    session 12).
    """
    return pa.field(name, pa.binary(4 * dim), nullable=False, metadata=VECTOR_ENCODING)


def is_vector_field(f: pa.Field) -> bool:
    """``f`` holds features as float32 bytes (:func:`vector_field`)."""
    return (pa.types.is_fixed_size_binary(f.type) and f.type.byte_width % 4 == 0
            and (f.metadata or {}).get(b"umap_assets.encoding") == VECTOR_ENCODING[b"umap_assets.encoding"])


def features_dim(f: pa.Field) -> int | None:
    """The dimension a features field declares; ``None`` for a variable-length list."""
    if is_vector_field(f):
        return f.type.byte_width // 4
    return f.type.list_size if pa.types.is_fixed_size_list(f.type) else None


def _vectors(column: pa.FixedSizeBinaryArray) -> np.ndarray:
    """A float32-bytes column as an (n, d) matrix, without a copy (read-only) on a little-endian host."""
    width = column.type.byte_width
    values = np.frombuffer(column.buffers()[1], dtype=_F32, count=len(column) * width // 4,
                           offset=column.offset * width)
    return values.reshape(len(column), width // 4).astype(np.float32, copy=False)


def _binary_vectors(column: pa.Array) -> np.ndarray:
    """Float32 bytes of one width in a variable-width binary column (Spark's form of the stored column)."""
    n = len(column)
    kind = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    offsets = np.frombuffer(column.buffers()[1], dtype=kind, count=n + 1, offset=column.offset * kind().itemsize)
    width = int(offsets[1] - offsets[0]) if n else 0
    if width % 4 or (n and int(offsets[-1] - offsets[0]) != n * width):
        raise ValueError("features hold float32 bytes of different lengths; expected one dimension")
    values = np.frombuffer(column.buffers()[2], dtype=_F32, count=n * width // 4, offset=int(offsets[0]) if n else 0)
    return values.reshape(n, width // 4)


def _list_dim(column: pa.Array) -> int:
    """The length of a list column's rows (the first row's, for a list without a fixed size)."""
    if pa.types.is_fixed_size_list(column.type):
        return column.type.list_size
    return len(column[0].values) if len(column) else 0


def features_matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One features column as an (n, d) float32 matrix: the contract's one decoder.

    Float32 bytes (fixed-size binary, read without a copy; or binary of one width) or lists of
    numbers of one length (fixed size or not, cast to float32). Nulls and lists of other lengths are
    the contract's to refuse first (:func:`umap_assets.contract.iter_validated_batches`).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_fixed_size_binary(column.type):
        return _vectors(column)
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return _binary_vectors(column)
    d = _list_dim(column)
    values = column.flatten().cast(pa.float32()).to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values.reshape(-1, d), dtype=np.float32)


def columns_matrix(columns: Sequence[pa.Array | pa.ChunkedArray]) -> np.ndarray:
    """Numeric feature columns, one a feature, as an (n, d) float32 matrix."""
    cols = [column.cast(pa.float64()).to_numpy(zero_copy_only=False) for column in columns]
    return np.ascontiguousarray(np.column_stack(cols), dtype=np.float32) if cols else np.empty((0, 0), np.float32)
