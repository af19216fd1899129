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
shared clusters); set but blank, it is an error for writing and loading alike (fail closed).

The loader reads hostile files at bounded cost: the manifest's size, depth and count of values,
then every declared dtype, shape, offset, group and layer width are checked against the
``MAX_*`` limits and the declared ``raw_size`` (itself at most the compressed payload's size plus
``MAX_EXPANSION``) before anything is decompressed; the payload is then streamed once, keeping
nothing, to check its size and that every float is finite, before it is decompressed for real.
Anything malformed raises :class:`ArtifactError` naming the file and the field. ``manifest["payload_sha256"]`` identifies the weights: its prefix is the
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
import math
import os
import re
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
# Limits that a manifest meets before anything is allocated for it (docs/robustness.md).
MAX_MANIFEST_BYTES = 2**20
MAX_MANIFEST_DEPTH = 32
MAX_MANIFEST_VALUES = 50_000
MAX_ARRAYS = 1_024
MAX_LAYERS = 256
MAX_DIM = 2**24  # a layer's inputs or outputs
#: A payload decompresses to at most its own size plus this many bytes: int8 weights compress about
#: 1.05 : 1 and a layer pruned to 99% about 7 : 1, so every real artifact (a few hundred KB) fits,
#: and refusing one never touches more than twice its file size plus this constant.
MAX_EXPANSION = 2**20
#: Float32 parameter bytes per decompressed byte, at most: a sparse layer's mask holds 8 weights a byte.
MAX_PARAM_MULTIPLE = 32
#: The LZMA decoder's memory limit: the writer's preset 9 needs 65 MiB.
LZMA_MEMLIMIT = 80 * 2**20
#: The largest quantization scale: 127 times it stays finite in float32.
MAX_SCALE = 1e30
_CHUNK = 256 * 2**10  # bytes decompressed at a time while checking a payload
_DTYPES = ("|i1", "|u1", "<f2", "<f4", "<f8", "<i4", "<i8")


class ArtifactError(ValueError):
    """A file is not a valid artifact, is corrupt, or does not fit the input it is given."""


@dataclass
class Layer:
    weight_t: np.ndarray  # (in, out) float32, C-contiguous, dequantised once at load
    bias: np.ndarray  # (out,) float32
    activation: str


def _signing_key() -> bytes | None:
    """The key in ``$UMAP_ASSETS_ARTIFACT_KEY``, or None when it is unset; set but blank is an error.

    A blank key would sign nothing and verify nothing, so it fails closed rather than open.
    """
    key = os.environ.get(SIGNING_KEY_ENV)
    if key is None:
        return None
    if not key.strip():
        raise ArtifactError(f"${SIGNING_KEY_ENV} is set but empty: set it to the signing key, or unset it "
                            "to write and load unsigned artifacts")
    return key.encode("utf-8")


