"""Probe student recipes on one data set in one process, outside Dagster (issue 29's experiments).

    .venv/bin/python bench/embedding_probe.py debian-text "input_pca_dim=None" "ood_rows=20000"

Fits what the pipeline fits with its defaults (a 10% validation split, the coreset, the teacher,
the distillation set), then trains one student per recipe (key=value overrides of StudentConfig's
and the distillation's fields, recipes separated as arguments) and prints, on the test rows no
model saw: trust@5, trust@15, 5-NN and 10-NN accuracy, in total and on the rows the coverage
figure calls extrapolated, for the teacher's transform, umap-learn fitted on every training row,
and each student.
"""

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality import split  # noqa: E402
from text_embeddings import HELD_OUT  # noqa: E402
from umap_assets.numerics import metrics  # noqa: E402
from umap_assets.numerics.coreset import density_coverage_coreset, fit_pca_projection  # noqa: E402
from umap_assets.numerics import distill  # noqa: E402


def scores(E, X, y, E_tr, y_tr, mask):
    out = {}
    unseen = np.isin(y, HELD_OUT)  # debian-text's held-out sections: topics no model trained on
    for name, rows in (("all", np.ones(len(X), bool)), ("extrap", mask), ("seen", ~unseen), ("unseen", unseen)):
        if rows.sum() < 20:
            continue
        out[name] = (metrics.trustworthiness(X[rows], E[rows], 5), metrics.trustworthiness(X[rows], E[rows], 15),
                     metrics.knn_accuracy(E_tr, y_tr, E[rows], y[rows], 5), metrics.knn_accuracy(E_tr, y_tr, E[rows], y[rows], 10))
    return out


def line(name, s):
    return f"{name:>28} " + "  ".join(f"{k}: t5 {v[0]:.4f} t15 {v[1]:.4f} 5nn {v[2]:.4f} 10nn {v[3]:.4f}" for k, v in s.items())


