"""The artifact runtime: load a compressed student and map rows to the UMAP plane, with numpy only.

This module imports nothing but numpy and the standard library, so an artifact file can be
broadcast to any worker (a Spark executor, a batch job) that has numpy.

File layout (format version 2)::

    b"UMAPART\\x02" | SHA-256 of body (32 bytes) | uint16 signature length | signature | body
    body = uint32 little-endian manifest length | manifest (UTF-8 JSON) | payload

The payload is an LZMA-compressed concatenation of the arrays that the manifest lists (name,
dtype, shape, offset). The checksum covers the manifest and the payload, so any edit is caught
before a byte is decompressed. ``manifest["raw_size"]`` declares the decompressed size, and
decompression stops there: a crafted payload cannot expand without bound. The signature is
empty, or an HMAC-SHA256 of the body under the key in ``$UMAP_ASSETS_ARTIFACT_KEY``; when that
variable is set, loading requires a valid signature (for teams that broadcast artifacts to
shared clusters). ``manifest["payload_sha256"]`` identifies the weights: its prefix is the
artifact version.

Each layer is ``y = act(x @ W.T + b)`` with symmetric int8 weights ``W = q * scale``, one scale per
output channel and group of inputs (the output layer may be stored as float32); sparse layers
store a bit mask of the non-zero weights plus only those values. Input standardisation and output
scaling are folded into the first and last layers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import lzma
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"UMAPART\x02"
FORMAT_VERSION = 2
ACTIVATIONS = ("relu", "none")
#: Environment variable holding the HMAC key that signs artifacts and that loading then requires.
SIGNING_KEY_ENV = "UMAP_ASSETS_ARTIFACT_KEY"
#: The largest decompressed payload a loader accepts (a student is a few hundred KB).
MAX_RAW_SIZE = 256 * 2**20
_DTYPES = ("|i1", "|u1", "<f2", "<f4", "<f8", "<i4", "<i8")


class ArtifactError(ValueError):
    """A file is not a valid artifact, is corrupt, or does not fit the input it is given."""


@dataclass
class Layer:
    weight_t: np.ndarray  # (in, out) float32, C-contiguous, dequantised once at load
    bias: np.ndarray  # (out,) float32
    activation: str


def _signing_key() -> bytes | None:
    key = os.environ.get(SIGNING_KEY_ENV)
    return key.encode("utf-8") if key else None


def read_container(data: bytes, source: str = "<bytes>") -> tuple[dict, dict[str, np.ndarray]]:
    """Parse and verify an artifact's bytes; return its manifest and arrays.

    Raises
    ------
    ArtifactError
        Naming ``source``, for any bad magic, checksum, signature, size or array table.
    """
    body = _verified_body(data, source)
    (mlen,) = struct.unpack_from("<I", body, 0)
    if 4 + mlen > len(body):
        raise ArtifactError(f"{source}: truncated artifact (manifest runs past the end of the file)")
    try:
        manifest = json.loads(body[4 : 4 + mlen].decode("utf-8"))
        raw_size = int(manifest["raw_size"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{source}: corrupt artifact manifest ({exc})") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{source}: artifact format version {manifest.get('format_version')!r} is not supported "
                            f"(this runtime reads version {FORMAT_VERSION})")
    raw = _decompress(body[4 + mlen :], raw_size, source)
    return manifest, _arrays(manifest, raw, source)


def _verified_body(data: bytes, source: str) -> bytes:
    """The body after the magic, checksum and signature, once all three hold."""
    head = len(MAGIC) + 32 + 2
    if len(data) < len(MAGIC) or data[: len(MAGIC) - 1] != MAGIC[:-1]:
        raise ArtifactError(f"{source}: not a umap-assets artifact (bad magic bytes)")
    if data[len(MAGIC) - 1] != MAGIC[-1]:
        raise ArtifactError(f"{source}: artifact container version {data[len(MAGIC) - 1]} is not supported "
                            f"(this runtime reads version {MAGIC[-1]}); rebuild it with `umap-assets run`")
    if len(data) < head + 4:
        raise ArtifactError(f"{source}: truncated artifact ({len(data)} bytes)")
    digest = data[len(MAGIC) : len(MAGIC) + 32]
    (sig_len,) = struct.unpack_from("<H", data, len(MAGIC) + 32)
    signature, body = data[head : head + sig_len], data[head + sig_len :]
    if len(body) < 4 or not hmac.compare_digest(hashlib.sha256(body).digest(), digest):
        raise ArtifactError(f"{source}: corrupt artifact: the checksum of its manifest and payload does not match")
    key = _signing_key()
    if key is not None:
        if not signature:
            raise ArtifactError(f"{source}: artifact is not signed, and ${SIGNING_KEY_ENV} requires a signature")
        if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), signature):
            raise ArtifactError(f"{source}: artifact signature does not match the key in ${SIGNING_KEY_ENV}")
    return body


def _decompress(payload: bytes, raw_size: int, source: str) -> bytes:
    """LZMA-decompress at most ``raw_size`` bytes and insist on exactly that many."""
    if not 0 <= raw_size <= MAX_RAW_SIZE:
        raise ArtifactError(f"{source}: artifact declares {raw_size} decompressed bytes (at most {MAX_RAW_SIZE})")
    decompressor = lzma.LZMADecompressor()
    try:
        raw = decompressor.decompress(payload, max_length=raw_size)
    except lzma.LZMAError as exc:
        raise ArtifactError(f"{source}: corrupt artifact payload ({exc})") from exc
    if len(raw) != raw_size or not decompressor.eof:
        raise ArtifactError(f"{source}: artifact payload does not decompress to the declared {raw_size} bytes")
    return raw


def _arrays(manifest: dict, raw: bytes, source: str) -> dict[str, np.ndarray]:
    arrays = {}
    try:
        for spec in manifest["arrays"]:
            if spec["dtype"] not in _DTYPES:
                raise ValueError(f"dtype {spec['dtype']!r}")
            dtype, shape = np.dtype(spec["dtype"]), [int(n) for n in spec["shape"]]
            count = int(np.prod(shape)) if shape else 1
            if min(shape, default=1) < 0 or spec["offset"] < 0 or spec["offset"] + count * dtype.itemsize > len(raw):
                raise ValueError(f"array {spec['name']!r} of shape {shape} runs past the payload")
            arrays[str(spec["name"])] = np.frombuffer(raw, dtype=dtype, count=count, offset=spec["offset"]).reshape(shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{source}: corrupt artifact array table ({exc})") from exc
    return arrays


def write_container(manifest: dict, arrays: dict[str, np.ndarray], key: bytes | None = None) -> bytes:
    """Serialise ``arrays`` under ``manifest`` (which gains ``arrays``, ``raw_size`` and ``payload_sha256``).

    The body is signed with ``key``, or with ``$UMAP_ASSETS_ARTIFACT_KEY`` when it is set.
    """
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
    manifest = {**manifest, "format_version": FORMAT_VERSION, "arrays": specs, "raw_size": offset,
                "payload_sha256": hashlib.sha256(payload).hexdigest()}
    head = json.dumps(manifest, sort_keys=True).encode("utf-8")
    body = struct.pack("<I", len(head)) + head + payload
    key = key if key is not None else _signing_key()
    signature = hmac.new(key, body, hashlib.sha256).digest() if key else b""
    return MAGIC + hashlib.sha256(body).digest() + struct.pack("<H", len(signature)) + signature + body


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


def _layers(manifest: dict, arrays: dict[str, np.ndarray], source: str) -> list[Layer]:
    """Rebuild the float32 layers that the manifest lists from their stored arrays."""
    layers, prev = [], manifest["input_dim"]
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
    return layers


def _coverage_arrays(manifest: dict, arrays: dict[str, np.ndarray], source: str):
    """The artifact's coverage landmarks as float32 (mean, components, centers), or None without them."""
    if "coverage" not in manifest:
        return None
    mean, components, centers = (arrays[f"coverage_{n}"].astype(np.float32) for n in ("mean", "components", "centers"))
    p = components.shape[0] if components.ndim == 2 else -1
    if (mean.shape != (manifest["input_dim"],) or components.shape != (p, mean.shape[0]) or centers.ndim != 2
            or centers.shape[1] != p or not len(centers) or not float(manifest["coverage"]["median_distance"]) > 0):
        raise ArtifactError(f"{source}: the coverage arrays do not fit each other or the input dimension")
    return mean, components, centers


