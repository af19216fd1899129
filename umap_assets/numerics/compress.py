"""Compress a trained student into a runtime artifact's contents: fold, prune, quantize.

* **Fold.** The input map ``z = C (x - mu) / s`` becomes a linear first layer (no activation), and
  the output scaling ``y = out * y_scale + y_mean`` is folded into the last layer, so the artifact
  reads raw features and writes map coordinates.
* **Prune.** Magnitude pruning per layer: the smallest ``|w|`` of each MLP layer are set to zero up
  to the configured sparsity (then the caller fine-tunes with the mask fixed).
* **Quantize.** Per output channel, symmetric int8: ``scale = max|w| / 127``, ``q = round(w / scale)``.
  Biases and scales stay float32. The runtime dequantises once at load.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .distill import StudentResult


@dataclass
class FloatLayer:
    """One dense layer of the folded float network: ``h = activation(h @ weight.T + bias)``.

    Attributes
    ----------
    weight : ndarray of float32, shape (out, in)
    bias : ndarray of float32, shape (out,)
    activation : {"relu", "none"}
        Applied after the affine map.
    input_mean : ndarray of shape (in,) or None
        Mean of this layer's input, when known (layer 0 of :func:`fold_layers`); :func:`artifact_contents`
        uses it to correct the quantized layer's bias.
    """

    weight: np.ndarray  # (out, in) float32
    bias: np.ndarray  # (out,)
    activation: str  # "relu" or "none"
    input_mean: np.ndarray | None = None  # mean of this layer's input, when known (layer 0)


def linear_modules(model: nn.Sequential) -> list[tuple[str, nn.Linear, str]]:
    """(parameter prefix, layer, activation after it) for each Linear of an MLP.

    Parameters
    ----------
    model : nn.Sequential
        The MLP, as built by :func:`umap_assets.numerics.distill.build_mlp`.

    Returns
    -------
    list of (str, nn.Linear, str)
        In order: the child's name (``"0"``, ``"2"``, ...; its parameters are ``"<name>.weight"`` and
        ``"<name>.bias"``), the layer, and ``"relu"`` when the next child is an ``nn.ReLU``, else ``"none"``.
    """
    mods = list(model.named_children())
    out = []
    for i, (name, mod) in enumerate(mods):
        if isinstance(mod, nn.Linear):
            act = "relu" if i + 1 < len(mods) and isinstance(mods[i + 1][1], nn.ReLU) else "none"
            out.append((name, mod, act))
    return out


def magnitude_masks(model: nn.Sequential, sparsity: float) -> dict[str, torch.Tensor]:
    """0/1 masks that zero the ``sparsity`` fraction of smallest-magnitude weights of each layer.

    The output layer is left dense: it is tiny, and it sets the map's coordinates directly.

    Parameters
    ----------
    model : nn.Sequential
        The MLP to prune (read only).
    sparsity : float
        Fraction of each hidden layer's weights to zero, in [0, 1).

    Returns
    -------
    dict of str to Tensor
        Parameter name (``"<prefix>.weight"``) -> mask of the weight's shape and dtype: 0 for the
        ``int(sparsity * numel)`` smallest ``|w|`` (and any tied with the largest of them), 1 elsewhere.
        Layers where that count is 0 get no mask.

    Raises
    ------
    ValueError
        If ``sparsity`` is not in [0, 1).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    masks = {}
    layers = linear_modules(model)
    for name, layer, _ in layers[:-1]:
        w = layer.weight.detach().abs().flatten()
        k = int(sparsity * w.numel())
        if k == 0:
            continue
        threshold = torch.kthvalue(w, k).values
        masks[f"{name}.weight"] = (layer.weight.detach().abs() > threshold).to(layer.weight.dtype)
    return masks