def read_container(data: bytes, source: str = "<bytes>", plan=None) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse and verify an artifact's bytes; return its manifest and arrays.

    Everything the manifest declares (its size and depth, each array's dtype, shape and offset, and
    what ``plan(manifest, table, source)`` checks) is checked before a byte is decompressed. Then the
    payload is decompressed twice: once a chunk at a time, keeping nothing, to check its size and
    values (finite floats, and ``plan``'s checks), and once to keep. So refusing an artifact costs
    its own bytes plus a constant, whatever it declares.

    Raises
    ------
    ArtifactError
        Naming ``source`` and the field, for any bad magic, checksum, signature, manifest, size,
        array table or value.
    """
    body = _verified_body(memoryview(data), source)
    manifest, payload = _manifest(body, source)
    table = _array_table(manifest, len(payload), source)
    checks = {name: [_finite_check(name, source)] for name, a in table.items() if a.dtype.kind == "f"}
    for name, check in (plan(manifest, table, source) if plan else []):
        checks.setdefault(name, []).append(check)
    _scan(payload, manifest["raw_size"], table, checks, source)
    raw = _inflater(source).decompress(payload, max_length=manifest["raw_size"])
    return manifest, {name: np.frombuffer(raw, dtype=a.dtype, count=a.count, offset=a.offset).reshape(a.shape)
                      for name, a in table.items()}


def _verified_body(data: memoryview, source: str) -> memoryview:
    """The body after the magic, checksum and signature, once all three hold (a view: nothing is copied)."""
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


def _bad(source: str, field: str, problem: str) -> ArtifactError:
    return ArtifactError(f"{source}: artifact manifest field {field}: {problem}")


def _int(value, lo: int, hi: int, source: str, field: str) -> int:
    """``value`` when it is an int (not a bool) in [lo, hi]; else an ArtifactError naming ``field``."""
    if type(value) is not int or not lo <= value <= hi:
        raise _bad(source, field, f"{value!r:.60} is not an integer in [{lo}, {hi}]")
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def _manifest(body: memoryview, source: str) -> tuple[dict, memoryview]:
    """The manifest, bounded in size, depth and count of values before it is parsed; and the payload."""
    (mlen,) = struct.unpack_from("<I", body, 0)
    if mlen > MAX_MANIFEST_BYTES:
        raise _bad(source, "(manifest)", f"{mlen} bytes (at most {MAX_MANIFEST_BYTES})")
    if 4 + mlen > len(body):
        raise ArtifactError(f"{source}: truncated artifact (manifest runs past the end of the file)")
    text = bytes(body[4 : 4 + mlen])
    _check_json_shape(text, source)
    try:
        manifest = json.loads(text.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{source}: corrupt artifact manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise _bad(source, "(manifest)", f"a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{source}: artifact format version {manifest.get('format_version')!r:.40} is not "
                            f"supported (this runtime reads version {FORMAT_VERSION})")
    return manifest, body[4 + mlen :]


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


def _check_json_shape(text: bytes, source: str) -> None:
    """Refuse JSON nested deeper than MAX_MANIFEST_DEPTH or holding more than MAX_MANIFEST_VALUES values."""
    bare = _JSON_STRING.sub(b'""', text)
    values = bare.count(b",") + bare.count(b"[") + bare.count(b"{") + 1
    if values > MAX_MANIFEST_VALUES:
        raise _bad(source, "(manifest)", f"about {values} values (at most {MAX_MANIFEST_VALUES})")
    depth = 0
    for byte in _NOT_BRACKET.sub(b"", bare):
        depth += 1 if byte in b"[{" else -1
        if depth > MAX_MANIFEST_DEPTH:
            raise _bad(source, "(manifest)", f"nested deeper than {MAX_MANIFEST_DEPTH} levels")


@dataclass(frozen=True)
class _Array:
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize


def _array_table(manifest: dict, payload_bytes: int, source: str) -> dict[str, _Array]:
    """The arrays the manifest lists, checked against ``raw_size``: known dtypes, in order, no overlap."""
    limit = min(MAX_RAW_SIZE, payload_bytes + MAX_EXPANSION)
    raw_size = manifest.get("raw_size")
    if type(raw_size) is int and limit < raw_size <= 2**63:
        raise _bad(source, "raw_size", f"{raw_size} bytes from a {payload_bytes}-byte payload (at most "
                                       f"its size plus {MAX_EXPANSION}, and {MAX_RAW_SIZE})")
    _int(raw_size, 0, limit, source, "raw_size")
    specs = manifest.get("arrays")
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise _bad(source, "arrays", f"{specs!r:.60} is not a list of at most {MAX_ARRAYS} arrays")
    table, end = {}, 0
    for i, spec in enumerate(specs):
        field = f"arrays[{i}]"
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or spec["name"] in table:
            raise _bad(source, field, f"{spec!r:.60} is not an array with a new name")
        if spec.get("dtype") not in _DTYPES:
            raise _bad(source, field + ".dtype", f"{spec.get('dtype')!r:.40} is not one of {', '.join(_DTYPES)}")
        shape = spec.get("shape")
        if not isinstance(shape, list) or len(shape) > 4:
            raise _bad(source, field + ".shape", f"{shape!r:.60} is not a list of at most 4 sizes")
        shape = tuple(_int(n, 0, raw_size, source, f"{field}.shape") for n in shape)
        array = _Array(np.dtype(spec["dtype"]), shape, _int(spec.get("offset"), end, raw_size, source, field + ".offset"))
        if array.offset % array.dtype.itemsize or array.offset + array.nbytes > raw_size:
            raise _bad(source, field, f"{spec['name']!r:.40} of shape {shape} at {array.offset} is unaligned or runs "
                                      f"past the {raw_size} bytes of the payload")
        table[spec["name"]], end = array, array.offset + array.nbytes
    return table


def _inflater(source: str) -> lzma.LZMADecompressor:
    try:
        return lzma.LZMADecompressor(memlimit=LZMA_MEMLIMIT)
    except lzma.LZMAError as exc:  # pragma: no cover - liblzma refuses only a bad memlimit
        raise ArtifactError(f"{source}: {exc}") from exc


class _Stream:
    """Reads a payload's decompressed bytes in order, holding at most one read at a time."""

    def __init__(self, payload: memoryview, raw_size: int, source: str):
        self.decompressor, self.payload, self.fed, self.pos = _inflater(source), payload, 0, 0
        self.raw_size, self.source = raw_size, source

    def _input(self) -> memoryview | bytes:
        """The next chunk of compressed input when the decompressor wants one (so it never copies the payload)."""
        if not self.decompressor.needs_input:
            return b""
        chunk = self.payload[self.fed : self.fed + _CHUNK]
        self.fed += len(chunk)
        return chunk

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes; an ArtifactError when the payload is corrupt or ends sooner."""
        parts, want = [], n
        while want:
            try:
                ended = self.decompressor.eof or (self.decompressor.needs_input and self.fed >= len(self.payload))
                part = b"" if ended else self.decompressor.decompress(self._input(), max_length=want)
            except lzma.LZMAError as exc:
                raise ArtifactError(f"{self.source}: corrupt artifact payload ({exc})") from exc
            if ended:
                raise ArtifactError(f"{self.source}: artifact payload does not decompress to the declared "
                                    f"{self.raw_size} bytes (it ends at {self.pos + n - want})")
            parts.append(part)
            want -= len(part)
        self.pos += n
        return b"".join(parts)

    def skip_to(self, offset: int) -> None:
        while self.pos < offset:
            self.read(min(_CHUNK, offset - self.pos))

    def finish(self) -> None:
        """Insist that the stream ends exactly here, with nothing after it."""
        while not self.decompressor.eof:
            if self.decompressor.needs_input and self.fed >= len(self.payload):
                raise ArtifactError(f"{self.source}: corrupt artifact payload (the compressed stream is cut short)")
            try:
                extra = self.decompressor.decompress(self._input(), max_length=1)
            except lzma.LZMAError as exc:
                raise ArtifactError(f"{self.source}: corrupt artifact payload ({exc})") from exc
            if extra:
                raise ArtifactError(f"{self.source}: artifact payload decompresses past the declared {self.raw_size} bytes")
        if self.decompressor.unused_data or self.fed < len(self.payload):
            raise ArtifactError(f"{self.source}: artifact payload has bytes after its end")


def _scan(payload: memoryview, raw_size: int, table: dict[str, _Array], checks: dict, source: str) -> None:
    """Decompress ``payload`` a chunk at a time, keeping nothing: it must give exactly ``raw_size``
    bytes, and ``check(values, last)`` must pass on each piece of the arrays that ``checks`` names."""
    stream = _Stream(payload, raw_size, source)
    for name in sorted(checks, key=lambda n: table[n].offset):
        array = table[name]
        stream.skip_to(array.offset)
        for start in range(0, array.nbytes, _CHUNK):
            piece = np.frombuffer(stream.read(min(_CHUNK, array.nbytes - start)), dtype=array.dtype)
            for check in checks[name]:
                check(piece, start + _CHUNK >= array.nbytes)
    stream.skip_to(raw_size)
    stream.finish()


def _finite_check(name: str, source: str):
    def check(values: np.ndarray, last: bool) -> None:
        if not np.isfinite(values).all():
            raise ArtifactError(f"{source}: artifact array {name} holds NaN or infinite values")
    return check


def _scale_check(name: str, source: str):
    def check(values: np.ndarray, last: bool) -> None:
        if np.abs(values.astype(np.float32)).max() > MAX_SCALE:
            raise ArtifactError(f"{source}: artifact array {name} holds a scale above {MAX_SCALE:g}")
    return check


def _mask_check(name: str, bits: int, nonzero: int, source: str):
    """The mask sets exactly ``nonzero`` of its first ``bits`` bits, and none after them."""
    seen = [0]

    def check(values: np.ndarray, last: bool) -> None:
        seen[0] += int(np.unpackbits(values).sum(dtype=np.int64))
        pad = -bits % 8
        if last and pad and values[-1] & ((1 << pad) - 1):
            raise ArtifactError(f"{source}: artifact array {name} sets bits past its {bits} weights")
        if last and seen[0] != nonzero:
            raise ArtifactError(f"{source}: artifact array {name} marks {seen[0]} nonzero weights, "
                                f"but {nonzero} are stored")
    return check


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


def _layer_plan(manifest: dict, table: dict[str, _Array], source: str) -> list[tuple[str, object]]:
    """Check the projector's fields and each layer's arrays against the table, before decompressing;
    return the value checks (scales, masks) for :func:`_scan`."""
    prev = _int(manifest.get("input_dim"), 1, MAX_DIM, source, "input_dim")
    n_components = _int(manifest.get("n_components"), 1, MAX_DIM, source, "n_components")
    columns = manifest.get("feature_columns")
    if columns is not None and (not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)):
        raise _bad(source, "feature_columns", f"{columns!r:.60} is not a list of names")
    if not isinstance(manifest.get("payload_sha256"), str) or len(manifest["payload_sha256"]) < 16:
        raise _bad(source, "payload_sha256", f"{manifest.get('payload_sha256')!r:.40} is not a hash")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
        raise _bad(source, "layers", f"{layers!r:.60} is not a list of 1 to {MAX_LAYERS} layers")
    checks, params = [], 0
    for i, spec in enumerate(layers):
        checks += _layer_arrays(i, spec, prev, table, source)
        prev = spec["out"]
        params += 4 * (spec["in"] + 1) * spec["out"]
    if prev != n_components:
        raise _bad(source, "n_components", f"{n_components}, but the last layer gives {prev} outputs")
    raw_size = manifest["raw_size"]
    if params > MAX_PARAM_MULTIPLE * raw_size + 2**16:
        raise _bad(source, "layers", f"{params} bytes of float32 parameters from a {raw_size}-byte payload "
                                     f"(at most {MAX_PARAM_MULTIPLE} per byte)")
    return checks


def _layer_arrays(i: int, spec, in_dim: int, table: dict[str, _Array], source: str) -> list[tuple[str, object]]:
    """Check layer ``i``'s manifest entry and the dtype and shape of each of its arrays."""
    field = f"layers[{i}]"
    if not isinstance(spec, dict):
        raise _bad(source, field, f"{spec!r:.60} is not an object")
    _int(spec.get("in"), in_dim, in_dim, source, field + ".in")
    out = _int(spec.get("out"), 1, MAX_DIM, source, field + ".out")
    if spec.get("activation") not in ACTIVATIONS:
        raise _bad(source, field + ".activation", f"{spec.get('activation')!r:.40} is not one of {ACTIVATIONS}")
    kind = spec.get("dtype", "int8")
    expect = {f"bias{i}": (("<f4",), [(out,)])}
    checks = []
    if kind == "float32":
        expect[f"w{i}"] = (("<f4",), [(out, in_dim)])
    elif kind == "int8":
        group = spec.get("group")
        group = group if group is None else _int(group, 1, MAX_DIM, source, field + ".group")
        expect[f"scale{i}"] = (("<f2", "<f4"), [(out,) if group is None else (out, -(-in_dim // group))])
        checks.append((f"scale{i}", _scale_check(f"scale{i}", source)))
        if f"mask{i}" in table:
            expect[f"mask{i}"] = (("|u1",), [(-(-out * in_dim // 8),)])
            nonzero = table[f"q{i}"].count if f"q{i}" in table else 0
            expect[f"q{i}"] = (("|i1",), [(min(nonzero, out * in_dim),)])
            checks.append((f"mask{i}", _mask_check(f"mask{i}", out * in_dim, nonzero, source)))
        else:
            expect[f"q{i}"] = (("|i1",), [(out, in_dim), (out * in_dim,)])
    else:
        raise _bad(source, field + ".dtype", f"{kind!r:.40} is not 'int8' or 'float32'")
    for name, (dtypes, shapes) in expect.items():
        array = table.get(name)
        if array is None or array.dtype.str not in dtypes or array.shape not in shapes:
            found = "missing" if array is None else f"{array.dtype.str} of shape {array.shape}"
            raise _bad(source, field, f"array {name} should be {'/'.join(dtypes)} of shape "
                                      f"{' or '.join(map(str, shapes))}, but it is {found}")
    return checks


def _layers(manifest: dict, arrays: dict[str, np.ndarray]) -> list[Layer]:
    """Rebuild the float32 layers that the manifest lists from their stored arrays (checked by :func:`_layer_plan`)."""
    layers = []
    for i, spec in enumerate(manifest["layers"]):
        if spec.get("dtype", "int8") == "float32":
            W = arrays[f"w{i}"].astype(np.float32).reshape(spec["out"], spec["in"])
        else:
            W = dequantize(arrays[f"q{i}"], arrays[f"scale{i}"], arrays.get(f"mask{i}"), (spec["out"], spec["in"]),
                           spec.get("group"))
        layers.append(Layer(np.ascontiguousarray(W.T), arrays[f"bias{i}"].astype(np.float32).copy(), spec["activation"]))
    return layers


def coverage_distances(X: np.ndarray, mean: np.ndarray, components: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Each row's distance to its nearest center's reconstruction ``mean + c @ components``: the
    distance within the PCA space plus the row's residual off it. The runtime's own copy (it travels
    alone to Spark executors) of :func:`umap_assets.numerics.drift.coverage_distances`; the tests hold
    the two equal."""
    centred = np.asarray(X, np.float32) - mean
    Z = centred @ components.T
    z2 = np.einsum("ij,ij->i", Z, Z)
    residual = np.maximum(np.einsum("ij,ij->i", centred, centred) - z2, 0.0)
    cross = Z @ centers.T
    cross *= -2.0
    cross += np.einsum("ij,ij->i", centers, centers)
    nearest = np.maximum(cross.min(axis=1) + z2, 0.0)
    return np.sqrt(nearest + residual).astype(np.float32)


def _coverage_arrays(manifest: dict, arrays: dict[str, np.ndarray], source: str):
    """The artifact's coverage landmarks as float32 (mean, components, centers), or None without them."""
    cov = manifest.get("coverage")
    if cov is None:
        return None
    try:
        mean, components, centers = (arrays[f"coverage_{n}"].astype(np.float32) for n in ("mean", "components", "centers"))
        median, radius = float(cov["median_distance"]), float(cov["radius"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(source, "coverage", f"incomplete ({exc!r:.60})") from None
    p = components.shape[0] if components.ndim == 2 else -1
    if (mean.shape != (manifest["input_dim"],) or components.shape != (p, mean.shape[0]) or centers.ndim != 2
            or centers.shape[1] != p or not len(centers)):
        raise _bad(source, "coverage", "its arrays do not fit each other or the input dimension")
    if not (0 < median < MAX_SCALE and 0 <= radius < MAX_SCALE):
        raise _bad(source, "coverage", f"median distance {median!r} and radius {radius!r} must be finite, the median above 0")
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
        """Load the artifact at ``path``; files larger than any artifact can be are refused unread."""
        path = Path(path)
        limit = MAX_RAW_SIZE + MAX_MANIFEST_BYTES + 2**16
        try:
            with path.open("rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise ArtifactError(f"{path}: artifact file not found") from None
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot read the artifact ({exc.strerror or exc})") from None
        if len(data) > limit:
            raise ArtifactError(f"{path}: not an artifact: larger than {limit} bytes")
        return cls.from_bytes(data, source=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> "Projector":
        """Load an artifact from its bytes; every check of :func:`read_container` and :func:`_layer_plan` applies."""
        manifest, arrays = read_container(data, source, plan=_layer_plan)
        try:
            return cls(manifest, _layers(manifest, arrays), source, _coverage_arrays(manifest, arrays, source))
        except ArtifactError:
            raise
        except (KeyError, TypeError, ValueError) as exc:  # pragma: no cover - _layer_plan checked every field
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
        X = self._checked(X)
        if self._coverage is None:
            return np.full(len(X), np.nan, np.float32)
        median = float(self.manifest["coverage"]["median_distance"])
        out = np.empty(len(X), np.float32)
        for start in range(0, len(X), batch_rows):
            out[start : start + batch_rows] = coverage_distances(X[start : start + batch_rows], *self._coverage) / median
        return out

    @property
    def output_names(self) -> list[str]:
        """The columns :meth:`outputs` gives: the coordinates (``x``, ``y``, or ``x0``..), then
        ``coverage`` when the artifact carries its landmarks."""
        names = ["x", "y"] if self.n_components == 2 else [f"x{i}" for i in range(self.n_components)]
        return names + (["coverage"] if self.has_coverage else [])

    def outputs(self, X: np.ndarray) -> np.ndarray:
        """The float32 ``(n, len(output_names))`` matrix of each row's coordinates and coverage figure."""
        E = self.transform(X)
        return np.column_stack([E, self.coverage(X)]) if self.has_coverage else E

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
