"""Drift: does the current model's training data cover a new slice?

The coreset is a k-center cover of the training rows: almost every training row lies within a small
distance of some coreset row. A :class:`CoverageReference` keeps a principal subspace of the training
rows that holds most of their variance (:func:`fit_coverage_basis`), the projected coreset rows and the ``quantile`` (0.99 by default) of held-out rows' distances to
their nearest coreset row. A new slice is scored by the fraction of its rows that lie farther than
that radius. Rows like the training data leave about ``1 - quantile`` of themselves uncovered; a
new cluster, a shifted feature, or a new kind of row leaves much more. The map was not fitted on
those regions, so the model should be retrained. A global change that keeps rows near the cover
(rescaled pixel values, say) shows instead in the median distance to the coreset, relative to the
held-out rows' median, which stays near 1.0 for data like the training data.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from dataclasses import dataclass

import numpy as np

from .coreset import fit_pca_projection, k_center_greedy, min_sq_dist_to


@dataclass(frozen=True)
class CoverageReference:
    """What a model's training data covers: a PCA, the projected coreset rows and a radius.

    Build it with :func:`coverage_reference`, score slices with :func:`drift_score`, and store it
    with :meth:`to_bytes` / :meth:`from_bytes`. Distances are Euclidean, to the centers' reconstructions
    (:func:`coverage_distances`): the PCA space plus each row's residual off it.

    Attributes
    ----------
    mean : ndarray of float32, shape (d,)
        PCA mean.
    components : ndarray of float32, shape (p, d)
        PCA components.
    centers : ndarray of float32, shape (m, p)
        The coreset rows in PCA space.
    radius : float
        The ``quantile`` of the held-out calibration rows' distances to their nearest center.
    quantile : float
        In (0, 1).
    median_distance : float
        Median distance of the calibration rows to their nearest center.
    """

    mean: np.ndarray  # (d,) PCA mean
    components: np.ndarray  # (p, d) PCA components
    centers: np.ndarray  # (m, p) the coreset rows in PCA space
    radius: float  # the ``quantile`` of the training rows' distances to their nearest center
    quantile: float
    median_distance: float  # median distance of the training rows to their nearest center

    def project(self, X: np.ndarray) -> np.ndarray:
        return principal_coordinates(X, self.mean, self.components)

    def distances(self, X: np.ndarray) -> np.ndarray:
        """Distance of each row of ``X`` to its nearest center (:func:`coverage_distances`)."""
        return coverage_distances(X, self.mean, self.components, self.centers)

    def calibrated(self, calibration_rows: np.ndarray) -> CoverageReference:
        """The same PCA and centers, the radius and median set by ``calibration_rows`` (held-out rows)."""
        if len(calibration_rows) == 0:
            raise ValueError("the coverage radius needs at least one held-out row")
        d = self.distances(calibration_rows).astype(np.float64)
        return dataclasses.replace(self, radius=float(np.quantile(d, self.quantile)), median_distance=float(np.median(d)))

    def landmarks(self, n: int, calibration_rows: np.ndarray, seed: int = 0,
                  n_components: int | None = None) -> CoverageReference:
        """At most ``n`` of the centers that cover the rest (greedy k-center), in the first ``n_components``
        principal components (all when None; what the dropped ones held counts as residual), recalibrated
        on ``calibration_rows``: a reference small enough to travel inside an artifact."""
        p = len(self.components) if n_components is None else max(1, min(n_components, len(self.components)))
        centers = self.centers[:, :p]
        chosen = np.sort(k_center_greedy(centers, n, seed=seed).indices)
        return dataclasses.replace(self, components=np.ascontiguousarray(self.components[:p]),
                                   centers=np.ascontiguousarray(centers[chosen])).calibrated(calibration_rows)

    def ratios(self, X: np.ndarray) -> np.ndarray:
        """Each row's coverage figure: its distance over the held-out rows' median (about 1 for
        rows like the training data; above ``radius / median_distance`` for 1 - quantile of them)."""
        return (self.distances(X) / max(self.median_distance, 1e-12)).astype(np.float32)

    def to_bytes(self, include_centers: bool = True) -> bytes:
        """Serialised (base64 of an ``.npz``). Without centers it is small enough for a Parquet
        file's metadata; :meth:`from_bytes` then projects them again from the coreset's rows."""
        arrays = {"mean": self.mean, "components": self.components,
                  "scalars": np.array([self.radius, self.quantile, self.median_distance])}
        if include_centers:
            arrays["centers"] = self.centers
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return base64.b64encode(buf.getvalue())

    @classmethod
    def from_bytes(cls, blob: bytes, coreset_rows: np.ndarray | None = None) -> CoverageReference:
        with np.load(io.BytesIO(base64.b64decode(blob))) as f:
            radius, quantile, median = f["scalars"].tolist()
            mean, components = f["mean"], f["components"]
            centers = f["centers"] if "centers" in f.files else None
        if centers is None:
            if coreset_rows is None:
                raise ValueError("this reference was saved without its centers; pass the coreset's rows")
            centers = ((np.asarray(coreset_rows, np.float32) - mean) @ components.T).astype(np.float32)
        return cls(mean, components, centers, radius, quantile, median)


def principal_coordinates(X: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Rows ``X`` centred on ``mean`` and projected on the orthonormal ``components``, as float32."""
    return ((np.asarray(X, np.float32) - mean) @ components.T).astype(np.float32)


