"""The map at any scale (issue 33): tiles, viewport points and neighbours against today's full scans.

    .venv/bin/python bench/bench_map.py --rows 10_000_000            # a quick pass
    .venv/bin/python bench/bench_map.py                               # 100M rows (the seed's scale)

Builds (or reuses, under ``--work``) a home of ``--rows`` published rows in slices of ``--slice-rows``:
each slice's map coordinates are generated as bench/bench_scale.py generates its rows
(:func:`umap_assets.demo_data.synthetic_chunk`: 12 clusters on a low-dimensional manifold, here
drawn in 2-d, its cluster as the label), then finalised exactly as the embed job finalises a slice:
sorted along the curve with its id index (:func:`umap_assets.spatial.write_ordered`) and its partial
tiles (:func:`umap_assets.tiles.write_partial_tiles`, then :func:`umap_assets.tiles.merge_low_zooms`),
recorded and published; after each slice, the tiles are compacted (:func:`umap_assets.tiles.compact`,
as asset ``map_tile_runs`` does after ``map_tiles``). The time to add a slice's tiles is measured for
the first slice and for the last (the home then N-1 slices larger).

"Add one slice" (``--add-at 1,10,100``): a scratch version folder beside the home (``--work``'s
``add_n<rows>``; the home itself is only read) gains the home's slices one by one, hard links of their
embeddings and partials, compacted after each as ``map_tile_runs`` is; at each position in
``--add-at`` the slice's own ``map_tiles`` work is timed instead (its partial written anew, then the
low-zoom merge), side by side with the compaction it makes due. ``--add-only`` skips the server.
At 100M rows (a home built before, reused) this re-merges the runs in the scratch folder: about 25 min.

Then it starts the map server in a child process (its peak RSS sampled: ``VmHWM``) and measures,
side by side, the new routes and the same questions answered by a full scan (today's way):

- first paint: ``/`` + ``/api/meta`` + the first tiles (z 0 and the 4 of z 1), against ``/`` +
  ``/api/meta`` + ``/api/points`` (the 200k sample) + ``/density.png`` (today's page);
- a tile (random tiles at zoom 0..8 that hold rows): ``/api/tile`` against DuckDB aggregating the
  tile's bins over every row (the predicate kept out of the Parquet scan's statistics: ``x + 0``);
- a deep-zoom viewport's points (a box of 1/256 of the frame around a random row, cap 10,000):
  ``/api/viewport`` against DuckDB's scan of every row for the box;
- a row's 10 neighbours: ``/api/neighbours`` against ``/api/find`` (today's: every row by distance).

Writes bench/out/map.json and prints the table for bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build_home(home: Path, rows: int, slice_rows: int) -> dict:
    """The home's published version ``bench``; reused when its slices are all there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from umap_assets.atomic import temp_path_for
    from umap_assets.demo_data import synthetic_chunk
    from umap_assets.spatial import version_frame, write_ordered
    from umap_assets.tiles import compact, merge_low_zooms, merge_runs, tiles_path, write_partial_tiles
    from umap_assets.warehouse import Warehouse, publish_embeddings, record_slice

    wh = Warehouse(root=home / "warehouse", duckdb_path=home / "warehouse.duckdb")
    keys = [f"synthetic_{i:04d}" for i in range(-(-rows // slice_rows))]
    tile_s, order_s, merge_s, compact_s = [], [], [], []
    for i, key in enumerate(keys):
        destination = wh.embeddings_path("bench", key)
        if destination.exists() and tiles_path(destination).exists():
            continue
        if destination.exists():  # tiles only (their layout changed): the rows stay
            t = time.perf_counter()
            write_partial_tiles(destination, version_frame(destination.parent))
            tile_s.append(time.perf_counter() - t)
            merge_s.append(merge_low_zooms(destination.parent))
            compact_s.append(compact(destination.parent).seconds)
            print(f"  {key}: tiles {tile_s[-1]:.1f}s, low merge {merge_s[-1]:.1f}s, compaction {compact_s[-1]:.1f}s", flush=True)
            continue
        start, n = i * slice_rows, min(slice_rows, rows - i * slice_rows)
        X, y = synthetic_chunk(start, n, dim=2, n_clusters=12, intrinsic_dim=2, seed=0)
        destination.parent.mkdir(parents=True, exist_ok=True)
        staged = temp_path_for(destination)
        pq.write_table(pa.table({"id": np.arange(start, start + n), "x": X[:, 0].astype(np.float32),
                                 "y": X[:, 1].astype(np.float32), "label": y.astype(np.int64),
                                 "artifact_version": pa.repeat(pa.scalar("bench"), n)}), staged)
        frame = version_frame(destination.parent, first_file=staged)
        t = time.perf_counter()
        write_ordered(staged, destination, frame)
        order_s.append(time.perf_counter() - t)
        staged.unlink()
        t = time.perf_counter()
        write_partial_tiles(destination, frame)
        tile_s.append(time.perf_counter() - t)
        merge_s.append(merge_low_zooms(destination.parent))
        compact_s.append(compact(destination.parent).seconds)  # asset map_tile_runs, after the slice's own step
        record_slice(wh, key, {"rows": n, "dim": 2, "bytes": destination.stat().st_size,
                               "path": str(destination.relative_to(home)), "source": f"incoming/{key}.parquet"})
        print(f"  {key}: order {order_s[-1]:.1f}s, tiles {tile_s[-1]:.1f}s", flush=True)
    merge_low_zooms(wh.embeddings_dir("bench"))  # a no-op when every partial is merged
    t = time.perf_counter()
    merge_runs(wh.embeddings_dir("bench"))  # a no-op when the runs are there; else the levels (a home tiled before them)
    runs_s = time.perf_counter() - t
    publish_embeddings(wh, "bench", keys, keep=1)
    return {"slices": len(keys), "order_first_s": round(order_s[0], 2) if order_s else None,
            "tiles_first_slice_s": round(tile_s[0], 2) if tile_s else None,
            "tiles_last_slice_s": round(tile_s[-1], 2) if tile_s else None,
            "merge_first_slice_s": round(merge_s[0], 2) if merge_s else None,
            "merge_last_slice_s": round(merge_s[-1], 2) if merge_s else None,
            "compaction_max_s": round(max(compact_s), 1) if compact_s else None,
            "merge_runs_at_end_s": round(runs_s, 1)}


def home_built(home: Path, rows: int, slice_rows: int) -> bool:
    """Whether every slice's embeddings and partial tiles are in the home's version ``bench``."""
    from umap_assets.tiles import tiles_path

    version = home / "warehouse" / "embeddings" / "bench"
    files = [version / f"synthetic_{i:04d}.parquet" for i in range(-(-rows // slice_rows))]
    return (version / "frame.json").exists() and all(f.exists() and tiles_path(f).exists() for f in files)


def _link(source: Path, destination: Path) -> None:
    """A hard link (the home's file is only read; a writer replaces the link, never the file), else a copy."""
    import shutil

    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def add_slice_times(home: Path, scratch: Path, at: list[int]) -> list[dict]:
    """Adding one slice as the k-th of the home, for each k in ``at``: the slice's own ``map_tiles`` work
    (its partial, then the low-zoom merge: bounded by the slice) and the compaction it makes due (asset
    ``map_tile_runs``), measured in ``scratch``, a version folder that gains the home's slices one by one."""
    import shutil

    from umap_assets.spatial import MapFrame
    from umap_assets.tiles import compact, merge_low_zooms, tiles_path, write_partial_tiles

    source = home / "warehouse" / "embeddings" / "bench"
    keys = sorted(p.stem for p in source.glob("synthetic_*.parquet"))[:max(at)]
    if scratch.exists():
        shutil.rmtree(scratch)
    (scratch / "tiles").mkdir(parents=True)
    shutil.copy(source / "frame.json", scratch / "frame.json")
    frame, out = MapFrame.load(scratch / "frame.json"), []
    for k, key in enumerate(keys, start=1):
        _link(source / f"{key}.parquet", scratch / f"{key}.parquet")
        if k not in at:
            _link(tiles_path(source / f"{key}.parquet"), tiles_path(scratch / f"{key}.parquet"))
            merge_low_zooms(scratch)
            compact(scratch)
            continue
        t = time.perf_counter()
        write_partial_tiles(scratch / f"{key}.parquet", frame)
        partial_s = time.perf_counter() - t
        low_s = merge_low_zooms(scratch)
        done = compact(scratch)
        out.append({"slice": k, "partial_s": round(partial_s, 2), "low_merge_s": round(low_s, 2),
                    "slice_s": round(partial_s + low_s, 2), "compaction_s": round(done.seconds, 2),
                    "runs_written": list(done.written), "files_read_before": done.files_before,
                    "files_read_after": done.files_after, "run_bytes": done.bytes})
        print(f"  add slice {k}: its own {partial_s + low_s:.2f}s (partial {partial_s:.2f}s, low merge {low_s:.2f}s); "
              f"compaction {done.seconds:.2f}s ({', '.join(done.written) or 'nothing due'})", flush=True)
    shutil.rmtree(scratch)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int) -> subprocess.Popen:
    code = ("import sys; from pathlib import Path; from umap_assets.map_server import serve; "
            "from umap_assets.warehouse import Warehouse; h = Path(sys.argv[1]); "
            "serve(Warehouse(root=h / 'warehouse', duckdb_path=h / 'warehouse.duckdb'), port=int(sys.argv[2]), "
            "open_browser=False, say=lambda line: print(line, flush=True))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(home), str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    for line in proc.stdout:
        print("  server:", line.strip(), flush=True)
        if "http://" in line:
            return proc
    raise SystemExit("the map server did not start")


def peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return int(fh.read().split("VmHWM:")[1].split()[0]) / 1024


def timed_get(url: str) -> tuple[float, bytes]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as r:
        body = r.read()
    return time.perf_counter() - t, body


def pct(values: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(values, 50)) * 1000, 1),
            "p95_ms": round(float(np.percentile(values, 95)) * 1000, 1), "n": len(values)}


def measure(home: Path, base: str, samples: int, seed: int = 0) -> dict:
    import duckdb

    from umap_assets.spatial import MapFrame

    glob = str(home / "warehouse" / "embeddings" / "bench" / "*.parquet")
    frame = MapFrame.load(home / "warehouse" / "embeddings" / "bench" / "frame.json")
    con = duckdb.connect()
    con.execute("SET threads = 2")
    rng = np.random.default_rng(seed)
    picks = con.sql(f"SELECT id, x, y FROM read_parquet('{glob}') USING SAMPLE {samples * 3} ROWS (reservoir, {seed})").fetchall()
    out = {}
    new_paint = sum(timed_get(base + p)[0] for p in ["/", "/api/meta", "/api/frame", "/api/tile?z=0&x=0&y=0"]
                    + [f"/api/tile?z=1&x={x}&y={y}" for x in (0, 1) for y in (0, 1)])
    old_paint = sum(timed_get(base + p)[0] for p in ["/", "/api/meta", "/api/points", "/density.png"])
    out["first_paint"] = {"new_s": round(new_paint, 2), "old_s": round(old_paint, 2)}
    tiles_new, tiles_old = [], []
    for i, (_, x, y) in enumerate(picks[:samples]):
        z = int(rng.integers(0, 9))
        n = 256 << z
        tx, ty = (int(v) for v in np.asarray(frame.cells(np.array([x]), np.array([y]), n)).ravel() // 256)
        tiles_new.append(timed_get(base + f"/api/tile?z={z}&x={tx}&y={ty}")[0])
        if i < max(5, samples // 5):
            side = frame.size / 2**z
            x0, y0 = frame.x0 + tx * side, frame.y0 + ty * side
            t = time.perf_counter()
            con.sql(f"SELECT floor((x - {x0}) / {side / 256}) AS bx, floor((y - {y0}) / {side / 256}) AS by, label, "
                    f"count(*) FROM read_parquet('{glob}') WHERE x + 0 >= {x0} AND x + 0 < {x0 + side} "
                    f"AND y + 0 >= {y0} AND y + 0 < {y0 + side} GROUP BY ALL").fetchall()
            tiles_old.append(time.perf_counter() - t)
    out["tile"] = {"new": pct(tiles_new), "old_scan": pct(tiles_old)}
    view_new, view_old, sizes = [], [], []
    half = frame.size / 512
    for i, (_, x, y) in enumerate(picks[samples:2 * samples]):
        q = f"x0={x - half}&y0={y - half}&x1={x + half}&y1={y + half}&cap=10000"
        seconds, body = timed_get(base + "/api/viewport?" + q)
        view_new.append(seconds)
        sizes.append(json.loads(body)["rows"])
        if i < max(5, samples // 5):
            t = time.perf_counter()
            con.sql(f"SELECT * FROM read_parquet('{glob}') WHERE x + 0 BETWEEN {x - half} AND {x + half} "
                    f"AND y + 0 BETWEEN {y - half} AND {y + half} LIMIT 10000").fetchall()
            view_old.append(time.perf_counter() - t)
    out["viewport"] = {"new": pct(view_new), "old_scan": pct(view_old), "median_rows": int(np.median(sizes))}
    near_new, near_old = [], []
    for i, (row_id, _, _) in enumerate(picks[2 * samples:3 * samples]):
        near_new.append(timed_get(base + f"/api/neighbours?id={row_id}&k=10")[0])
        if i < max(3, samples // 10):
            near_old.append(timed_get(base + f"/api/find?id={row_id}&k=10")[0])
    out["neighbours"] = {"new": pct(near_new), "old_find": pct(near_old)}
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=lambda s: int(s.replace("_", "")), default=100_000_000)
    p.add_argument("--slice-rows", type=lambda s: int(s.replace("_", "")), default=1_000_000)
    p.add_argument("--samples", type=int, default=40, help="queries of each kind")
    p.add_argument("--work", default=str(ROOT / "bench" / "out" / "map"))
    p.add_argument("--add-at", default="1,10,100", help="positions at which to time adding one slice")
    p.add_argument("--add-only", action="store_true", help="time adding a slice only (no server, a built home is only read)")
    args = p.parse_args()
    home = Path(args.work) / f"n{args.rows}"
    t = time.perf_counter()
    if args.add_only and home_built(home, args.rows, args.slice_rows):
        built = {"rows": args.rows, "slices": -(-args.rows // args.slice_rows), "reused": True}
    else:
        built = build_home(home, args.rows, args.slice_rows)
    built["build_s"] = round(time.perf_counter() - t, 1)
    print(json.dumps(built), flush=True)
    at = sorted({min(int(k), built["slices"]) for k in args.add_at.split(",") if k.strip()})
    added = add_slice_times(home, Path(args.work) / f"add_n{args.rows}", at) if at else []  # --add-at "": routes only
    if args.add_only:
        report_add(args.rows, args.slice_rows, added)
        return
    port = free_port()
    t = time.perf_counter()
    server = start_server(home, port)
    started_s = time.perf_counter() - t
    try:
        result = {"rows": args.rows, "slice_rows": args.slice_rows, **built, "add_slice": added,
                  "server_start_s": round(started_s, 1),
                  **measure(home, f"http://127.0.0.1:{port}", args.samples)}
        result["server_peak_rss_mb"] = round(peak_mb(server.pid))
    finally:
        server.terminate()
        server.wait()
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "map.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    r = result
    print(f"\n| measure ({r['rows']:,} rows, {r['slices']} slices) | new | full scan (today) |\n|---|---|---|")
    print(f"| first paint | {r['first_paint']['new_s']} s | {r['first_paint']['old_s']} s |")
    for name, old in (("tile", "old_scan"), ("viewport", "old_scan"), ("neighbours", "old_find")):
        print(f"| {name} p50 / p95 | {r[name]['new']['p50_ms']} / {r[name]['new']['p95_ms']} ms | "
              f"{r[name][old]['p50_ms']} / {r[name][old]['p95_ms']} ms |")
    print(f"| server peak RSS | {r['server_peak_rss_mb']} MB (server start {r['server_start_s']} s) | |")
    print(f"| a 1M-row slice's tiles | first slice {r['tiles_first_slice_s']} s, last {r['tiles_last_slice_s']} s | |")
    print(f"| adding them to the merged low zooms | first slice {r['merge_first_slice_s']} s, "
          f"last {r['merge_last_slice_s']} s | |")
    if added:
        report_add(args.rows, args.slice_rows, added)


def report_add(rows: int, slice_rows: int, added: list[dict]) -> None:
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "map_add_slice.json").write_text(json.dumps({"rows": rows, "slice_rows": slice_rows, "add_slice": added}, indent=2))
    print(f"\n| add one {slice_rows:,}-row slice ({rows:,}-row home) as slice | its own map_tiles (partial + low merge) "
          "| map_tile_runs after it (runs written) | files a tile reads before / after |\n|---|---|---|---|")
    for a in added:
        print(f"| {a['slice']} | {a['slice_s']} s ({a['partial_s']} + {a['low_merge_s']}) | {a['compaction_s']} s "
              f"({', '.join(a['runs_written']) or 'none due'}) | {a['files_read_before']} / {a['files_read_after']} |")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