def prune(result: StudentResult, X: np.ndarray, sparsity: float, steps: int, learning_rate: float) -> StudentResult:
    """Magnitude-prune a trained student, then fine-tune it with the mask fixed.

    The fine-tuning is self-distillation: the pruned network learns to reproduce the float
    student's own map of the rows ``X`` for ``steps`` steps.

    Parameters
    ----------
    result : StudentResult
        The trained float student (left unchanged).
    X : ndarray of shape (n, d)
        Rows to fine-tune on (the distillation rows).
    sparsity : float
        Fraction of each hidden layer's weights set to zero, in [0, 1).
    steps, learning_rate : int, float
        The fine-tuning schedule; ``steps=0`` prunes without fine-tuning.

    Returns
    -------
    StudentResult
        A new result whose pruned weights are exactly zero; an unchanged copy when ``sparsity <= 0``.

    Raises
    ------
    ValueError
        If ``sparsity >= 1`` (from :func:`magnitude_masks`).
    """
    from .distill import StudentConfig, train_student

    pruned = copy.deepcopy(result)
    if sparsity <= 0:
        return pruned
    masks = magnitude_masks(pruned.model, sparsity)
    for name, param in pruned.model.named_parameters():
        if name in masks:
            param.data.mul_(masks[name])
    if steps <= 0:
        return pruned
    fields = {**result.config, "hidden": tuple(result.config["hidden"]), "steps": steps,
              "learning_rate": learning_rate, "graph_weight": 0.0, "noise_std": 0.0, "mix_weight": 0.0}
    return train_student(X, result.transform(X), None, StudentConfig(**fields), init=pruned, masks=masks)


def sparsity_of(model: nn.Sequential) -> dict[str, float]:
    """Fraction of exactly-zero weights in each Linear layer of an MLP.

    Parameters
    ----------
    model : nn.Sequential

    Returns
    -------
    dict of str to float
        Parameter name (``"<prefix>.weight"``) -> fraction in [0, 1], for every Linear layer, the
        output layer included.
    """
    return {
        f"{name}.weight": float((layer.weight == 0).float().mean())
        for name, layer, _ in linear_modules(model)
    }


def fold_layers(result: StudentResult) -> list[FloatLayer]:
    """The student as float layers over raw features, with pre- and post-processing folded in.

    Parameters
    ----------
    result : StudentResult
        The trained student (left unchanged).

    Returns
    -------
    list of FloatLayer
        Layer 0 is the input map: weight ``components / scale`` of shape (k, d), bias
        ``-weight @ mean``, no activation, ``input_mean`` set to ``prep.mean``. Then one layer per
        Linear of the MLP; the last has ``y_scale`` and ``y_mean`` folded in, so :func:`float_forward`
        of these layers reproduces ``result.transform`` up to float32 rounding.
    """
    prep = result.prep
    W0 = prep.components / prep.scale
    layers = [FloatLayer(W0.astype(np.float32), (-(W0 @ prep.mean)).astype(np.float32), "none", prep.mean)]
    mods = linear_modules(result.model)
    for idx, (_, mod, act) in enumerate(mods):
        W = mod.weight.detach().numpy().astype(np.float32)
        b = mod.bias.detach().numpy().astype(np.float32)
        if idx == len(mods) - 1:
            W = W * prep.y_scale
            b = b * prep.y_scale + prep.y_mean
        layers.append(FloatLayer(W, b, act))
    return layers