def coverage_distances(X: np.ndarray, mean: np.ndarray, components: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Distance of each row of ``X`` to its nearest center, measured as rows of the input space.

    The distance within the PCA space plus what the PCA drops (the row's residual off it): the
    exact distance to the centers' reconstructions ``mean + c @ components``. A row that leaves the
    training data's principal subspace (a new topic among sentence embeddings, whose variance is
    spread over hundreds of components) is far, not hidden. The artifact runtime, which travels
    alone to Spark executors, keeps its own copy (:func:`umap_assets.runtime.coverage_distances`);
    the tests hold the two equal.

    Parameters
    ----------
    X : array_like of shape (n, d)
    mean : ndarray of shape (d,)
    components : ndarray of shape (p, d)
        Orthonormal rows (a PCA's ``components_``).
    centers : ndarray of shape (m, p)
        Centers in the PCA space.

    Returns
    -------
    ndarray of float32, shape (n,)
    """
    centred = np.asarray(X, np.float32) - np.asarray(mean, np.float32)
    Z = (centred @ np.asarray(components, np.float32).T).astype(np.float32)
    residual = np.maximum(np.einsum("ij,ij->i", centred, centred) - np.einsum("ij,ij->i", Z, Z), 0.0)
    return np.sqrt(min_sq_dist_to(Z, np.asarray(centers, np.float32)) + residual).astype(np.float32)


def coverage_reference(pca, centers: np.ndarray, calibration_rows: np.ndarray, quantile: float = 0.99
                       ) -> CoverageReference:
    """The reference from a fitted PCA, the projected coreset rows, and held-out rows of the training data.

    The held-out rows (rows the coreset did not choose from, such as the validation rows) set the
    radius by their distances to the coreset. Held-out rows matter: k-center makes the outlying
    training rows centers, so the training rows' own distances understate a new row's.

    Parameters
    ----------
    pca : sklearn.decomposition.PCA or CoverageBasis
        Fitted; its ``mean_`` (d,) and ``components_`` (p, d) are used (no whitening).
    centers : ndarray of shape (m, p)
        The coreset rows, already projected with ``pca``.
    calibration_rows : ndarray of shape (n, d)
        Held-out training rows, in the raw feature space.
    quantile : float, default 0.99
        Quantile of the calibration rows' distances that sets the radius, in (0, 1).

    Returns
    -------
    CoverageReference

    Raises
    ------
    ValueError
        If ``quantile`` is not in (0, 1), or ``calibration_rows`` is empty.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    return CoverageReference(
        mean=np.asarray(pca.mean_, np.float32),
        components=np.asarray(pca.components_, np.float32),
        centers=np.ascontiguousarray(centers, np.float32),
        radius=0.0, quantile=float(quantile), median_distance=0.0,
    ).calibrated(calibration_rows)


@dataclass(frozen=True)
class CoverageBasis:
    """The principal subspace a coverage reference measures in: ``mean_`` (d,), orthonormal ``components_``
    (p, d) and the share of the rows' variance each keeps (``explained_variance_ratio_``), as a PCA's."""

    mean_: np.ndarray
    components_: np.ndarray
    explained_variance_ratio_: np.ndarray

    def transform(self, X: np.ndarray) -> np.ndarray:
        return principal_coordinates(X, self.mean_, self.components_)


def fit_coverage_basis(X: np.ndarray, kept_variance: float, max_dim: int, seed: int = 0,
                       max_fit_rows: int = 20_000) -> CoverageBasis:
    """The fewest leading principal components of ``X`` (at most ``max_dim``) that keep ``kept_variance``
    of its variance.

    A coverage measured in a few components misses what the data hold beyond them. Sentence
    embeddings spread their variance over hundreds of components (32 keep 0.43 of it): a topic no
    model saw differs from the training rows mostly there, so at 32 components it is drift-free by
    the uncovered share and the median ratio alike, while at 0.9 of the variance every held-out topic
    crosses a limit and no trained one does (bench/RESULTS.md, session 21). Pixels need fewer
    (Fashion-MNIST: 84 components). The PCA is fitted on at most ``max_fit_rows`` rows (seeded).
    """
    if not 0.0 < kept_variance <= 1.0:
        raise ValueError(f"kept_variance must be in (0, 1], got {kept_variance}")
    pca = fit_pca_projection(X, max_dim, seed=seed, max_fit_rows=max_fit_rows)
    ratios = np.asarray(pca.explained_variance_ratio_, np.float64)
    p = min(len(ratios), int(np.searchsorted(np.cumsum(ratios), kept_variance - 1e-9)) + 1)
    return CoverageBasis(np.asarray(pca.mean_, np.float32), np.ascontiguousarray(pca.components_[:p], np.float32),
                         ratios[:p])


@dataclass(frozen=True)
class DriftScore:
    """How a slice scores against a :class:`CoverageReference` (see :func:`drift_score`).

    ``drifted(max_uncovered_fraction, max_median_distance_ratio=inf)`` is True when either value
    exceeds its threshold.

    Attributes
    ----------
    rows : int
        Rows scored.
    uncovered_fraction : float
        Share of the rows farther from the coreset than the reference radius.
    expected_uncovered : float
        What rows like the training data give: ``1 - quantile``.
    median_distance_ratio : float
        Median distance of the rows to the coreset over the calibration rows' median; near 1.0 for
        data like the training data, inf when the reference median is 0.
    """

    rows: int
    uncovered_fraction: float  # share of rows farther from the coreset than the reference radius
    expected_uncovered: float  # what rows like the training data give: 1 - quantile
    median_distance_ratio: float  # median distance to the coreset, over the training rows' median

    def drifted(self, max_uncovered_fraction: float, max_median_distance_ratio: float = float("inf")) -> bool:
        """Too many rows outside the cover (new regions), or the typical row pushed away from the
        training data (a global change, such as rescaled features, that keeps rows near the cover)."""
        return (self.uncovered_fraction > max_uncovered_fraction
                or self.median_distance_ratio > max_median_distance_ratio)


def drift_score(reference: CoverageReference, X: np.ndarray) -> DriftScore:
    """Score rows ``X`` (a slice, or a sample of it) against the reference.

    Parameters
    ----------
    reference : CoverageReference
    X : ndarray of shape (n, d)
        Raw feature rows, with the training rows' ``d`` features.

    Returns
    -------
    DriftScore

    Raises
    ------
    ValueError
        If ``X`` has no rows, or a number of features other than the reference's.
    """
    if len(X) == 0:
        raise ValueError("cannot score drift on zero rows")
    if X.shape[1] != reference.mean.shape[0]:
        raise ValueError(f"rows have {X.shape[1]} features, the model's training rows {reference.mean.shape[0]}")
    d = reference.distances(X)
    median = float(np.median(d))
    return DriftScore(
        rows=int(len(X)),
        uncovered_fraction=float(np.mean(d > reference.radius)),
        expected_uncovered=1.0 - reference.quantile,
        median_distance_ratio=median / reference.median_distance if reference.median_distance > 0 else float("inf"),
    )
