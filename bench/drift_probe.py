"""How the drift score separates new data like the training data from data that is not.

    .venv/bin/python bench/drift_probe.py [--budget 20000] [--pca-dim 32] [--kept-variance 0.9]

Fashion-MNIST (the Debian package, or the bundled copy): the coreset and its coverage are built, as
the `coreset` asset builds them (k-center in ``--pca-dim`` components, distances in those that keep
``--kept-variance`` of the variance), from classes 0-7 of the 60k training rows, with 10% of those rows held out to
calibrate the radius. Then each probe set of 5,000 rows is scored. Rows from the same classes in
the test split should be covered. Unseen classes, changed pixel scales and reordered features
should be flagged. Prints one table row per probe set.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from umap_assets.demo_data import load_fashion_mnist
    from umap_assets.numerics.coreset import fit_pca_projection, k_center_greedy
    from umap_assets.defs.model import CoresetConfig
    from umap_assets.numerics.drift import coverage_reference, drift_score, fit_coverage_basis

    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=int, default=20_000)
    p.add_argument("--pca-dim", type=int, default=32)
    p.add_argument("--kept-variance", type=float, default=CoresetConfig().coverage_kept_variance)
    p.add_argument("--threshold", type=float, default=0.05)
    p.add_argument("--ratio-threshold", type=float, default=1.10)
    args = p.parse_args()
    data = load_fashion_mnist(ROOT / "data" / "cache", allow_download=False)
    X, y = data.X.astype(np.float32), data.y
    train, test = np.arange(60_000), np.arange(60_000, 70_000)
    rng = np.random.default_rng(0)
    seen = train[y[train] < 8]
    held = rng.choice(seen, size=len(seen) // 10, replace=False)
    fit = np.setdiff1d(seen, held)
    t = time.perf_counter()
    pca = fit_pca_projection(X[fit], args.pca_dim, seed=0)
    Z = pca.transform(X[fit]).astype(np.float32)
    result = k_center_greedy(Z, args.budget, seed=0)
    basis = fit_coverage_basis(X[fit], args.kept_variance, CoresetConfig().coverage_max_dim)
    reference = coverage_reference(basis, basis.transform(X[fit][result.indices]), X[held], 0.99)
    print(f"coreset of {args.budget:,} from {len(fit):,} rows of classes 0-7 in {time.perf_counter() - t:.1f}s; "
          f"distances in {len(basis.components_)} components; radius {reference.radius:.1f}, calibrated on {len(held):,} held-out rows")

    def pick(rows, n=5000):
        return X[rng.choice(rows, size=min(n, len(rows)), replace=False)]

    same = pick(test[y[test] < 8])
    probes = {
        "test rows, classes 0-7 (seen)": same,
        "test rows, classes 8-9 (bag, ankle boot: unseen)": pick(test[y[test] >= 8]),
        "test rows, all 10 classes (20% unseen)": pick(test),
        "classes 0-7, pixel values x 1.25 (a scaling change)": np.clip(same * 1.25, 0, 255),
        "classes 0-7, image flipped left-right": same.reshape(-1, 28, 28)[:, :, ::-1].reshape(-1, 784),
        "classes 0-7, features in reverse order": same[:, ::-1],
    }
    print(f"\n| probe (5,000 rows) | uncovered | median distance ratio | drifted (> {args.threshold:.0%} "
          f"or > {args.ratio_threshold:.2f}x) |")
    print("|---|---|---|---|")
    for name, rows in probes.items():
        score = drift_score(reference, np.ascontiguousarray(rows))
        print(f"| {name} | {score.uncovered_fraction:.1%} | {score.median_distance_ratio:.2f} | "
              f"{'yes' if score.drifted(args.threshold, args.ratio_threshold) else 'no'} |")


if __name__ == "__main__":
    main()