def quantize_per_channel(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (row): ``W ~= q * scale[:, None]``.

    Parameters
    ----------
    W : array_like of shape (out, in)
        Weights; converted to float32.

    Returns
    -------
    q : ndarray of int8, shape (out, in)
        Values in [-127, 127].
    scale : ndarray of float32, shape (out,)
        ``max|W[o]| / 127``; 1.0 for an all-zero row.
    """
    q, scale = quantize_grouped(W, np.shape(W)[1])
    return q, scale[:, 0]


def quantize_grouped(W: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel and per group of ``group`` inputs.

    Parameters
    ----------
    W : ndarray of shape (out, in)
        Weights; converted to float32.
    group : int
        Inputs that share a scale; ``group >= in`` is plain per-channel quantization.

    Returns
    -------
    q : ndarray of int8, shape (out, in)
        Values in [-127, 127].
    scale : ndarray of float32, shape (out, ceil(in / group))
        ``W[o, i] ~= q[o, i] * scale[o, i // group]``; each scale is ``max|w| / 127`` over its group,
        1.0 for an all-zero group.
    """
    W = np.asarray(W, dtype=np.float32)
    out_dim, in_dim = W.shape
    n_groups = -(-in_dim // group)
    padded = np.zeros((out_dim, n_groups * group), dtype=np.float32)
    padded[:, :in_dim] = W
    blocks = padded.reshape(out_dim, n_groups, group)
    maxabs = np.abs(blocks).max(axis=2)
    scale = np.where(maxabs > 0, maxabs / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(blocks / scale[:, :, None]), -127, 127).astype(np.int8)
    return q.reshape(out_dim, -1)[:, :in_dim], scale


def float_forward(layers: list[FloatLayer], X: np.ndarray) -> np.ndarray:
    """Run float layers on rows ``X`` in float32: the unquantized reference for an artifact.

    Parameters
    ----------
    layers : list of FloatLayer
        For example from :func:`fold_layers`.
    X : array_like of shape (n, in)
        Raw feature rows; converted to float32.

    Returns
    -------
    ndarray of shape (n, out)
        ``out`` is the last layer's output size (``n_components`` for :func:`fold_layers`); float32
        when the layers are.
    """
    h = np.asarray(X, dtype=np.float32)
    for layer in layers:
        h = h @ layer.weight.T + layer.bias
        if layer.activation == "relu":
            h = np.maximum(h, 0.0)
    return h


def artifact_contents(
    layers: list[FloatLayer],
    *,
    feature_columns: list[str] | None = None,
    sources: dict | None = None,
    extra: dict | None = None,
    sparse_min_fraction: float = 0.2,
    group: int = 32,
    float_output_layer: bool = True,
    coverage=None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Quantize ``layers`` into an artifact's manifest and arrays (:func:`umap_assets.artifacts.build_artifact`
    writes them in the runtime's container, :mod:`umap_assets.runtime`).

    Hidden layers are int8 with one scale per output channel and ``group`` inputs. The output
    layer (``n_components`` rows, a few hundred weights) stays float32 when
    ``float_output_layer``: it writes the map's coordinates directly, so its rounding moves every
    point (bench/RESULTS.md).

    Scales are stored as float16. When a layer has ``input_mean``, its bias is corrected so the
    quantized layer is exact at that input. A quantized layer with at least ``sparse_min_fraction``
    zero weights is stored sparse: a bit mask of the nonzero positions and their values.

    Parameters
    ----------
    layers : list of FloatLayer
        The float network, as from :func:`fold_layers`.
    feature_columns : list of str, optional
        Names of the input features, recorded in the manifest (``None`` when empty).
    sources : dict, optional
        Provenance recorded under the manifest's ``"sources"`` (``{}`` when None).
    extra : dict, optional
        Further manifest keys; they are merged last, so they override the standard ones.
    sparse_min_fraction : float, default 0.2
        Share of zero int8 weights from which a layer is stored sparse.
    group : int, default 32
        Inputs that share one scale (see :func:`quantize_grouped`).
    float_output_layer : bool, default True
        Keep the last layer's weights in float32 instead of int8.
    coverage : umap_assets.numerics.drift.CoverageReference, optional
        The training data's landmarks, stored so the runtime gives each row its coverage figure
        (``coverage_mean`` float32, ``coverage_components`` and ``coverage_centers`` float16, and
        the manifest's ``coverage``: median distance, radius and quantile).

    Returns
    -------
    (dict, dict of ndarray)
        The manifest and the arrays of the container. Per layer ``i`` the arrays hold
        ``w{i}`` and ``bias{i}`` (float32) for a float layer; otherwise ``q{i}`` (int8, of shape
        (out, in), or the nonzero values when sparse, with ``mask{i}`` the ``np.packbits`` of the
        nonzero positions), ``scale{i}`` (float16, shape (out, ceil(in / group))) and ``bias{i}`` (float32).
    """
    arrays: dict[str, np.ndarray] = {}
    specs = [
        _float_layer(i, layer, arrays) if float_output_layer and i == len(layers) - 1
        else _int8_layer(i, layer, arrays, group, sparse_min_fraction)
        for i, layer in enumerate(layers)
    ]
    manifest = {
        "kind": "umap-assets/projector",
        "input_dim": int(layers[0].weight.shape[1]),
        "n_components": int(layers[-1].weight.shape[0]),
        "feature_columns": list(feature_columns) if feature_columns else None,
        "preprocessing": "input centring, PCA projection and scaling folded into layer 0; "
                         "output de-normalisation folded into the last layer",
        "quantization": f"int8 symmetric per output channel and {group} inputs"
                        + ("; output layer float32" if float_output_layer else ""),
        "layers": specs,
        "sources": sources or {},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    if coverage is not None:
        arrays["coverage_mean"] = np.asarray(coverage.mean, np.float32)
        arrays["coverage_components"] = np.asarray(coverage.components, np.float16)
        arrays["coverage_centers"] = np.asarray(coverage.centers, np.float16)
        manifest["coverage"] = {"median_distance": float(coverage.median_distance), "radius": float(coverage.radius),
                                "quantile": float(coverage.quantile), "landmarks": int(len(coverage.centers))}
    return manifest, arrays


def _float_layer(i: int, layer: FloatLayer, arrays: dict[str, np.ndarray]) -> dict:
    """Store layer ``i`` in float32 (``w{i}``, ``bias{i}``); return its manifest entry."""
    out_dim, in_dim = layer.weight.shape
    arrays[f"w{i}"] = layer.weight.astype(np.float32)
    arrays[f"bias{i}"] = layer.bias.astype(np.float32)
    return {"in": int(in_dim), "out": int(out_dim), "activation": layer.activation, "dtype": "float32",
            "sparse": False, "zero_fraction": round(float((layer.weight == 0).mean()), 4)}


def _int8_layer(i: int, layer: FloatLayer, arrays: dict[str, np.ndarray], group: int, sparse_min_fraction: float) -> dict:
    """Store layer ``i`` as grouped int8 (``q{i}``, ``scale{i}``, ``bias{i}``, ``mask{i}`` when sparse);
    return its manifest entry."""
    out_dim, in_dim = layer.weight.shape
    q, scale = quantize_grouped(layer.weight, group)
    scale = scale.astype(np.float16).astype(np.float32)  # stored in half precision: 1e-3 relative
    bias = layer.bias.astype(np.float64)
    if layer.input_mean is not None:
        # bias correction: make the quantized layer exact at the mean input, so the rounding
        # error of W does not turn into an offset when inputs sit far from the origin
        error = q.astype(np.float64) * np.repeat(scale, group, axis=1)[:, :in_dim] - layer.weight
        bias = bias - error @ layer.input_mean.astype(np.float64)
    zeros = float((q == 0).mean())
    sparse = zeros >= sparse_min_fraction
    if sparse:
        nz = q.reshape(-1) != 0
        arrays[f"mask{i}"] = np.packbits(nz)
        arrays[f"q{i}"] = q.reshape(-1)[nz]
    else:
        arrays[f"q{i}"] = q
    arrays[f"scale{i}"] = scale.astype(np.float16)
    arrays[f"bias{i}"] = bias.astype(np.float32)
    return {"in": int(in_dim), "out": int(out_dim), "activation": layer.activation,
            "sparse": sparse, "zero_fraction": round(zeros, 4), "dtype": "int8", "group": int(group)}
