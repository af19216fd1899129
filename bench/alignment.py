"""How far a retraining moves the map, with and without alignment, on rows no model saw.

    .venv/bin/python bench/alignment.py [--datasets digits,synthetic,fashion-mnist] [--work DIR]
        [--variants unaligned,aligned,anchor0.5,default+student.graph_weight=0.5] [--seed N] [--json FILE]

For each data set the training rows are cut into six slices. Version 1 is the product's training
chain (`umap-assets run --until train`, default configuration) on five of them; then the sixth
arrives (+20% data) and version 2 is trained on all six, once per variant, each in a copy of
version 1's home:

- `unaligned`: the teacher starts from umap-learn's spectral layout (`align_to_served=false`);
  `unaligned+procrustes` is the same model followed by the similarity that best carries its map of
  the distillation rows onto version 1's (fitted on training rows only);
- `aligned`: a fresh layout, and the similarity that carries it onto version 1's map of the
  coreset, folded into the student, with no anchor (`keep_served_layout=false`);
- `init`: the same, with the teacher's layout started from version 1's map (`init_from_served`);
- `anchorW` / `anchorW_rR`: aligned, and the student's targets pulled by W towards version 1's map
  (for rows the teacher moved less than about R median moves, with `_rR`);
- `default`: the product's defaults: version 1's teacher's coordinates kept for the rows it knew,
  the new rows placed against them, unless a fresh layout is credibly better (the 95% interval of
  the cost in trustworthiness on validation rows above 0.002, `keep_served_layout`), else `aligned`.

``--seed N`` seeds the coreset, the teacher and the student of both versions with N (the slices
and their samples stay the same), in a work folder of its own: the first version's draw is part
of what a kept layout inherits.

On the test rows (which no model saw) it prints, against version 1's artifact: the median and mean
displacement as a fraction of version 1's map spread, the kNN@15 overlap of the two maps; and each
version-2 artifact's trustworthiness at k=5 and 15 and 10-NN accuracy.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import quality  # noqa: E402
from umap_assets.cli import run_pipeline  # noqa: E402
from umap_assets.demo_data import write_slice  # noqa: E402
from umap_assets.home import Layout  # noqa: E402
from umap_assets.history import newest_versions  # noqa: E402
from umap_assets.model_store import ModelStore  # noqa: E402
from umap_assets.sample_rows import feature_rows, read_sample_rows  # noqa: E402
from umap_assets.numerics import metrics  # noqa: E402
from umap_assets.numerics.align import fit_similarity  # noqa: E402
from umap_assets.runtime import Projector  # noqa: E402
from umap_assets.warehouse import Warehouse  # noqa: E402

N_SLICES = 6


MODEL_ASSETS = ("coreset", "teacher", "student")


def variant_config(name: str, seed: int = 0) -> dict:
    """A variant's run config, with the model ``seed`` and ``+asset.field=value`` overrides after its
    name (values read as JSON)."""
    name, *overrides = name.split("+")
    config = base_variant_config(name)
    if seed:
        overrides = [f"{asset}.seed={seed}" for asset in MODEL_ASSETS] + overrides
    for override in overrides:
        path, _, value = override.partition("=")
        asset, _, field = path.partition(".")
        ops = config.setdefault("ops", {}).setdefault(asset, {}).setdefault("config", {})
        ops[field] = json.loads(value)
    return config


def base_variant_config(name: str) -> dict:
    """Run config of a variant: ``unaligned``, ``aligned`` (similarity, no anchor), ``init`` (layout
    started from the served map, similarity, no anchor), ``anchorW`` (similarity, anchor weight W, no
    radius), ``anchorW_rR`` (with radius R), ``default`` (the product's)."""
    if name == "default":
        return {}
    if name == "unaligned":
        return {"ops": {"teacher": {"config": {"align_to_served": False}}, "student": {"config": {"anchor_weight": 0.0}}}}
    fresh = {"keep_served_layout": False}
    if name == "aligned":  # the fresh layout and the similarity, no anchor
        return {"ops": {"teacher": {"config": fresh}, "student": {"config": {"anchor_weight": 0.0}}}}
    if name == "init":  # the layout started from the served map, the similarity, no anchor
        return {"ops": {"teacher": {"config": {**fresh, "init_from_served": True}}, "student": {"config": {"anchor_weight": 0.0}}}}
    if name.startswith("anchor"):
        weight, _, radius = name[len("anchor"):].partition("_r")
        return {"ops": {"teacher": {"config": fresh},
                        "student": {"config": {"anchor_weight": float(weight), "anchor_radius": float(radius) if radius else None}}}}
    raise SystemExit(f"unknown variant {name!r}: default, unaligned, aligned, init, anchorW or anchorW_rR")


def write_slices(home: Path, X, y, slices: range) -> None:
    layout = Layout.at(str(home)).ensure()
    parts = np.array_split(np.arange(len(X)), N_SLICES)
    for i in slices:
        write_slice(layout.incoming / f"train_{i:03d}.parquet", parts[i], X[parts[i]], y[parts[i]])


def train(home: Path, config: dict, retrain: bool) -> tuple[float, bool]:
    """Seconds, and whether the candidate passed its gates (a failed candidate is still scored)."""
    started = time.perf_counter()
    summary = run_pipeline(str(home), until="train", retrain=retrain, config=config, say=lambda line: print("   ", line))
    gates_failed = any("quality gates failed" in reason for reason in summary.failed.values())
    if summary.failed and not gates_failed:
        raise SystemExit(f"training failed in {home}: {summary.failed}")
    return time.perf_counter() - started, not gates_failed


def version_one(work: Path, X, y, seed: int) -> Path:
    home = work / "v1"
    if not (home / "models" / "artifact.uart").exists():
        shutil.rmtree(home, ignore_errors=True)
        write_slices(home, X, y, range(N_SLICES - 1))
        seconds, passed = train(home, variant_config("default", seed), retrain=False)
        if not passed:  # what is measured here is how far version 2 moves from a served version 1
            store = ModelStore(Layout.at(str(home)))
            store.promote(newest_versions(store.layout.dagster_home)["artifact"])
            print("  v1 failed its gates (above); promoted by the benchmark, to have a served model", flush=True)
        print(f"  v1 on {N_SLICES - 1} slices: {seconds:.0f} s", flush=True)
    return home


def scores(E, E1, X_test, y_test, E_train, y_train) -> dict:
    out = {"median_displacement": metrics.relative_displacement(E1, E, statistic="median"),
           "mean_displacement": metrics.relative_displacement(E1, E),
           "knn_overlap@15": metrics.knn_overlap(E1, E, 15)}
    out.update({f"trust@{k}": metrics.trustworthiness(X_test, E, k) for k in (5, 15)})
    out["10-NN acc"] = metrics.knn_accuracy(E_train, y_train, E, y_test, 10)
    return out


def evaluate(name: str, work: Path, variants: list[str], seed: int = 0) -> dict:
    X_tr, y_tr, X_te, y_te = quality.split(name)
    X_te, y_te = X_te[: quality.MAX_TEST_ROWS], y_te[: quality.MAX_TEST_ROWS]
    knn = metrics.subsample(len(X_tr), quality.MAX_KNN_TRAIN_ROWS, seed=0)
    v1 = version_one(work, X_tr, y_tr, seed)
    p1 = Projector.load(ModelStore(Layout.at(str(v1))).artifact_path)
    E1 = p1.transform(X_te)
    result = {"v1": {"version": p1.version, **scores(E1, E1, X_te, y_te, p1.transform(X_tr[knn]), y_tr[knn])}}
    for variant in variants:
        home = work / variant
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(v1, home, symlinks=True)
        write_slices(home, X_tr, y_tr, range(N_SLICES - 1, N_SLICES))
        seconds, passed = train(home, variant_config(variant, seed), retrain=True)
        store = ModelStore(Layout.at(str(home)))
        p2 = Projector.load(store.versioned_artifact_path(newest_versions(store.layout.dagster_home)["artifact"]))
        E2, E2_train = p2.transform(X_te), p2.transform(X_tr[knn])
        result[variant] = {"version": p2.version, "seconds": round(seconds), "gates_passed": passed, **scores(E2, E1, X_te, y_te, E2_train, y_tr[knn])}
        if variant == "unaligned":  # a similarity fitted afterwards, on the distillation rows
            uids = store.student(newest_versions(store.layout.dagster_home)["student"]).uids
            wh = Warehouse(root=Layout.at(str(home)).warehouse, duckdb_path=Layout.at(str(home)).duckdb_path)
            X_fit = feature_rows(read_sample_rows(wh, "train", uids=uids).table)
            sim = fit_similarity(p2.transform(X_fit), p1.transform(X_fit))
            result["unaligned+procrustes"] = scores(sim.apply(E2), E1, X_te, y_te, sim.apply(E2_train), y_tr[knn])
            print(f"  unaligned+procrustes: {json.dumps(result['unaligned+procrustes'])}", flush=True)
        print(f"  {variant}: {json.dumps({k: v for k, v in result[variant].items()})}", flush=True)
    return result


def table(name: str, result: dict) -> str:
    cols = ["median_displacement", "mean_displacement", "knn_overlap@15", "trust@5", "trust@15", "10-NN acc"]
    lines = [f"### {name}", "", "| version 2 | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for variant, r in result.items():
        lines.append(f"| {variant} | " + " | ".join(f"{r[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="digits,synthetic,fashion-mnist")
    parser.add_argument("--variants", default="unaligned,aligned,default")
    parser.add_argument("--work", default=str(ROOT / "bench" / "out" / "alignment"))
    parser.add_argument("--seed", type=int, default=0, help="the models' seed (default 0, the product's)")
    parser.add_argument("--json")
    args = parser.parse_args()
    results = {}
    for name in args.datasets.split(","):
        print(f"{name}:", flush=True)
        work = Path(args.work) / (name if not args.seed else f"{name}-seed{args.seed}")
        results[name] = evaluate(name, work, args.variants.split(","), args.seed)
        print(table(name, results[name]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
