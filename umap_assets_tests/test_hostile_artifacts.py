"""The artifact loader against crafted files: every one is refused with ``ArtifactError`` naming the
file and the field, before it allocates what it declares (docs/robustness.md)."""

import copy
import hashlib
import json
import lzma
import struct
import subprocess
import sys
import tracemalloc
import zlib

import numpy as np
import pytest

from umap_assets.artifacts import build_artifact
from umap_assets import runtime
from umap_assets.numerics.compress import FloatLayer
from umap_assets.runtime import ArtifactError, Projector

SOURCE = "crafted.uart"
#: What refusing may cost beyond twice the file's size (tracemalloc peak): the parsed manifest and
#: the pieces decompressed at a time while checking values.
SMALL_CONSTANT = 2**20
#: The crafted payloads use a 64 KiB LZMA window, as an attacker may; the window is allocated whole.
FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 2**16}]


def container(manifest, raw: bytes = b"", payload: bytes | None = None) -> bytes:
    """An unsigned artifact with a valid checksum around ``manifest`` (a dict, or its bytes) and ``raw``."""
    head = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    payload = lzma.compress(raw, filters=FILTERS) if payload is None else payload
    body = struct.pack("<I", len(head)) + head + payload
    return runtime.MAGIC + hashlib.sha256(body).digest() + struct.pack("<H", 0) + body


@pytest.fixture(scope="module")
def base():
    """A real artifact (12 -> 15 -> 7 -> 2; layer 1 sparse) as its manifest and decompressed payload."""
    rng = np.random.default_rng(0)
    dims, layers = [12, 15, 7, 2], []
    for i in range(3):
        W = rng.normal(size=(dims[i + 1], dims[i])).astype(np.float32)
        if i == 1:
            W[np.abs(W) < 0.8] = 0
        layers.append(FloatLayer(W, rng.normal(size=dims[i + 1]).astype(np.float32), "relu" if i < 2 else "none"))
    blob = build_artifact(layers)
    body = blob[len(runtime.MAGIC) + 34 :]
    (mlen,) = struct.unpack_from("<I", body)
    manifest = json.loads(body[4 : 4 + mlen])
    raw = lzma.decompress(body[4 + mlen :])
    assert manifest["layers"][1]["sparse"] and Projector.from_bytes(container(manifest, raw)).n_components == 2
    return manifest, raw


def edited(base, edit) -> bytes:
    """The base artifact with ``edit(manifest, raw)`` applied (it edits both in place, or returns new raw bytes)."""
    manifest, raw = copy.deepcopy(base[0]), bytearray(base[1])
    out = edit(manifest, raw)
    raw = out if isinstance(out, bytes) else raw
    return container(manifest, bytes(raw))


def spec(manifest, name):
    return next(a for a in manifest["arrays"] if a["name"] == name)


def layer(i, **fields):
    return lambda m, r: m["layers"][i].update(fields)


def array(name, **fields):
    return lambda m, r: spec(m, name).update(fields)


def poke(name, index, value, dtype):
    """Write ``value`` as element ``index`` of array ``name`` in the raw payload."""
    def edit(m, r):
        a = spec(m, name)
        np.frombuffer(r, dtype=dtype, count=1, offset=a["offset"] + index * np.dtype(dtype).itemsize)[:] = value
    return edit