class Projector:
    """A loaded artifact: ``Projector.load(path).transform(X)`` gives the map coordinates."""

    def __init__(self, manifest: dict, layers: list[Layer], source: str = "<bytes>",
                 coverage: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None):
        self.manifest = manifest
        self.layers = layers
        self.source = source
        self._coverage = coverage  # (mean, components, centers) in float32, when the artifact has them

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
        try:
            return cls(manifest, _layers(manifest, arrays, source), source, _coverage_arrays(manifest, arrays, source))
        except ArtifactError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{source}: the artifact's layers do not fit its arrays ({exc!r})") from exc

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
        return self.manifest["payload_sha256"][:16]

    @property
    def has_coverage(self) -> bool:
        return self._coverage is not None

    @property
    def extrapolation_threshold(self) -> float | None:
        """The coverage figure above which a row counts as extrapolated (``radius / median_distance``:
        the share ``1 - quantile`` of held-out rows lie beyond it); None without coverage."""
        cov = self.manifest.get("coverage")
        return None if cov is None else float(cov["radius"]) / float(cov["median_distance"])

    def coverage(self, X: np.ndarray, batch_rows: int = 8_192) -> np.ndarray:
        """Each row's coverage figure: its distance to the training data's landmarks in the model's
        input space, over the held-out rows' median distance (about 1 for rows like the training rows;
        see :func:`umap_assets.numerics.drift.coverage_distances`). NaN for every row when the
        artifact carries no landmarks."""
        from .numerics.drift import coverage_distances  # numpy only

        X = self._checked(X)
        if self._coverage is None:
            return np.full(len(X), np.nan, np.float32)
        median = float(self.manifest["coverage"]["median_distance"])
        out = np.empty(len(X), np.float32)
        for start in range(0, len(X), batch_rows):
            out[start : start + batch_rows] = coverage_distances(X[start : start + batch_rows], *self._coverage) / median
        return out

    def _checked(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.input_dim:
            shape = X.shape if X.ndim else "a scalar"
            raise ArtifactError(f"{self.source}: expects rows of {self.input_dim} features, got an array of shape {shape}")
        return X

    def transform(self, X: np.ndarray, batch_rows: int = 2_048) -> np.ndarray:
        """Map rows ``X`` (n, input_dim) to (n, n_components) float32 coordinates."""
        X = self._checked(X)
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
