"""Can the drift check tell a topic no model saw from one it trained on? (issue 29, debian-text)

    .venv/bin/python bench/new_topic_probe.py

Per section of debian-text's test rows (21 seen sections with 80+ rows, the five held-out ones), three
figures against the validation rows: the artifact's coverage figure (distance to 512 coreset landmarks
in the first 32 components plus the residual), the drift check's (every coreset row, in the leading
components that keep ``coverage_kept_variance`` of the variance, plus the residual; the coreset
asset's default and, for comparison, 32 components, the drift check before session 21), and the
distance to the nearest training row in the full input space. For each: the share of rows beyond the validation rows' 99% radius ("uncovered", the drift
limit is 5%) and the median distance over the validation rows' median ("ratio", the limit is 1.10).
Same split, validation rows and coreset as bench/embedding_probe.py.
"""

import sys
from pathlib import Path

import numpy as np
from sklearn.neighbors import NearestNeighbors

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality import split  # noqa: E402
from text_embeddings import HELD_OUT  # noqa: E402
from umap_assets.numerics import metrics  # noqa: E402
from umap_assets.numerics.coreset import density_coverage_coreset, fit_pca_projection  # noqa: E402
from umap_assets.defs.drift import DriftConfig  # noqa: E402
from umap_assets.defs.model import CoresetConfig  # noqa: E402
from umap_assets.numerics.drift import coverage_reference, fit_coverage_basis  # noqa: E402


def per_section(d, radius, median, y, sections):
    return {s: ((d[y == s] > radius).mean(), np.median(d[y == s]) / median) for s in sections}


def show(name, figures, seen, unseen):
    worst = max((figures[s][0], s) for s in seen)
    ratios = [figures[s][1] for s in seen]
    print(f"{name}: seen sections uncovered at most {worst[0]:.1%} ({worst[1]}), ratio {min(ratios):.3f}-{max(ratios):.3f}")
    print("  unseen: " + ", ".join(f"{s} {figures[s][0]:.1%} / {figures[s][1]:.3f}" for s in unseen))
    limits = DriftConfig()
    flagged = {s for s, (uncovered, ratio) in figures.items()
               if uncovered > limits.max_uncovered_fraction or ratio > limits.max_median_distance_ratio}
    print(f"  drifted at the drift asset's limits: {len(flagged & set(unseen))} of {len(unseen)} unseen sections, "
          f"{len(flagged & set(seen))} of {len(seen)} seen ({', '.join(sorted(flagged & set(seen))) or 'none'})")


def main():
    X_tr, y_tr, X_te, y_te = split("debian-text")
    te = metrics.subsample(len(X_te), 10_000, 0)
    X_te, y_te = X_te[te], y_te[te]
    order = np.random.default_rng(0).permutation(len(X_tr))
    val, tr = order[: len(X_tr) // 10], order[len(X_tr) // 10:]
    seen = [s for s in sorted(set(y_te) - set(HELD_OUT)) if (y_te == s).sum() > 80]
    Z = fit_pca_projection(X_tr[tr], 32).transform(X_tr[tr]).astype(np.float32)
    core = tr[np.sort(density_coverage_coreset(Z, min(40_000, len(tr)), density_fraction=0.8).indices)]
    sections = seen + list(HELD_OUT)
    config = CoresetConfig()
    for kept in (None, config.coverage_kept_variance):
        basis = (fit_pca_projection(X_tr[tr], 32) if kept is None
                 else fit_coverage_basis(X_tr[tr], kept, config.coverage_max_dim))
        ref = coverage_reference(basis, basis.transform(X_tr[core]).astype(np.float32), X_tr[val])
        if kept is None:
            art = ref.landmarks(512, X_tr[val])
            show("artifact's figure (512 landmarks, 32 components)",
                 per_section(art.distances(X_te), art.radius, art.median_distance, y_te, sections), seen, HELD_OUT)
        show(f"drift check: every coreset row, {len(basis.components_)} components "
             f"(keep {basis.explained_variance_ratio_.sum():.2f})",
             per_section(ref.distances(X_te), ref.radius, ref.median_distance, y_te, sections), seen, HELD_OUT)
    nn = NearestNeighbors(n_neighbors=1).fit(X_tr[tr])
    dv = nn.kneighbors(X_tr[val])[0][:, 0]
    show("nearest training row, full input space",
         per_section(nn.kneighbors(X_te)[0][:, 0], np.quantile(dv, 0.99), np.median(dv), y_te, sections),
         seen, HELD_OUT)


if __name__ == "__main__":
    main()