def huge_masked_layer(width: int):
    """The issue's case: a 607-byte artifact declaring a width x width masked layer."""
    def edit(m, r):
        m.update(input_dim=width, layers=[{"in": width, "out": width, "activation": "none", "dtype": "int8",
                                           "group": 32, "sparse": True}], n_components=width)
        m["arrays"] = [{"name": "mask0", "dtype": "|u1", "shape": [width * width // 8], "offset": 0},
                       {"name": "q0", "dtype": "|i1", "shape": [1], "offset": width * width // 8},
                       {"name": "scale0", "dtype": "<f2", "shape": [width, -(-width // 32)], "offset": 0},
                       {"name": "bias0", "dtype": "<f4", "shape": [width], "offset": 0}]
        m["raw_size"] = width * width // 8 + 1
        return b"\0" * 64
    return edit


def deep(m, r):
    m["sources"] = json.loads("[" * 40 + "]" * 40)


CORPUS = {  # name -> (edit, what the message names)
    "20000x20000 masked layer": (huge_masked_layer(20_000), "raw_size"),
    "1e6-wide masked layer": (huge_masked_layer(10**6), "raw_size"),
    "group 0": (layer(0, group=0), r"layers\[0\]\.group"),
    "group -32": (layer(0, group=-32), r"layers\[0\]\.group"),
    "group 1e9": (layer(0, group=10**9), r"layers\[0\]\.group"),
    "group as a string": (layer(0, group="32"), r"layers\[0\]\.group"),
    "group as a float": (layer(0, group=32.0), r"layers\[0\]\.group"),
    "group 7 (scales do not fit)": (layer(0, group=7), r"layers\[0\]: array scale0"),
    "out 0": (layer(0, out=0), r"layers\[0\]\.out"),
    "out -16": (layer(0, out=-16), r"layers\[0\]\.out"),
    "out true": (layer(0, out=True), r"layers\[0\]\.out"),
    "out 20000": (layer(0, out=20_000), r"layers\[0\]: array bias0"),
    "in not the previous out": (layer(1, **{"in": 3}), r"layers\[1\]\.in"),
    "activation eval": (layer(2, activation="eval"), r"layers\[2\]\.activation"),
    "layer dtype float64": (layer(2, dtype="float64"), r"layers\[2\]\.dtype"),
    "layer not an object": (lambda m, r: m["layers"].__setitem__(0, [1, 2]), r"layers\[0\]"),
    "no layers": (lambda m, r: m.update(layers=[]), "layers"),
    "n_components wrong": (lambda m, r: m.update(n_components=3), "n_components"),
    "input_dim a string": (lambda m, r: m.update(input_dim="12"), "input_dim"),
    "feature_columns not names": (lambda m, r: m.update(feature_columns=[1, 2]), "feature_columns"),
    "payload_sha256 missing": (lambda m, r: m.pop("payload_sha256"), "payload_sha256"),
    "format_version missing": (lambda m, r: m.pop("format_version"), "format version"),
    "manifest a list": (lambda m, r: None, r"\(manifest\)"),
    "array dtype object": (array("bias0", dtype="|O"), r"arrays\[\d+\]\.dtype"),
    "array dtype complex": (array("bias0", dtype="<c16"), r"arrays\[\d+\]\.dtype"),
    "bias stored as float64": (array("bias0", dtype="<f8", shape=[7]), r"layers\[0\]: array bias0"),
    "array shape negative": (array("q0", shape=[-16, 12]), r"arrays\[\d+\]\.shape"),
    "array shape of floats": (array("q0", shape=[16.0, 12]), r"arrays\[\d+\]\.shape"),
    "array of 5 dimensions": (array("q0", shape=[1, 1, 1, 1, 192]), r"arrays\[\d+\]\.shape"),
    "array past the payload": (array("bias2", shape=[10**6]), r"arrays\[\d+\]"),
    "array offset negative": (array("bias2", offset=-8), r"arrays\[\d+\]\.offset"),
    "arrays overlap": (lambda m, r: m["arrays"][1].update(offset=0), r"arrays\[1\]\.offset"),
    "array names repeat": (lambda m, r: m["arrays"][1].update(name=m["arrays"][0]["name"]), r"arrays\[1\]"),
    "arrays not a list": (lambda m, r: m.update(arrays={"q0": 1}), "arrays"),
    "array missing": (lambda m, r: m["arrays"].pop(), r"layers\[2\]: array bias2"),
    "raw_size true": (lambda m, r: m.update(raw_size=True), "raw_size"),
    "raw_size negative": (lambda m, r: m.update(raw_size=-1), "raw_size"),
    "raw_size past the payload": (lambda m, r: m.update(raw_size=m["raw_size"] + 8), "declared"),
    "raw_size short of the payload": (lambda m, r: m.update(raw_size=m["raw_size"] - 8), r"arrays\[8\]"),
    "NaN bias": (poke("bias1", 3, np.nan, "<f4"), "array bias1 holds NaN"),
    "infinite weight": (poke("w2", 5, np.inf, "<f4"), "array w2 holds NaN"),
    "NaN scale": (poke("scale0", 0, np.nan, "<f2"), "array scale0 holds NaN"),
    "mask marks too many": (poke("mask1", 0, 0xFF, "|u1"), "array mask1 marks"),
    "manifest 100,000 levels deep": (lambda m, r: None, r"\(manifest\)"),
    "manifest nested 40 levels": (deep, r"\(manifest\): nested deeper"),
    "manifest of 2 MiB": (lambda m, r: m.update(sources={"x": "a" * 2**21}), r"\(manifest\): \d+ bytes"),
    "manifest of 100,000 values": (lambda m, r: m.update(sources=[0] * 100_000), r"\(manifest\): about"),
    "NaN in the manifest": (lambda m, r: m.update(sources=float("nan")), "NaN is not allowed"),
}


def special(base, name) -> bytes:
    """The cases that need more than a manifest edit."""
    manifest, raw = base
    if name == "manifest a list":
        return container(b"[1, 2, 3]", raw)
    if name == "manifest 100,000 levels deep":
        return container(b'{"format_version": 2, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", raw)
    raise KeyError(name)


def crafted(base, name) -> bytes:
    edit, _ = CORPUS[name]
    try:
        return special(base, name)
    except KeyError:
        return edited(base, edit)


@pytest.mark.parametrize("name", list(CORPUS))
def test_a_crafted_artifact_is_refused_naming_the_file_and_field_at_bounded_cost(base, name):
    blob = crafted(base, name)
    tracemalloc.start()
    try:
        with pytest.raises(ArtifactError, match=f"^{SOURCE}: .*{CORPUS[name][1]}") as err:
            Projector.from_bytes(blob, source=SOURCE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(err.value)
    assert peak < 2 * len(blob) + SMALL_CONSTANT, f"{name}: refusing a {len(blob)}-byte file took {peak} bytes"


def test_more_crafted_payloads_are_refused(base):
    """Unaligned offsets, huge scales, stray mask bits, a cut or padded stream, a 1.5 GiB LZMA window."""
    manifest, raw = base
    cases = {
        "unaligned": edited(base, lambda m, r: spec(m, "bias2").update(offset=spec(m, "bias2")["offset"] + 2)),
        "scale above": edited(base, _scale_as_float32),
        "sets bits past": edited(base, _stray_mask_bit),
        "cut short|does not decompress|corrupt artifact payload": container(manifest, payload=lzma.compress(raw, filters=FILTERS)[:-20]),
        "bytes after its end": container(manifest, payload=lzma.compress(raw, filters=FILTERS) + b"\0" * 8),
        "Memory usage limit": container(manifest, payload=_window(lzma.compress(raw, filters=FILTERS), 40)),
    }
    for match, blob in cases.items():
        with pytest.raises(ArtifactError, match=f"^{SOURCE}: .*({match})"):
            Projector.from_bytes(blob, source=SOURCE)


def _scale_as_float32(m, r):
    """Store scale0 as float32 with one scale of 1e38 (127 times it is infinite in float32)."""
    a = spec(m, "scale0")
    values = np.frombuffer(bytes(r[a["offset"] : a["offset"] + 2 * int(np.prod(a["shape"]))]), "<f2").astype("<f4")
    values[0] = 1e38
    a.update(dtype="<f4", offset=len(r) + (-len(r)) % 8)
    m["arrays"].remove(a)
    m["arrays"].append(a)  # the table lists arrays in the order they lie
    m["raw_size"] = a["offset"] + values.nbytes
    return bytes(r) + b"\0" * ((-len(r)) % 8) + values.tobytes()


def _stray_mask_bit(m, r):
    """Set the last padding bit of mask1 (15 x 7 = 105 weights in 14 bytes: 7 padding bits)."""
    a = spec(m, "mask1")
    assert m["layers"][1]["out"] * m["layers"][1]["in"] % 8
    r[a["offset"] + a["shape"][0] - 1] |= 1


def _window(xz: bytes, dict_byte: int) -> bytes:
    """``xz`` with its LZMA2 dictionary size byte set to ``dict_byte`` (40: 1.5 GiB), CRC fixed."""
    out = bytearray(xz)
    size = (out[12] + 1) * 4  # block header, after the 12-byte stream header
    assert out[13] & 0xC0 == 0 and out[14] == 0x21 and out[15] == 1  # no sizes; one filter: LZMA2, 1 property byte
    out[16] = dict_byte
    out[12 + size - 4 : 12 + size] = struct.pack("<I", zlib.crc32(bytes(out[12 : 12 + size - 4])))
    return bytes(out)


def refusal_in_a_fresh_process(path) -> tuple[int, str]:
    """(KiB the peak RSS of a fresh interpreter grew by while loading ``path``, the refusal it printed)."""
    code = ("import resource, sys; from umap_assets.runtime import Projector, ArtifactError\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    Projector.load(sys.argv[1])\nexcept ArtifactError as exc:\n    print(exc, file=sys.stderr)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout), done.stderr


def test_refusing_the_issues_20000_square_layer_stays_small_in_a_fresh_process(base, tmp_path):
    """Peak RSS of a fresh interpreter refusing the 20,000 x 20,000 masked layer, over its baseline."""
    path = tmp_path / "huge.uart"
    path.write_bytes(edited(base, huge_masked_layer(20_000)))
    grown_kib, refusal = refusal_in_a_fresh_process(path)
    assert "raw_size" in refusal and grown_kib < 2 * path.stat().st_size / 1024 + 1024, (grown_kib, refusal)


def test_a_compressible_payload_is_refused_within_twice_its_file_in_a_fresh_process(base, tmp_path):
    """The most a payload may expand (2 MiB of noise, then about MAX_EXPANSION of zeros), written with
    the writer's own 64 MiB window and ending in a NaN: refusing it stays within twice the file plus
    the constant, in a fresh interpreter."""
    manifest, raw = copy.deepcopy(base[0]), bytes(base[1])
    noise = np.random.default_rng(0).normal(size=2**19).astype(np.float32)  # 2 MiB that do not compress
    room = len(lzma.compress(noise.tobytes(), preset=9 | lzma.PRESET_EXTREME)) + runtime.MAX_EXPANSION
    zeros = (room - len(raw) - noise.nbytes - 2**14) // 4  # up to the limit, less a margin for how LZMA packs it
    manifest["arrays"].append({"name": "pad", "dtype": "<f4", "shape": [len(noise) + zeros], "offset": len(raw)})
    raw += np.r_[noise, np.zeros(zeros - 1, np.float32), np.float32("nan")].tobytes()
    manifest["raw_size"] = len(raw)
    path = tmp_path / "compressible.uart"
    path.write_bytes(container(manifest, raw, lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)))
    grown_kib, refusal = refusal_in_a_fresh_process(path)
    assert "compressible.uart: artifact array pad holds NaN" in refusal, refusal
    assert grown_kib < 2 * path.stat().st_size / 1024 + SMALL_CONSTANT / 1024, (grown_kib, refusal)


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_signing_key_fails_closed_for_writing_and_loading(base, monkeypatch, blank):
    manifest, raw = base
    unsigned = container(manifest, raw)
    monkeypatch.setenv(runtime.SIGNING_KEY_ENV, blank)
    for attempt in (lambda: Projector.from_bytes(unsigned, source=SOURCE),
                    lambda: runtime.write_container({}, {"a": np.zeros(3, np.float32)})):
        with pytest.raises(ArtifactError, match=r"^\S*\$UMAP_ASSETS_ARTIFACT_KEY is set but empty: .*unset it") as err:
            attempt()
        assert "\n" not in str(err.value)
    monkeypatch.setenv(runtime.SIGNING_KEY_ENV, "k")
    with pytest.raises(ArtifactError, match="not signed"):
        Projector.from_bytes(unsigned, source=SOURCE)
    monkeypatch.delenv(runtime.SIGNING_KEY_ENV)
    assert Projector.from_bytes(unsigned).input_dim == 12


def _rows(path, dim: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    X = np.random.default_rng(0).normal(size=(20, dim)).astype(np.float32)
    pq.write_table(pa.table({"id": np.arange(20), "features": list(X)}), path)


@pytest.mark.parametrize("case", ["blank key", "NaN weights", "20000 square"])
def test_the_embed_command_refuses_in_one_line_and_writes_nothing(base, tmp_path, monkeypatch, capsys, case):
    from umap_assets.cli import main

    artifact, rows, out = tmp_path / "a.uart", tmp_path / "in.parquet", tmp_path / "out.parquet"
    edit = {"blank key": lambda m, r: None, "NaN weights": poke("w2", 0, np.nan, "<f4"),
            "20000 square": huge_masked_layer(20_000)}[case]
    artifact.write_bytes(edited(base, edit))
    _rows(rows, 12)
    monkeypatch.setenv(runtime.SIGNING_KEY_ENV, "") if case == "blank key" else monkeypatch.delenv(
        runtime.SIGNING_KEY_ENV, raising=False)
    assert main(["embed", "--artifact", str(artifact), "--input", str(rows), "--output", str(out),
                 "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert not out.exists()
