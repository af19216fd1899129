"""Scale benchmark: synthetic data (clusters on low-dimensional manifolds) through the whole graph.

    .venv/bin/python bench/bench_scale.py --rows 1000000 3000000 10000000 --dim 64 --slice-rows 1000000

For each size it writes the slices into a fresh home, runs `umap-assets run` in a child process
(so peak RSS is that run's alone), and reads per-asset wall time from Dagster's step stats.
Prints a table, writes bench/out/scale.json and bench/out/scale.png.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIG = """
ops:
  samples: {config: {rate: 0.1, floor: 50, validation_fraction: 0.02}}
  coreset: {config: {budget: 20000, pca_dim: 32}}
"""


def write_slices(home: Path, rows: int, dim: int, slice_rows: int) -> None:
    from umap_assets.demo_data import synthetic_chunk, write_slice

    incoming = home / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, rows, slice_rows)):
        n = min(slice_rows, rows - start)
        X, y = synthetic_chunk(start, n, dim=dim, n_clusters=12, intrinsic_dim=3, seed=0)
        write_slice(incoming / f"synthetic_{i:04d}.parquet", np.arange(start, start + n), X, y)


def step_seconds(home: Path) -> dict[str, float]:
    import os

    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    totals: dict[str, float] = {}
    with dg.DagsterInstance.get() as instance:
        for record in instance.get_run_records():
            for stat in instance.get_run_step_stats(record.dagster_run.run_id):
                if stat.end_time and stat.start_time:
                    totals[stat.step_key] = totals.get(stat.step_key, 0.0) + stat.end_time - stat.start_time
    return totals


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--slice-rows", type=int, default=1_000_000)
    p.add_argument("--work", default=str(ROOT / "bench" / "out" / "scale"))
    args = p.parse_args()
    results = []
    for rows in args.rows:
        home = Path(args.work) / f"n{rows}"
        subprocess.run(["rm", "-rf", str(home)], check=True)
        t = time.perf_counter()
        write_slices(home, rows, args.dim, args.slice_rows)
        gen = time.perf_counter() - t
        (home / "run.yaml").write_text(CONFIG)
        cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "umap_assets.cli", "run", "--home", str(home),
               "--config", str(home / "run.yaml")]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            raise SystemExit(f"run failed for {rows} rows")
        peak_kb = int(proc.stderr.strip().splitlines()[-1])
        steps = step_seconds(home)
        row = {"rows": rows, "dim": args.dim, "generate_s": round(gen, 1), "run_wall_s": round(wall, 1),
               "peak_rss_mb": round(peak_kb / 1024), **{k: round(v, 1) for k, v in sorted(steps.items())}}
        results.append(row)
        print(json.dumps(row), flush=True)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(results, indent=2))
    keys = ["raw_slices", "samples", "coreset", "teacher", "student", "artifact", "artifact_quality_gates",
            "quality_report", "embeddings"]
    print("\n| rows | " + " | ".join(keys) + " | run wall s | peak RSS MB |")
    print("|---" * (len(keys) + 3) + "|")
    for r in results:
        print(f"| {r['rows']:,} | " + " | ".join(str(r.get(k, "—")) for k in keys) + f" | {r['run_wall_s']} | {r['peak_rss_mb']} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    xs = [r["rows"] / 1e6 for r in results]
    for k in keys:
        if all(k in r for r in results):
            ax.plot(xs, [r[k] for r in results], marker="o", label=k)
    ax.set_xlabel("rows (millions)")
    ax.set_ylabel("seconds (summed over partitions)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scale.png")


if __name__ == "__main__":
    main()
