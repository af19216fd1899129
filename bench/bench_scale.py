"""Scale benchmark: synthetic data (clusters on low-dimensional manifolds) through the whole graph,
then a stream of generated Parquet through `umap-assets embed`.

    .venv/bin/python bench/bench_scale.py --rows 1000000 3000000 10000000 --dim 64 --slice-rows 1000000
    .venv/bin/python bench/bench_scale.py --rows 10000000 --embed-rows 100000000 --embed-dim 128 --embed-distinct-files 1

For each size it writes the slices into a fresh home, runs `umap-assets run` in a child process
(so peak RSS is that run's alone, every step in one process), samples the child's RSS every 0.2 s,
and reads per-asset wall time from Dagster's step stats; the samples give each step's peak RSS.
Prints a table, writes bench/out/scale.json and bench/out/scale.png.

With ``--embed-rows``, it then trains an artifact for ``--embed-dim`` features (a small run of the
same graph), generates that many rows as Parquet files of ``--embed-file-rows`` one after another,
embeds each with `umap-assets embed` in a child process (peak RSS sampled) and deletes it (with
``--embed-distinct-files K``, only K distinct files are generated and the stream cycles through
them: the embedding's cost is the same, the generator's is not paid 100M times); beside it,
in the same run, it times the transform alone. It prints the per-row cost of each step and the
extrapolation to 200M rows on a Spark cluster (assumptions printed with it), and writes
bench/out/scale_embed.json.
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


def run_sampled(cmd: list[str], log: Path, every_s: float = 0.1, cwd: Path | None = None
                ) -> tuple[int, float, int, list[tuple[float, int]]]:
    """Run ``cmd``, sampling its resident memory; returns (exit code, wall s, peak RSS KiB, samples).

    The peak is the child's ``VmHWM`` (the kernel's high-water mark of its RSS since ``exec``), read
    with every sample; the kernel's ``ru_maxrss`` of a forked child also counts the parent's pages
    from before the ``exec``, so it says more about this process than about the command. The
    samples (epoch seconds, ``VmRSS`` KiB) let the peak be attributed to the Dagster step that was
    running at the time.
    """
    samples: list[tuple[float, int]] = []
    peak = 0
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        while True:
            try:
                with open(f"/proc/{proc.pid}/status") as fh:
                    status_text = fh.read()
                if proc.poll() is None:  # not yet a zombie, whose figures are gone
                    peak = max(peak, int(status_text.split("VmHWM:")[1].split()[0]))
                    samples.append((time.time(), int(status_text.split("VmRSS:")[1].split()[0])))
            except (FileNotFoundError, IndexError):
                pass
            if proc.poll() is not None:
                break
            time.sleep(every_s)
    return proc.returncode, time.perf_counter() - started, peak, samples


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


def write_blocks(path: Path, blocks) -> None:
    """Write ``(ids, X, y)`` blocks to ``path`` as a user's slice (features a fixed-size list, zstd), one
    row group a block (bounded memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from umap_assets.contract import features_list

    writer = None
    try:
        for ids, X, y in blocks:
            batch = pa.record_batch({"id": pa.array(ids.astype(np.int64)), "features": features_list(X),
                                     "label": pa.array(y.astype(np.int64))})
            if writer is None:
                writer = pq.ParquetWriter(path, batch.schema, compression="zstd")
            writer.write_batch(batch, row_group_size=len(ids))
    finally:
        if writer is not None:
            writer.close()


def write_stream_file(path: Path, start: int, rows: int, dim: int, group: int = 500_000) -> None:
    """``rows`` synthetic rows from ``start``, written one row group at a time."""
    from umap_assets.demo_data import synthetic_chunk

    def blocks():
        for s in range(start, start + rows, group):
            n = min(group, start + rows - s)
            X, y = synthetic_chunk(s, n, dim=dim, n_clusters=12, intrinsic_dim=3, seed=0)
            yield np.arange(s, s + n), X, y

    write_blocks(path, blocks())


def embed_stream(artifact: Path, total: int, dim: int, file_rows: int, work: Path, distinct: int = 0) -> dict:
    """Generate ``total`` rows file by file, embed each with `umap-assets embed`, delete it; time both.

    With ``distinct`` > 0, only the first ``distinct`` files are generated, and the later ones are
    hard links to them in turn (the same rows under another name): the stream is as long, the
    generator runs ``distinct`` times."""
    from umap_assets.demo_data import synthetic_chunk
    from umap_assets.runtime import Projector

    work.mkdir(parents=True, exist_ok=True)
    generate_s = embed_s = 0.0
    peak_kib = 0
    for i, start in enumerate(range(0, total, file_rows)):
        n = min(file_rows, total - start)
        src, dst = work / f"stream_{i:04d}.parquet", work / f"stream_{i:04d}.out.parquet"
        t = time.perf_counter()
        if distinct and i >= distinct and n == file_rows:
            os.link(work / f"stream_{i % distinct:04d}.parquet", src)
        else:
            write_stream_file(src, start, n, dim)
        generate_s += time.perf_counter() - t
        cmd = [sys.executable, "-m", "umap_assets.cli", "embed", "--artifact", str(artifact), "--input", str(src),
               "--output", str(dst), "--home", str(work)]
        code, wall, kib, _ = run_sampled(cmd, work / "embed.log", cwd=ROOT)
        if code != 0:
            raise SystemExit(f"embed failed on {src}: {(work / 'embed.log').read_text()[-2000:]}")
        embed_s += wall
        peak_kib = max(peak_kib, kib)
        print(f"  {start + n:,} rows: embed {embed_s:.0f}s, generate {generate_s:.0f}s, peak {kib / 1024:.0f} MB", flush=True)
        if not (distinct and i < distinct):
            src.unlink()
        dst.unlink()
    for i in range(distinct):
        (work / f"stream_{i:04d}.parquet").unlink(missing_ok=True)
    projector = Projector.load(artifact)
    X, _ = synthetic_chunk(0, 200_000, dim=dim, n_clusters=12, intrinsic_dim=3, seed=0)
    projector.transform(X[:1000])
    t = time.perf_counter()
    projector.transform(X)
    transform_rate = len(X) / (time.perf_counter() - t)
    return {"embed_rows": total, "embed_dim": dim, "file_rows": file_rows, "distinct_files": distinct or "all",
            "generate_s": round(generate_s, 1),
            "embed_s": round(embed_s, 1), "embed_rows_per_s": round(total / embed_s),
            "transform_rows_per_s": round(transform_rate), "embed_peak_rss_mb": round(peak_kib / 1024),
            "embed_us_per_row_2_cores": round(embed_s / total * 1e6, 3)}


def extrapolate(graph: dict, stream: dict, target: int = 200_000_000) -> str:
    """200M rows on a Spark cluster, from the per-row costs measured here (assumptions stated)."""
    per_row_ingest = (graph.get("raw_slices", 0) + graph.get("samples", 0)) / graph["rows"]
    fixed = sum(graph.get(k, 0) for k in ("coreset", "teacher", "student", "artifact", "quality_report"))
    embed_core_s = stream["embed_s"] * 2 / stream["embed_rows"]  # core-seconds per row (2 cores here)
    lines = [f"Extrapolation to {target / 1e6:.0f}M rows (assumptions: per-row costs scale linearly, as "
             "measured; executors of 4 cores as fast as these; the artifact broadcast once, 0.2 MB; reads from "
             "storage as fast as this disk; training's cost is bounded by its budgets, so it does not grow):"]
    lines.append(f"- ingest and samples: {per_row_ingest * 1e6:.2f} µs a row on one machine -> "
                 f"{per_row_ingest * target / 3600:.1f} h on this machine, or per partition in parallel.")
    lines.append(f"- training (coreset, teacher, student, artifact, report): {fixed:.0f} s, whatever the rows.")
    for executors in (10, 50, 200):
        seconds = embed_core_s * target / (4 * executors)
        lines.append(f"- embeddings on {executors} executors x 4 cores: {seconds / 60:.1f} min "
                     f"({embed_core_s * 1e6:.2f} core-µs a row)")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--slice-rows", type=int, default=1_000_000)
    p.add_argument("--work", default=str(ROOT / "bench" / "out" / "scale"))
    p.add_argument("--embed-rows", type=int, default=0, help="rows to stream through `umap-assets embed` (0: none)")
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--embed-file-rows", type=int, default=5_000_000)
    p.add_argument("--embed-distinct-files", type=int, default=0,
                   help="generate only this many distinct stream files and cycle through them (0: every file distinct)")
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
        code, wall, peak_kib, samples = run_sampled(cmd, home / "run.log", cwd=ROOT)
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
    if args.embed_rows:
        stream_embed(args, results[-1], out)


def stream_embed(args, graph: dict, out: Path) -> None:
    """Train an artifact for ``--embed-dim`` features, then stream ``--embed-rows`` rows through it."""
    home = Path(args.work) / f"artifact_d{args.embed_dim}"
    subprocess.run(["rm", "-rf", str(home)], check=True)
    write_slices(home, 400_000, args.embed_dim, 200_000)
    (home / "run.yaml").write_text(CONFIG)
    cmd = [sys.executable, "-m", "umap_assets.cli", "run", "--home", str(home), "--config", str(home / "run.yaml"),
           "--until", "train"]
    if run_sampled(cmd, home / "run.log", cwd=ROOT)[0] != 0:
        raise SystemExit(f"training the {args.embed_dim}-d artifact failed: see {home / 'run.log'}")
    stream = embed_stream(home / "models" / "artifact.uart", args.embed_rows, args.embed_dim, args.embed_file_rows,
                          Path(args.work) / "stream", args.embed_distinct_files)
    print(json.dumps(stream))
    print(f"\n| rows | dim | generate s | embed s | end to end rows/s | transform rows/s | peak RSS MB |\n|---|---|---|---|---|---|---|\n"
          f"| {stream['embed_rows']:,} | {stream['embed_dim']} | {stream['generate_s']} | {stream['embed_s']} | "
          f"{stream['embed_rows_per_s']:,} | {stream['transform_rows_per_s']:,} | {stream['embed_peak_rss_mb']} |\n")
    print(extrapolate(graph, stream))
    (out / "scale_embed.json").write_text(json.dumps({**stream, "extrapolation": extrapolate(graph, stream)}, indent=2))


if __name__ == "__main__":
    main()
