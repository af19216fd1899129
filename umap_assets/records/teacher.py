"""The teacher: umap-learn's fit of the coreset, as documented arrays (no pickled estimator).

A :class:`Teacher` keeps what the training chain needs of the fit, and how to rebuild the rest:

- ``uids``: the coreset rows (``slice/id``), in the order of every array below;
- ``rows``: their features (float32), from which the kNN search is rebuilt;
- ``embedding``: their coordinates: the layout the student learns and ``transform`` places rows against
  (the fit's own, or the served map carried over, see ``carry_served_layout``);
- ``graph``: the fuzzy simplicial set (symmetric CSR: ``graph_data``, ``graph_indices``, ``graph_indptr``);
- ``a``, ``b``: the low-dimensional curve ``1 / (1 + a d^(2b))`` of the fit;
- ``params``: the ``umap.UMAP`` constructor arguments it was fitted with (``random_state`` the seed);
- ``knn_neighbors``, ``small_data``: the neighbour count the fit used, and whether it searched exactly;
- ``alignment``, ``aligned_to``: the similarity from this layout's frame to the served model's map it
  was aligned to, and that model's version (``None`` when nothing was served).

**The rebuild recipe** (:meth:`Teacher.estimator`): construct ``umap.UMAP(**params)``, give it the rows,
let umap-learn validate its parameters, and set the fitted state (``embedding_``, ``graph_``, ``_a``,
``_b``, ``_n_neighbors``, the input hash). A fit on fewer than 4,096 rows searched neighbours exactly
(``small_data``), and so does the rebuilt estimator: its ``transform`` equals the fitted one's. On more
rows the search index is built again with umap-learn's own ``nearest_neighbors`` over the same rows,
with the fit's parameters and ``random_state`` (0 when the fit had none): deterministic, and as
approximate as the fit's own index, which it need not equal neighbour for neighbour.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse

from ..numerics.align import Similarity
from ..numerics.distill import FuzzyGraph
from ._files import content_version, read, strings, write_once

KIND = "teacher"

#: The ``umap.UMAP`` arguments a teacher records, and rebuilds its estimator with.
PARAMS = ("n_neighbors", "min_dist", "spread", "metric", "n_components", "negative_sample_rate", "learning_rate",
          "local_connectivity", "set_op_mix_ratio", "repulsion_strength", "transform_seed", "n_epochs",
          "random_state", "low_memory", "angular_rp_forest", "n_jobs")


@dataclass(frozen=True, eq=False)
class Teacher:
    uids: list[str]
    rows: np.ndarray
    embedding: np.ndarray
    graph: scipy.sparse.csr_matrix
    a: float
    b: float
    params: dict
    knn_neighbors: int
    small_data: bool
    alignment: dict | None = None
    aligned_to: str | None = None
    _estimator: list = field(default_factory=list, repr=False, compare=False)  # the rebuilt estimator, once

    @classmethod
    def from_fitted(cls, model, uids: list[str], *, embedding: np.ndarray | None = None,
                    alignment: Similarity | None = None, aligned_to: str | None = None) -> "Teacher":
        """The record of a fitted ``umap.UMAP`` (its ``embedding_``, or ``embedding`` in its place)."""
        params = {name: getattr(model, name) for name in PARAMS}
        if not isinstance(params["random_state"], (int, type(None))):
            raise TypeError("a teacher's random_state must be an int seed or None, to be recorded")
        return cls(uids=list(uids), rows=np.ascontiguousarray(model._raw_data, np.float32),
                   embedding=np.asarray(model.embedding_ if embedding is None else embedding, np.float32),
                   graph=scipy.sparse.csr_matrix(model.graph_, dtype=np.float32), a=float(model._a),
                   b=float(model._b), params=params, knn_neighbors=int(model._n_neighbors),
                   small_data=bool(model._small_data),
                   alignment=None if alignment is None else alignment.to_dict(), aligned_to=aligned_to)

    def replace(self, **changes) -> "Teacher":
        return dataclasses.replace(self, _estimator=[], **changes)

    @property
    def fuzzy_graph(self) -> FuzzyGraph:
        """The graph and the curve (``a``, ``b``) the student's cross-entropy learns from."""
        return FuzzyGraph(self.graph, self.a, self.b)

    @property
    def n_components(self) -> int:
        return int(self.embedding.shape[1])

    @property
    def similarity(self) -> Similarity:
        """From this layout's frame to the served model's it was aligned to (identity when none)."""
        return Similarity.identity(self.n_components) if self.alignment is None else Similarity.from_dict(self.alignment)

    # ---- files

    def _arrays_and_header(self) -> tuple[dict[str, np.ndarray], dict]:
        graph = self.graph.tocsr()
        arrays = {"uids": strings(self.uids), "rows": self.rows, "embedding": self.embedding,
                  "graph_data": graph.data.astype(np.float32), "graph_indices": graph.indices.astype(np.int32),
                  "graph_indptr": graph.indptr.astype(np.int64)}
        header = {"kind": KIND, "a": self.a, "b": self.b, "params": self.params, "knn_neighbors": self.knn_neighbors,
                  "small_data": self.small_data, "alignment": self.alignment, "aligned_to": self.aligned_to,
                  "graph_shape": list(graph.shape)}
        return arrays, header

    @functools.cached_property
    def version(self) -> str:
        return content_version(*self._arrays_and_header())

    def save(self, directory: Path) -> int:
        """Write ``<directory>/<version>.npz`` once; return its size in bytes."""
        return write_once(self.path(directory, self.version), *self._arrays_and_header())

    @staticmethod
    def path(directory: Path, version: str) -> Path:
        return Path(directory) / f"{version}.npz"

    @classmethod
    def load(cls, directory: Path, version: str) -> "Teacher":
        arrays, h = read(cls.path(directory, version), KIND)
        graph = scipy.sparse.csr_matrix((arrays["graph_data"], arrays["graph_indices"], arrays["graph_indptr"]),
                                        shape=tuple(h["graph_shape"]))
        return cls(uids=arrays["uids"].tolist(), rows=arrays["rows"], embedding=arrays["embedding"], graph=graph,
                   a=h["a"], b=h["b"], params=h["params"], knn_neighbors=h["knn_neighbors"],
                   small_data=h["small_data"], alignment=h["alignment"], aligned_to=h["aligned_to"])

    # ---- the rebuilt estimator

    def estimator(self):
        """A ``umap.UMAP`` in this record's fitted state, ready to ``transform`` (the recipe above)."""
        if not self._estimator:
            self._estimator.append(_rebuild(self))
        return self._estimator[0]

    def transform(self, X: np.ndarray) -> np.ndarray:
        """umap-learn's ``transform``: new rows placed against ``embedding`` (this layout's frame)."""
        return self.estimator().transform(X)

    def map(self, X: np.ndarray) -> np.ndarray:
        """``transform``, in the frame of the model this teacher was aligned to."""
        return self.similarity.apply(self.transform(X))


