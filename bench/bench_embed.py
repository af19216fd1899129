"""End-to-end embedding against the transform alone, and peak memory, at growing input sizes.

    .venv/bin/python bench/bench_embed.py --artifact data/models/artifact.uart --rows 600000 1200000 10000000

For each size it writes a Fashion-MNIST-shaped slice (784 float32 features, the real images cycled
with a little noise so that the file compresses like real pixels, 10k-row row groups, zstd) to
``--work``, then, in one run and side by side:

* runs ``umap-assets embed --engine local`` on it in a child process, sampling the child's resident
  memory (the kernel's peak ``ru_maxrss`` is the figure reported);
* times ``Projector.transform`` alone on rows already in memory (the model's own speed).

It prints a table (rows, file size, wall, end-to-end rows/s, transform rows/s, their ratio, peak RSS)
and writes ``bench/out/embed.json``. The input files are deleted after each size unless ``--keep``.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from umap_assets.runtime import Projector  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from bench_scale import run_sampled, write_blocks  # noqa: E402


def base_rows() -> tuple[np.ndarray, np.ndarray]:
    from umap_assets.demo_data import load_dataset

    d = load_dataset("fashion-mnist", None, allow_download=False, say=lambda _: None)
    return d.X.astype(np.float32), d.y.astype(np.int64)


def write_input(path: Path, rows: int, X: np.ndarray, y: np.ndarray, group: int = 10_000) -> None:
    """``rows`` rows cycled from ``X`` plus small integer noise, written one row group at a time."""
    rng = np.random.default_rng(0)

    def blocks():
        for start in range(0, rows, group):
            pick = np.arange(start, min(start + group, rows)) % len(X)
            yield np.arange(start, start + len(pick)), X[pick] + rng.integers(0, 2, size=(len(pick), X.shape[1])).astype(np.float32), y[pick]

    tmp = path.with_name(path.name + ".tmp")
    write_blocks(tmp, blocks())
    tmp.rename(path)


def transform_rate(projector: Projector, X: np.ndarray, repeats: int = 3) -> float:
    """Best of ``repeats`` passes of the transform alone over ``X`` (already in memory), rows/s."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        projector.transform(X)
        best = min(best, time.perf_counter() - t)
    return len(X) / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", required=True)
    p.add_argument("--rows", type=int, nargs="+", default=[600_000, 1_200_000])
    p.add_argument("--work", default="/tmp/bench_embed")
    p.add_argument("--chunk-rows", type=int, default=None, help="passed to umap-assets embed")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", default=str(ROOT / "bench" / "out" / "embed.json"))
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    projector = Projector.load(args.artifact)
    X, y = base_rows()
    results = []
    for rows in args.rows:
        src, dst = work / f"in_{rows}.parquet", work / f"out_{rows}.parquet"
        if not src.exists():
            write_input(src, rows, X, y)
        cmd = [sys.executable, "-m", "umap_assets.cli", "embed", "--artifact", args.artifact, "--input", str(src), "--output", str(dst),
               "--home", str(work)] + (["--chunk-rows", str(args.chunk_rows)] if args.chunk_rows else [])
        code, wall, peak_kib, _ = run_sampled(cmd, work / f"embed_{rows}.log", cwd=ROOT)  # this tree's code
        if code != 0:
            sys.exit(f"umap-assets embed failed on {rows:,} rows: see {work / f'embed_{rows}.log'}")
        report = (work / f"embed_{rows}.log").read_text().strip().splitlines()[-1]
        e2e = rows / float(report.split(" rows in ")[1].split("s")[0])
        model = transform_rate(projector, X[:200_000] if len(X) >= 200_000 else np.tile(X, (3, 1)))
        results.append({"rows": rows, "file_mb": round(src.stat().st_size / 2**20), "wall_s": round(wall, 1),
                        "end_to_end_rows_s": round(e2e), "transform_rows_s": round(model),
                        "ratio": round(e2e / model, 3), "peak_rss_mb": round(peak_kib / 1024)})
        print(json.dumps(results[-1]), flush=True)
        if not args.keep:
            src.unlink()
            dst.unlink(missing_ok=True)
    print(f"\n| rows | file | wall | end to end rows/s | transform rows/s | ratio | peak RSS |\n|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['rows']:,} | {r['file_mb']} MB | {r['wall_s']} s | {r['end_to_end_rows_s']:,} | "
              f"{r['transform_rows_s']:,} | {r['ratio']:.2f} | {r['peak_rss_mb']} MB |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
