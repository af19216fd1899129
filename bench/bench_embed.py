"""End-to-end embedding against the transform alone, and peak memory, at growing input sizes.

    .venv/bin/python bench/bench_embed.py --artifact data/models/artifact.uart --rows 600000 1200000 10000000

For each size it writes a Fashion-MNIST-shaped slice to ``--work`` as a user's file would hold it
(784 float32 features as a fixed-size list, the real images cycled with a little noise so that the
file compresses like real pixels, 10k-row row groups, zstd), and the warehouse's canonical copy of
it (``write_canonical_slice``, what ingest writes and the ``embeddings`` asset reads). Then, for each
of the two files, in one run and side by side:

* runs ``umap-assets embed --engine local`` on it in a child process, sampling the child's resident
  memory (its ``VmHWM``, the kernel's high-water mark, is the peak reported);
* times the transform alone on rows already in memory, just before, two ways: ``Projector.transform``
  on the whole array (numpy's BLAS threads), and the embedding's own transform pool on its chunks
  (:func:`umap_assets.embed.transformed`). The ratio is taken against the faster of the two.

``--repeats`` rounds of both (3 by default); the medians are reported, and the lowest ratio.

It prints a table and writes ``bench/out/embed.json``. The input files are deleted after each size
unless ``--keep``.
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
from umap_assets.warehouse import write_canonical_slice  # noqa: E402

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


def transform_rate(projector: Projector, X: np.ndarray, chunk_rows: int) -> tuple[float, float]:
    """One pass of the transform alone over ``X`` (in memory), rows/s: ``Projector.transform`` on all of
    it, and the embedding's transform pool on ``chunk_rows``-row chunks."""
    from umap_assets.contract import SliceBatch
    from umap_assets.embed import transform_workers, transformed

    chunks = [SliceBatch(None, X[i:i + chunk_rows], None, i) for i in range(0, len(X), chunk_rows)]
    t = time.perf_counter()
    projector.transform(X)
    plain = len(X) / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in transformed(projector, chunks, transform_workers(chunk_rows * X.shape[1] * 4)):
        pass
    return plain, len(X) / (time.perf_counter() - t)


def embed_once(args, src: Path, dst: Path, work: Path, projector: Projector, X: np.ndarray, rows: int, layout: str) -> dict:
    """``--repeats`` rounds of: the transform alone, then ``umap-assets embed`` on ``src`` in a child process.

    Each round's ratio is its end-to-end rate over the faster of its two transform rates; the
    medians are reported, with the lowest ratio beside them."""
    from umap_assets.contract import CHUNK_ROWS

    log = work / f"embed_{layout.replace(' ', '_')}_{rows}.log"
    cmd = [sys.executable, "-m", "umap_assets.cli", "embed", "--artifact", args.artifact, "--input", str(src), "--output", str(dst),
           "--home", str(work)] + (["--chunk-rows", str(args.chunk_rows)] if args.chunk_rows else [])
    rounds = []
    for _ in range(args.repeats):
        plain, pooled = transform_rate(projector, X, args.chunk_rows or CHUNK_ROWS)
        code, wall, peak_kib, _ = run_sampled(cmd, log, cwd=ROOT)  # this tree's code
        if code != 0:
            sys.exit(f"umap-assets embed failed on {rows:,} rows ({layout}): see {log}")
        e2e = rows / float(log.read_text().strip().splitlines()[-1].split(" rows in ")[1].split("s")[0])
        rounds.append((wall, e2e, plain, pooled, e2e / max(plain, pooled), peak_kib))
    median = lambda i: float(np.median([r[i] for r in rounds]))  # noqa: E731
    return {"rows": rows, "layout": layout, "file_mb": round(src.stat().st_size / 2**20), "repeats": len(rounds),
            "wall_s": round(median(0), 1), "end_to_end_rows_s": round(median(1)), "transform_rows_s": round(median(2)),
            "pooled_transform_rows_s": round(median(3)), "ratio": round(median(4), 3),
            "lowest_ratio": round(min(r[4] for r in rounds), 3), "peak_rss_mb": round(max(r[5] for r in rounds) / 1024)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", required=True)
    p.add_argument("--rows", type=int, nargs="+", default=[600_000, 1_200_000])
    p.add_argument("--work", default="/tmp/bench_embed")
    p.add_argument("--chunk-rows", type=int, default=None, help="passed to umap-assets embed")
    p.add_argument("--repeats", type=int, default=3, help="rounds of transform-then-embed per input (medians reported)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", default=str(ROOT / "bench" / "out" / "embed.json"))
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    projector = Projector.load(args.artifact)
    X, y = base_rows()
    results = []
    sample = X[:200_000] if len(X) >= 200_000 else np.tile(X, (3, 1))
    for rows in args.rows:
        src, canonical, dst = work / f"in_{rows}.parquet", work / f"in_{rows}.canonical.parquet", work / f"out_{rows}.parquet"
        if not src.exists():
            write_input(src, rows, X, y)
        if not canonical.exists():
            started = time.perf_counter()
            write_canonical_slice(src, canonical)
            print(f"canonical copy of {rows:,} rows: {rows / (time.perf_counter() - started):,.0f} rows/s", flush=True)
        for layout, path in (("user file", src), ("warehouse copy", canonical)):
            results.append(embed_once(args, path, dst, work, projector, sample, rows, layout))
            print(json.dumps(results[-1]), flush=True)
        if not args.keep:
            for path in (src, canonical, dst):
                path.unlink(missing_ok=True)
    print("\n| rows | input | file | wall | end to end rows/s | transform rows/s (whole array / pool) | ratio (lowest) | peak RSS |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['rows']:,} | {r['layout']} | {r['file_mb']:,} MB | {r['wall_s']} s | {r['end_to_end_rows_s']:,} | "
              f"{r['transform_rows_s']:,} / {r['pooled_transform_rows_s']:,} | {r['ratio']:.2f} ({r['lowest_ratio']:.2f}) | "
              f"{r['peak_rss_mb']} MB |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
