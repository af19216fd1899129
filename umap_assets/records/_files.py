"""How a record becomes bytes: named arrays plus a JSON header in one ``.npz``, content-addressed."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes

#: The npz member that holds a record's JSON header (as UTF-8 bytes in a uint8 array).
HEADER = "__header__"


def content_version(arrays: dict[str, np.ndarray], header: dict) -> str:
    """A 16-hex-digit SHA-256 over the arrays (name, dtype, shape, bytes) and the JSON header."""
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()[:16]


def write_once(path: Path, arrays: dict[str, np.ndarray], header: dict) -> int:
    """Write ``arrays`` and ``header`` to ``path`` atomically, unless a record is there already
    (the same version, so the same content); return the file's size."""
    if not path.exists():
        for name, array in arrays.items():
            if array.dtype == object:
                raise TypeError(f"record array {name!r} holds Python objects; records hold plain arrays")
        buffer = io.BytesIO()
        header_bytes = np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)
        np.savez(buffer, **{HEADER: header_bytes}, **arrays)
        atomic_write_bytes(path, buffer.getvalue())
    return path.stat().st_size


def read(path: Path, kind: str) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and header of the record at ``path``; never unpickles (``allow_pickle=False``)."""
    if not path.exists():
        raise FileNotFoundError(f"no {kind} record at {path}; materialize `{kind}` first")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError) as exc:  # an object array (a pickle), or not an npz at all
        raise ValueError(f"{path} is not a {kind} record of plain arrays: {exc}") from exc
    header = json.loads(arrays.pop(HEADER).tobytes().decode())
    if header.get("kind") != kind:
        raise ValueError(f"{path} holds a {header.get('kind')!r} record, not a {kind!r}")
    return arrays, header


def strings(values) -> np.ndarray:
    """A list of str as a fixed-width unicode array (no object dtype)."""
    return np.asarray(list(values), dtype=str) if len(values) else np.empty(0, "<U1")
