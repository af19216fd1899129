"""Demo data: write a data set as N Parquet slices into ``<home>/incoming``, as if arriving over time.

Sources, in order of preference for ``fashion-mnist``:

1. Debian's package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
2. the ``<home>/cache`` copy of a previous download;
3. a download from the canonical source, checked against the SHA-256 of the decompressed files;
4. scikit-learn's bundled digits, with a message saying so.

``synthetic`` generates clusters on low-dimensional manifolds (see :func:`synthetic_blobs`) and is
what the scale benchmark uses.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path
from .contract import features_list

log = logging.getLogger(__name__)

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# SHA-256 of the decompressed IDX files (the gzip wrappers differ between mirrors).
FASHION_FILES = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DATASETS = ("fashion-mnist", "digits", "synthetic")
# row groups of 64k rows, like the warehouse's own files: a reader holds one row group at a time
ROW_GROUP_ROWS = 65_536


class DataUnavailable(RuntimeError):
    pass


@dataclass
class Dataset:
    X: np.ndarray  # float32 (n, d)
    y: np.ndarray  # int64 (n,)
    name: str
    source: str


def parse_idx(raw: bytes) -> np.ndarray:
    """Parse an IDX file (the MNIST format): big-endian magic, dims, then uint8 data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError("not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"IDX header says {dims} but holds {data.size} values")
    return data.reshape(dims)


def _read_verified(path: Path, sha256: str) -> bytes:
    raw = gzip.decompress(path.read_bytes())
    got = hashlib.sha256(raw).hexdigest()
    if got != sha256:
        raise DataUnavailable(f"{path}: checksum mismatch (sha256 {got}, expected {sha256})")
    return raw


def _fashion_from(directory: Path) -> Dataset:
    parts = {name: parse_idx(_read_verified(directory / name, sha)) for name, sha in FASHION_FILES.items()}
    X = np.concatenate([parts["train-images-idx3-ubyte.gz"], parts["t10k-images-idx3-ubyte.gz"]]).reshape(-1, 784)
    y = np.concatenate([parts["train-labels-idx1-ubyte.gz"], parts["t10k-labels-idx1-ubyte.gz"]])
    return Dataset(X.astype(np.float32), y.astype(np.int64), "fashion-mnist", str(directory))


def _download_fashion(cache: Path, url: str = FASHION_URL, timeout: float = 30.0) -> Path:
    target = cache / "fashion-mnist"
    target.mkdir(parents=True, exist_ok=True)
    for name, sha in FASHION_FILES.items():
        dest = target / name
        if dest.exists():
            try:
                _read_verified(dest, sha)
                continue
            except (DataUnavailable, OSError, EOFError):
                dest.unlink()
        log.info("downloading %s%s", url, name)
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(url + name, timeout=timeout) as resp, open(tmp, "wb") as fh:
                fh.write(resp.read())
            _read_verified(tmp, sha)
    return target


def load_fashion_mnist(cache: Path | None, allow_download: bool = True) -> Dataset:
    if all((DEBIAN_FASHION_DIR / n).exists() for n in FASHION_FILES):
        return _fashion_from(DEBIAN_FASHION_DIR)
    if cache is not None and all((cache / "fashion-mnist" / n).exists() for n in FASHION_FILES):
        try:
            return _fashion_from(cache / "fashion-mnist")
        except (DataUnavailable, OSError, ValueError, EOFError):
            pass
    if cache is None or not allow_download:
        raise DataUnavailable("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    try:
        return _fashion_from(_download_fashion(cache))
    except (OSError, DataUnavailable) as exc:
        raise DataUnavailable(f"Fashion-MNIST could not be downloaded: {exc}") from exc


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    return Dataset(d.data.astype(np.float32), d.target.astype(np.int64), "digits", "scikit-learn")


def synthetic_blobs(
    n: int, dim: int = 64, n_clusters: int = 12, intrinsic_dim: int = 3, seed: int = 0, noise: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Clusters on curved low-dimensional manifolds embedded in ``dim`` dimensions.

    Each cluster is a random smooth map of an ``intrinsic_dim``-dimensional latent box (a random
    linear map of sin/cos features) placed at a random centre, plus isotropic noise. Deterministic
    for a given seed, and generated in row order, so slices of a large set can be made one by one
    with :func:`synthetic_chunk`.
    """
    return synthetic_chunk(0, n, dim=dim, n_clusters=n_clusters, intrinsic_dim=intrinsic_dim, seed=seed, noise=noise)


def synthetic_chunk(
    start: int,
    n: int,
    *,
    dim: int = 64,
    n_clusters: int = 12,
    intrinsic_dim: int = 3,
    seed: int = 0,
    noise: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``start .. start+n`` of the synthetic set (same structure for every chunk)."""
    structure = np.random.default_rng(seed)
    centres = structure.normal(0.0, 4.0, size=(n_clusters, dim)).astype(np.float32)
    n_feat = 4 * intrinsic_dim
    maps = structure.normal(0.0, 1.0, size=(n_clusters, n_feat, dim)).astype(np.float32) / np.sqrt(n_feat)
    freqs = structure.uniform(0.5, 2.0, size=(n_clusters, intrinsic_dim)).astype(np.float32)
    rng = np.random.default_rng([seed, start])
    y = rng.integers(0, n_clusters, size=n)
    t = rng.uniform(-1.0, 1.0, size=(n, intrinsic_dim)).astype(np.float32)
    X = np.empty((n, dim), dtype=np.float32)
    for c in range(n_clusters):
        rows = np.flatnonzero(y == c)
        if rows.size == 0:
            continue
        tc = t[rows] * freqs[c] * np.pi
        feats = np.concatenate([np.sin(tc), np.cos(tc), np.sin(2 * tc), t[rows] * 2.0], axis=1)
        X[rows] = centres[c] + feats @ maps[c]
    X += rng.normal(0.0, noise, size=X.shape).astype(np.float32)
    return X, y.astype(np.int64)


def load_dataset(name: str, cache: Path | None, allow_download: bool = True, say: Callable[[str], None] = print) -> Dataset:
    if name == "fashion-mnist":
        try:
            return load_fashion_mnist(cache, allow_download=allow_download)
        except DataUnavailable as exc:
            say(f"{exc}; falling back to scikit-learn's digits.")
            return load_digits()
    if name == "digits":
        return load_digits()
    if name == "synthetic":
        X, y = synthetic_blobs(20_000)
        return Dataset(X, y, "synthetic", "generated")
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")


def write_slice(path: Path, ids: np.ndarray, X: np.ndarray, y: np.ndarray | None) -> Path:
    """Write one slice as a user's file would hold it (``features`` a fixed-size list of float32), atomically
    (the sensor ignores temp names)."""
    columns = {"id": pa.array(ids.astype(np.int64)), "features": features_list(X)}
    if y is not None:
        columns["label"] = pa.array(y.astype(str) if y.dtype.kind in "US" else y.astype(np.int64))  # int or string, as the contract allows
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    return path


def write_demo_slices(
    incoming: Path,
    dataset: str = "fashion-mnist",
    n_slices: int = 7,
    *,
    cache: Path | None = None,
    allow_download: bool = True,
    seed: int = 0,
    overwrite: bool = False,
    say: Callable[[str], None] = print,
) -> list[Path]:
    """Shuffle the data set with ``seed`` and write it as ``n_slices`` Parquet files."""
    if n_slices < 1:
        raise ValueError("n_slices must be >= 1")
    data = load_dataset(dataset, cache, allow_download=allow_download, say=say)
    incoming.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(data.X))
    paths = []
    for i, rows in enumerate(np.array_split(order, n_slices)):
        path = incoming / f"{data.name.replace('-', '_')}_{i:03d}.parquet"
        if path.exists() and not overwrite:
            say(f"{path.name} is already there; keeping it (use --overwrite to replace it)")
        else:
            write_slice(path, rows, data.X[rows], data.y[rows])
        paths.append(path)
    say(f"wrote {len(paths)} slices of {data.name} ({len(data.X):,} rows x {data.X.shape[1]} dims, from {data.source}) to {incoming}")
    return paths


def allow_download_default() -> bool:
    return os.environ.get("UMAP_ASSETS_OFFLINE", "") not in ("1", "true", "yes")
