import subprocess
import sys

import numpy as np
import pytest
import torch

from umap_assets.artifacts import build_artifact
from umap_assets.numerics import compress
from umap_assets.numerics.distill import StudentConfig, predict, train_student
from umap_assets.runtime import ArtifactError, Projector, dequantize


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 20)).astype(np.float32) * rng.uniform(0.1, 5, 20).astype(np.float32) + 3
    Y = np.stack([np.sin(X[:, 0]) + X[:, 1], X[:, 2] * 0.5 - X[:, 3]], 1).astype(np.float32) * 4 + 10
    cfg = StudentConfig(hidden=(32, 16), input_pca_dim=12, steps=25, batch_size=128, graph_weight=0.0, seed=1)
    return X, Y, train_student(X, Y, None, cfg)


def test_quantization_round_trip_error_is_bounded():
    rng = np.random.default_rng(1)
    W = rng.normal(size=(64, 100)).astype(np.float32) * rng.uniform(0.01, 10, size=(64, 1)).astype(np.float32)
    q, scale = compress.quantize_per_channel(W)
    assert q.dtype == np.int8 and scale.shape == (64,)
    err = np.abs(dequantize(q, scale, None, W.shape) - W)
    # symmetric rounding: at most half a step per channel
    assert np.all(err <= scale[:, None] / 2 + 1e-7)
    assert np.abs(q).max() == 127
    zero = np.zeros((2, 3), np.float32)
    qz, sz = compress.quantize_per_channel(zero)
    assert np.all(qz == 0) and np.all(sz == 1.0)


def test_pruning_reaches_the_configured_sparsity(trained):
    _, _, result = trained
    masks = compress.magnitude_masks(result.model, 0.6)
    for name, mask in masks.items():
        assert abs(1 - mask.mean().item() - 0.6) < 0.01, name
    assert "4.weight" not in masks, "the output layer stays dense"
    with pytest.raises(ValueError):
        compress.magnitude_masks(result.model, 1.0)


def test_folded_float_layers_equal_the_torch_student(trained):
    X, _, result = trained
    folded = compress.fold_layers(result)
    np.testing.assert_allclose(compress.float_forward(folded, X), predict(result.model, result.prep, X), rtol=1e-4, atol=1e-3)


def test_runtime_matches_torch_within_quantization_error(trained, tmp_path):
    X, _, result = trained
    blob = build_artifact(compress.fold_layers(result), feature_columns=None, sources={"test": 1})
    path = tmp_path / "a.uart"
    path.write_bytes(blob)
    proj = Projector.load(path)
    ref = predict(result.model, result.prep, X)
    out = proj.transform(X)
    assert out.shape == (600, 2) and out.dtype == np.float32
    spread = ref.std(0).mean()
    err = np.linalg.norm(out - ref, axis=1)
    assert err.mean() < 0.02 * spread and err.max() < 0.08 * spread
    # chunked transform equals one-shot
    np.testing.assert_allclose(proj.transform(X, batch_rows=7), proj.transform(X, batch_rows=100_000), rtol=1e-5, atol=1e-5)
    assert proj.input_dim == 20 and proj.n_components == 2 and len(proj.version) == 16


def test_sparse_layers_are_stored_compactly_and_exactly(trained):
    import copy

    X, _, original = trained
    result = copy.deepcopy(original)
    masks = compress.magnitude_masks(result.model, 0.7)
    for name, param in result.model.named_parameters():
        if name in masks:
            param.data.mul_(masks[name])
    dense = build_artifact(compress.fold_layers(original))
    blob = build_artifact(compress.fold_layers(result))
    proj = Projector.from_bytes(blob)
    assert [layer["sparse"] for layer in proj.manifest["layers"]] == [False, True, True, False]
    # pruned weights come back exactly zero, the rest where they were
    W1 = proj.layers[1].weight_t.T
    assert np.array_equal(W1 == 0, masks["0.weight"].numpy() == 0)
    ref = compress.float_forward(compress.fold_layers(result), X)
    err = np.linalg.norm(proj.transform(X) - ref, axis=1)
    assert err.mean() < 0.02 * ref.std(0).mean()
    assert len(blob) < len(dense)


def test_corrupt_and_mismatched_artifacts_are_refused(trained, tmp_path):
    X, _, result = trained
    blob = build_artifact(compress.fold_layers(result))
    with pytest.raises(ArtifactError, match="bad magic"):
        Projector.from_bytes(b"PK\x03\x04" + blob[4:], source="x.uart")
    flipped = bytearray(blob)
    flipped[-10] ^= 0xFF
    with pytest.raises(ArtifactError, match="checksum"):
        Projector.from_bytes(bytes(flipped))
    with pytest.raises(ArtifactError, match="truncated|checksum"):
        Projector.from_bytes(blob[:40])
    with pytest.raises(ArtifactError, match="not found"):
        Projector.load(tmp_path / "missing.uart")
    proj = Projector.from_bytes(blob)
    with pytest.raises(ArtifactError, match="expects rows of 20 features"):
        proj.transform(X[:, :5])


def test_every_byte_of_an_artifact_is_checked(trained):
    """A one-byte edit anywhere (manifest included) raises ArtifactError, never another error."""
    X, _, result = trained
    blob = build_artifact(compress.fold_layers(result))
    rng = np.random.default_rng(0)
    for pos in np.concatenate([np.arange(0, 120), rng.choice(len(blob), 300, replace=False)]):
        edited = bytearray(blob)
        edited[pos] ^= 1 + int(rng.integers(255))
        with pytest.raises(ArtifactError, match="x.uart"):
            Projector.from_bytes(bytes(edited), source="x.uart")


