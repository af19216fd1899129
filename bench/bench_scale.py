"""Scale benchmark: synthetic data (clusters on low-dimensional manifolds) through the whole graph.

    .venv/bin/python bench/bench_scale.py --rows 1000000 3000000 10000000 --dim 64 --slice-rows 1000000

For each size it writes the slices into a fresh home, runs `umap-assets run` in a child process
(so peak RSS is that run's alone, every step in one process), samples the child's RSS every 0.2 s,
and reads per-asset wall time from Dagster's step stats; the samples give each step's peak RSS.
Prints a table, writes bench/out/scale.json and bench/out/scale.png.
"""
import argparse
import json
import os
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


def run_sampled(cmd: list[str], log: Path, every_s: float = 0.2, cwd: Path | None = None
                ) -> tuple[int, float, int, list[tuple[float, int]]]:
    """Run ``cmd``, sampling its resident memory; returns (exit code, wall s, peak RSS KiB, samples).

    The peak is the kernel's ``ru_maxrss`` of the child; the samples (epoch seconds, KiB) let the
    peak be attributed to the Dagster step that was running at the time.
    """
    samples: list[tuple[float, int]] = []
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                with open(f"/proc/{proc.pid}/status") as fh:
                    kib = int(fh.read().split("VmRSS:")[1].split()[0])
                samples.append((time.time(), kib))
            except (FileNotFoundError, IndexError):
                pass
            time.sleep(every_s)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - started, usage.ru_maxrss, samples


def step_stats(home: Path, samples: list[tuple[float, int]]) -> tuple[dict[str, float], dict[str, int]]:
    """Seconds per step (summed over partitions) and the peak sampled RSS (MiB) while each ran."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    seconds: dict[str, float] = {}
    peaks: dict[str, int] = {}
    with dg.DagsterInstance.get() as instance:
        for record in instance.get_run_records():
            for stat in instance.get_run_step_stats(record.dagster_run.run_id):
                if not (stat.end_time and stat.start_time):
                    continue
                seconds[stat.step_key] = seconds.get(stat.step_key, 0.0) + stat.end_time - stat.start_time
                during = [kib for t, kib in samples if stat.start_time <= t <= stat.end_time]
                if during:
                    peaks[stat.step_key] = max(peaks.get(stat.step_key, 0), round(max(during) / 1024))
    return seconds, peaks


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
        cmd = [sys.executable, "-m", "umap_assets.cli", "run", "--home", str(home), "--config", str(home / "run.yaml")]
        code, wall, peak_kib, samples = run_sampled(cmd, home / "run.log")
        if code != 0:
            print((home / "run.log").read_text()[-3000:])
            raise SystemExit(f"run failed for {rows} rows")
        steps, peaks = step_stats(home, samples)
        row = {"rows": rows, "dim": args.dim, "generate_s": round(gen, 1), "run_wall_s": round(wall, 1),
               "peak_rss_mb": round(peak_kib / 1024), **{k: round(v, 1) for k, v in sorted(steps.items())},
               "peak_rss_mb_per_step": peaks}
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
    print("\npeak RSS MB while each step ran (sampled every 0.2 s)\n\n| rows | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for r in results:
        print(f"| {r['rows']:,} | " + " | ".join(str(r["peak_rss_mb_per_step"].get(k, "—")) for k in keys) + " |")
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