def main():
    import umap

    name, recipes = sys.argv[1], sys.argv[2:]
    X_tr, y_tr, X_te, y_te = split(name)
    te = metrics.subsample(len(X_te), 10_000, 0)
    X_te, y_te = X_te[te], y_te[te]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X_tr))
    n_val = len(X_tr) // 10
    val, tr = order[:n_val], order[n_val:]
    Z = fit_pca_projection(X_tr[tr], 32).transform(X_tr[tr]).astype(np.float32)
    core = tr[np.sort(density_coverage_coreset(Z, min(40_000, len(tr)), density_fraction=0.8).indices)]
    knn = metrics.subsample(len(tr), 20_000, 1)
    rest = np.setdiff1d(tr, core)[:40_000]
    cache = ROOT / "bench" / ".cache" / f"probe-{name}.npz"
    teacher = None
    if cache.exists():  # the teacher, its transforms and umap-learn's scores, from an earlier probe of this set
        with np.load(cache, allow_pickle=False) as f:
            c = {k: f[k] for k in f.files}
        teacher_graph = scipy.sparse.csr_matrix((c["g_data"], c["g_indices"], c["g_indptr"]), shape=tuple(c["g_shape"]))
        teacher_embedding, extrap, Y_rest = c["embedding"], c["extrap"], c["y_rest"]
        print(f"cached teacher and references from {cache}:", flush=True)
        if "y_te_teacher" in c:  # scored again, so a new subset shows for the references too
            print(line("teacher", scores(c["y_te_teacher"], X_te, y_te, c["e_tr_teacher"], y_tr[tr[knn]], extrap)))
            print(line("umap-learn", scores(c["y_te_ref"], X_te, y_te, c["e_tr_ref"], y_tr[tr[knn]], extrap)), flush=True)
        else:
            print(c["lines"], flush=True)
    else:
        t0 = time.time()
        teacher = umap.UMAP(n_neighbors=15, min_dist=0.1, negative_sample_rate=10, random_state=0, n_jobs=1).fit(X_tr[core])
        print(f"teacher fit {time.time() - t0:.0f}s on {len(core)} rows", flush=True)
        teacher_graph, teacher_embedding = teacher.graph_.tocsr(), teacher.embedding_
        # coverage: the product's figure (landmarks of the coreset, PCA-32 plus the residual), over the
        # validation rows' 0.99 quantile
        from umap_assets.numerics.drift import coverage_reference
        pca = fit_pca_projection(X_tr[core], 32)
        reference = coverage_reference(pca, pca.transform(X_tr[core]).astype(np.float32), X_tr[val]).landmarks(512, X_tr[val])
        extrap = reference.distances(X_te) > reference.radius
        lines = [f"extrapolated test rows: {extrap.sum()} of {len(X_te)}"]
        Y_te_teacher = teacher.transform(X_te)
        Y_rest = teacher.transform(X_tr[rest]) if len(rest) else np.empty((0, 2), np.float32)
        E_tr_teacher = teacher.transform(X_tr[tr[knn]])
        lines.append(line("teacher", scores(Y_te_teacher, X_te, y_te, E_tr_teacher, y_tr[tr[knn]], extrap)))
        ref = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=0, n_jobs=1).fit(X_tr[tr])
        Y_te_ref, E_tr_ref = ref.transform(X_te), ref.embedding_[knn]
        lines.append(line("umap-learn", scores(Y_te_ref, X_te, y_te, E_tr_ref, y_tr[tr[knn]], extrap)))
        print("\n".join(lines), flush=True)
        np.savez(cache, g_data=teacher_graph.data, g_indices=teacher_graph.indices, g_indptr=teacher_graph.indptr,
                 g_shape=np.array(teacher_graph.shape), embedding=teacher_embedding, extrap=extrap, y_rest=Y_rest, lines="\n".join(lines),
                 y_te_teacher=Y_te_teacher, e_tr_teacher=E_tr_teacher, y_te_ref=Y_te_ref, e_tr_ref=E_tr_ref)
    graph = distill.FuzzyGraph.with_curve_for(teacher_graph.tocoo(), min_dist=0.1)
    for recipe in recipes:
        kv = dict(item.split("=", 1) for item in recipe.split()) if recipe else {}
        ood = int(kv.pop("ood_rows", 0))
        ood_kind = kv.pop("ood_kind", "pairs")
        min_rows = int(kv.pop("min_rows", 20_000))
        more = int(kv.pop("continue", 0))  # then this many steps more, from the trained student (a second try)
        more_lr = float(kv.pop("continue_lr", 5e-4))
        cfg = distill.StudentConfig()
        over = {}
        for k, v in kv.items():
            cur = getattr(cfg, k)
            over[k] = (None if v == "None" else tuple(int(x) for x in v.split(",")) if isinstance(cur, tuple)
                       else type(cur)(v) if cur is not None else int(v))
        cfg = dataclasses.replace(cfg, **over)
        X_core = X_tr[core]
        X_new = distill.neighbour_mixup(X_core, teacher_graph.tocoo(), min_rows - len(core) - len(rest), 0)
        X_o = ood_rows(X_tr[tr], ood, ood_kind)
        Xs = [X_core, X_tr[rest], X_new, X_o]
        if teacher is None and (len(X_new) or len(X_o)):  # the cache holds no model: fit it again (same seed, same teacher)
            teacher = umap.UMAP(n_neighbors=15, min_dist=0.1, negative_sample_rate=10, random_state=0, n_jobs=1).fit(X_tr[core])
        Ys = [teacher_embedding, Y_rest] + [teacher.transform(x) if len(x) else np.empty((0, 2)) for x in (X_new, X_o)]
        X = np.concatenate(Xs).astype(np.float32)
        Y = np.concatenate(Ys).astype(np.float32)
        t0 = time.time()
        res = distill.train_student(X, Y, graph, cfg)
        E = res.transform(X_te)
        print(line(recipe or "default", scores(E, X_te, y_te, res.transform(X_tr[tr[knn]]), y_tr[tr[knn]], extrap))
              + f"  ({time.time() - t0:.0f}s; coord {res.history[-1]['coord_loss']:.4f}, holdout mse {res.history[-1]['holdout_mse']:.4f})", flush=True)
        if more:
            t0 = time.time()
            res = distill.train_student(X, Y, graph, dataclasses.replace(
                cfg, steps=more, learning_rate=more_lr, noise_std=res.config["noise_std"]), init=res)
            print(line(f"+{more} steps at {more_lr:g}", scores(res.transform(X_te), X_te, y_te,
                                                             res.transform(X_tr[tr[knn]]), y_tr[tr[knn]], extrap))
                  + f"  ({time.time() - t0:.0f}s)", flush=True)


def ood_rows(X, n, kind):
    """Rows off the training support: mixtures of random (not neighbouring) pairs (``pairs``, rescaled to the
    rows' norm), or rows moved in a random direction by about their 15-NN distance (``far``)."""
    if n <= 0:
        return np.empty((0, X.shape[1]), np.float32)
    rng = np.random.default_rng(7)
    i, j = rng.integers(0, len(X), n), rng.integers(0, len(X), n)
    t = rng.uniform(0.2, 0.8, (n, 1)).astype(np.float32)
    M = (1 - t) * X[i] + t * X[j]
    if kind == "far":  # a row moved off the support: a random direction of about its 15-NN distance, same norm
        from sklearn.neighbors import NearestNeighbors

        probe = X[rng.choice(len(X), min(2_000, len(X)), replace=False)]
        d15 = float(np.median(NearestNeighbors(n_neighbors=16).fit(X).kneighbors(probe)[0][:, 15]))
        G = rng.standard_normal((n, X.shape[1])).astype(np.float32)
        G *= (rng.uniform(0.5, 1.5, (n, 1)) * d15 / np.linalg.norm(G, axis=1, keepdims=True)).astype(np.float32)
        M = X[i] + G
        norms = np.linalg.norm(X[i], axis=1, keepdims=True)
        return (M / np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-12) * norms).astype(np.float32)
    if kind == "pairs":
        norms = np.linalg.norm(X[i], axis=1, keepdims=True) * (1 - t) + np.linalg.norm(X[j], axis=1, keepdims=True) * t
        M = M / np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-12) * norms
    return M.astype(np.float32)


if __name__ == "__main__":
    main()