def test_a_payload_cannot_decompress_past_its_declared_size():
    import hashlib
    import json
    import lzma
    import struct

    from umap_assets import runtime

    def container(raw_size: int, payload: bytes) -> bytes:
        manifest = json.dumps({"format_version": runtime.FORMAT_VERSION, "arrays": [], "raw_size": raw_size,
                               "payload_sha256": "0" * 64}).encode()
        body = struct.pack("<I", len(manifest)) + manifest + payload
        return runtime.MAGIC + hashlib.sha256(body).digest() + struct.pack("<H", 0) + body

    bomb = lzma.compress(b"\0" * (64 * 2**20))
    with pytest.raises(ArtifactError, match="declared 1000 bytes"):
        runtime.read_container(container(1000, bomb), "bomb.uart")
    with pytest.raises(ArtifactError, match=r"bomb.uart: .* raw_size: 1099511627776 bytes from a \d+-byte payload"):
        runtime.read_container(container(2**40, bomb), "bomb.uart")
    # 64 MiB from a 10 KB payload: past the compression ratio any real artifact has
    with pytest.raises(ArtifactError, match="raw_size: 67108864 bytes from a"):
        runtime.read_container(container(64 * 2**20, bomb), "bomb.uart")


def test_signed_artifacts_need_the_key(trained, monkeypatch):
    from umap_assets.runtime import SIGNING_KEY_ENV

    X, _, result = trained
    layers = compress.fold_layers(result)
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    unsigned = build_artifact(layers)
    monkeypatch.setenv(SIGNING_KEY_ENV, "team-secret")
    signed = build_artifact(layers)
    signed_map = Projector.from_bytes(signed).transform(X)
    with pytest.raises(ArtifactError, match="not signed"):
        Projector.from_bytes(unsigned, source="u.uart")
    monkeypatch.setenv(SIGNING_KEY_ENV, "another-key")
    with pytest.raises(ArtifactError, match="signature does not match"):
        Projector.from_bytes(signed, source="s.uart")
    monkeypatch.delenv(SIGNING_KEY_ENV)
    np.testing.assert_array_equal(signed_map, Projector.from_bytes(unsigned).transform(X))
    assert Projector.from_bytes(signed).version == Projector.from_bytes(unsigned).version


def test_runtime_imports_numpy_only():
    code = ("import sys; import umap_assets.runtime; "
            "bad = [m for m in ('torch', 'sklearn', 'dagster', 'umap', 'pandas') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_training_is_reproducible():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)).astype(np.float32)
    Y = X[:, :2] * 2
    cfg = StudentConfig(hidden=(8,), input_pca_dim=None, steps=8, batch_size=64, graph_weight=0.0, seed=3)
    a = train_student(X, Y, None, cfg)
    b = train_student(X, Y, None, cfg)
    for pa_, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa_, pb)


def test_grouped_quantization_is_finer_than_per_channel_and_round_trips():
    rng = np.random.default_rng(4)
    W = rng.normal(size=(16, 100)).astype(np.float32) * rng.uniform(0.01, 10, size=(1, 100)).astype(np.float32)
    q1, s1 = compress.quantize_per_channel(W)
    qg, sg = compress.quantize_grouped(W, 32)
    assert qg.shape == W.shape and sg.shape == (16, 4)  # 100 inputs: groups of 32, 32, 32 and 4
    err_channel = np.abs(dequantize(q1, s1, None, W.shape) - W).mean()
    err_group = np.abs(dequantize(qg, sg, None, W.shape, 32) - W).mean()
    assert err_group < 0.9 * err_channel
    with pytest.raises(ArtifactError, match="groups of"):
        dequantize(qg, sg, None, W.shape, 20)


def test_artifact_keeps_the_output_layer_in_float32(trained):
    X, _, result = trained
    layers = compress.fold_layers(result)
    proj = Projector.from_bytes(build_artifact(layers))
    specs = proj.manifest["layers"]
    assert specs[-1]["dtype"] == "float32" and all(s["dtype"] == "int8" for s in specs[:-1])
    assert np.array_equal(proj.layers[-1].weight_t, layers[-1].weight.T)


def test_the_artifact_gives_each_row_its_coverage_figure(trained):
    """Rows like the training rows score about 1; rows off the training data's subspace score high;
    the runtime's figure equals the numerics' own (float16 landmarks aside)."""
    from sklearn.decomposition import PCA

    from umap_assets.numerics.drift import coverage_reference

    X, _, result = trained
    train, held_out = X[:500], X[500:]
    pca = PCA(4, random_state=0).fit(train)
    reference = coverage_reference(pca, pca.transform(train), held_out).landmarks(64, held_out)
    assert len(reference.centers) == 64
    proj = Projector.from_bytes(build_artifact(compress.fold_layers(result), coverage=reference))
    assert proj.has_coverage and proj.manifest["coverage"]["landmarks"] == 64
    near = proj.coverage(held_out)
    np.testing.assert_allclose(near, reference.ratios(held_out), rtol=2e-2)
    assert 0.8 < np.median(near) < 1.2
    assert np.mean(near > proj.extrapolation_threshold) == pytest.approx(0.01, abs=0.015)
    far = held_out + 20 * np.random.default_rng(3).normal(size=held_out.shape).astype(np.float32)
    assert np.all(proj.coverage(far) > proj.extrapolation_threshold)
    bare = Projector.from_bytes(build_artifact(compress.fold_layers(result)))
    assert not bare.has_coverage and np.isnan(bare.coverage(X[:3])).all() and bare.extrapolation_threshold is None