def _rebuild(record: Teacher):
    from ..warmup import cache_umap_kernels

    cache_umap_kernels()  # before anything of umap-learn compiles
    import joblib
    import umap
    from sklearn.utils import check_random_state
    from umap.umap_ import nearest_neighbors, pynn_named_distances

    model = umap.UMAP(**record.params)
    X = np.ascontiguousarray(record.rows, np.float32)
    model._raw_data = X
    model._initial_alpha = model.learning_rate
    model._validate_parameters()  # umap-learn's own: metric functions, kwds, disconnection distance
    model._a, model._b = record.a, record.b
    model._n_neighbors = record.knn_neighbors
    model._supervised = False
    model._small_data = record.small_data
    model.graph_ = record.graph.tocsr()
    model.embedding_ = np.asarray(record.embedding, np.float32)
    model._input_hash = joblib.hash(X)
    if not record.small_data:
        metric = model.metric if model.metric in pynn_named_distances else model._input_distance_func
        seed = record.params.get("random_state")
        _, _, model._knn_search_index = nearest_neighbors(
            X, record.knn_neighbors, metric, model._metric_kwds, model.angular_rp_forest,
            check_random_state(0 if seed is None else seed), model.low_memory, use_pynndescent=True,
            n_jobs=model.n_jobs)
    return model
