"""The artifact runtime: load a compressed student and map rows to the UMAP plane, with numpy only.

This module imports nothing but numpy and the standard library, so an artifact file can be
broadcast to any worker (a Spark executor, a batch job) that has numpy.

File layout (format version 1)::

    b"UMAPART\\x01" | uint32 little-endian manifest length | manifest (UTF-8 JSON) | payload

The payload is an LZMA-compressed concatenation of the arrays that the manifest lists (name,
dtype, shape, offset). ``manifest["sha256"]`` is the SHA-256 of the compressed payload. Each layer
is ``y = act(x @ W.T + b)`` with symmetric int8 weights ``W = q * scale``, one scale per output channel
and group of inputs (the output layer may be stored as float32);
sparse layers store a bit mask of the non-zero weights plus only those values. Input
standardisation and output scaling are folded into the first and last layers.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"UMAPART\x01"
FORMAT_VERSION = 1
ACTIVATIONS = ("relu", "none")


class ArtifactError(ValueError):
    """A file is not a valid artifact, is corrupt, or does not fit the input it is given."""


@dataclass
class Layer:
    weight_t: np.ndarray  # (in, out) float32, C-contiguous, dequantised once at load
    bias: np.ndarray  # (out,) float32
    activation: str


def read_container(data: bytes, source: str = "<bytes>") -> tuple[dict, dict[str, np.ndarray]]:
    """Parse and verify an artifact's bytes; return its manifest and arrays."""
    if len(data) < len(MAGIC) + 4 or data[: len(MAGIC) - 1] != MAGIC[:-1]:
        raise ArtifactError(f"{source}: not a umap-assets artifact (bad magic bytes)")
    if data[len(MAGIC) - 1] != MAGIC[-1]:
        raise ArtifactError(f"{source}: artifact container version {data[len(MAGIC) - 1]} is not supported")
    (mlen,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    if start + mlen > len(data):
        raise ArtifactError(f"{source}: truncated artifact (manifest runs past the end of the file)")
    try:
        manifest = json.loads(data[start : start + mlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{source}: corrupt artifact manifest ({exc})") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{source}: artifact format version {manifest.get('format_version')!r} is not supported "
            f"(this runtime reads version {FORMAT_VERSION})"
        )
    payload = data[start + mlen :]
    digest = hashlib.sha256(payload).hexdigest()
    if digest != manifest.get("sha256"):
        raise ArtifactError(f"{source}: corrupt artifact: payload checksum {digest[:12]} does not match the manifest")
    try:
        raw = lzma.decompress(payload)
    except lzma.LZMAError as exc:
        raise ArtifactError(f"{source}: corrupt artifact payload ({exc})") from exc
    arrays = {}
    for spec in manifest["arrays"]:
        dtype = np.dtype(spec["dtype"])
        count = int(np.prod(spec["shape"])) if spec["shape"] else 1
        arrays[spec["name"]] = np.frombuffer(raw, dtype=dtype, count=count, offset=spec["offset"]).reshape(spec["shape"])
    return manifest, arrays


def write_container(manifest: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise ``arrays`` under ``manifest`` (which gains ``arrays`` and ``sha256``)."""
    specs, chunks, offset = [], [], 0
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        pad = (-offset) % 8
        if pad:
            chunks.append(b"\0" * pad)
            offset += pad
        specs.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset})
        chunks.append(arr.tobytes())
        offset += arr.nbytes
    payload = lzma.compress(b"".join(chunks), preset=9 | lzma.PRESET_EXTREME)
    manifest = {**manifest, "format_version": FORMAT_VERSION, "arrays": specs,
                "sha256": hashlib.sha256(payload).hexdigest()}
    head = json.dumps(manifest, sort_keys=True).encode("utf-8")
    return MAGIC + struct.pack("<I", len(head)) + head + payload


def dequantize(q: np.ndarray, scale: np.ndarray, mask: np.ndarray | None, shape: tuple[int, int],
               group: int | None = None) -> np.ndarray:
    """Rebuild a float32 (out, in) weight matrix from int8 values, scales and an optional bit mask.

    ``scale`` is per output channel, shape (out,), or per channel and ``group`` inputs, shape
    (out, ceil(in / group)).
    """
    out_dim, in_dim = shape
    if mask is not None:
        dense = np.zeros(out_dim * in_dim, dtype=np.float32)
        bits = np.unpackbits(mask, count=out_dim * in_dim).astype(bool)
        dense[bits] = q.astype(np.float32)
        W = dense.reshape(out_dim, in_dim)
    else:
        W = q.reshape(out_dim, in_dim).astype(np.float32)
    if scale.ndim == 1:
        return W * scale.astype(np.float32)[:, None]
    if group is None or scale.shape != (out_dim, -(-in_dim // group)):
        raise ArtifactError(f"scales of shape {scale.shape} do not fit a ({out_dim}, {in_dim}) layer in groups of {group}")
    return W * np.repeat(scale.astype(np.float32), group, axis=1)[:, :in_dim]


class Projector:
    """A loaded artifact: ``Projector.load(path).transform(X)`` gives the map coordinates."""

    def __init__(self, manifest: dict, layers: list[Layer], source: str = "<bytes>"):
        self.manifest = manifest
        self.layers = layers
        self.source = source

    @classmethod
    def load(cls, path: str | Path) -> "Projector":
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"{path}: artifact file not found") from None
        return cls.from_bytes(data, source=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> "Projector":
        manifest, arrays = read_container(data, source)
        layers = []
        prev = manifest["input_dim"]
        for i, spec in enumerate(manifest["layers"]):
            if spec["in"] != prev or spec["activation"] not in ACTIVATIONS:
                raise ArtifactError(f"{source}: layer {i} does not fit ({spec})")
            if spec.get("dtype", "int8") == "float32":
                W = arrays[f"w{i}"].astype(np.float32).reshape(spec["out"], spec["in"])
            else:
                W = dequantize(arrays[f"q{i}"], arrays[f"scale{i}"], arrays.get(f"mask{i}"), (spec["out"], spec["in"]),
                               spec.get("group"))
            layers.append(Layer(np.ascontiguousarray(W.T), arrays[f"bias{i}"].astype(np.float32).copy(), spec["activation"]))
            prev = spec["out"]
        if prev != manifest["n_components"]:
            raise ArtifactError(f"{source}: the last layer gives {prev} outputs, manifest says {manifest['n_components']}")
        return cls(manifest, layers, source)

    @property
    def input_dim(self) -> int:
        return int(self.manifest["input_dim"])

    @property
    def n_components(self) -> int:
        return int(self.manifest["n_components"])

    @property
    def feature_columns(self) -> list[str] | None:
        return self.manifest.get("feature_columns")

    @property
    def version(self) -> str:
        """A short content hash that identifies this artifact (stored with every embedded row)."""
        return self.manifest["sha256"][:16]

    def transform(self, X: np.ndarray, batch_rows: int = 16_384) -> np.ndarray:
        """Map rows ``X`` (n, input_dim) to (n, n_components) float32 coordinates."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.input_dim:
            shape = X.shape if X.ndim else "a scalar"
            raise ArtifactError(f"{self.source}: expects rows of {self.input_dim} features, got an array of shape {shape}")
        n = X.shape[0]
        out = np.empty((n, self.n_components), dtype=np.float32)
        if n == 0:
            return out
        rows = min(batch_rows, n)
        buffers = [np.empty((rows, layer.weight_t.shape[1]), dtype=np.float32) for layer in self.layers]
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            h = np.ascontiguousarray(X[start:stop], dtype=np.float32)
            m = stop - start
            for layer, buf in zip(self.layers, buffers):
                dst = buf[:m]
                np.matmul(h, layer.weight_t, out=dst)
                dst += layer.bias
                if layer.activation == "relu":
                    np.maximum(dst, 0.0, out=dst)
                h = dst
            out[start:stop] = h
        return out
