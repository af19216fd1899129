"""PNG screenshots of the map and of the Dagster UI on a home, with headless Chromium, for the README.

    .venv/bin/python bench/screenshots.py [--home data] [--out docs/screenshots]

Starts `umap-assets map` and `dagster-webserver` (the UI without the daemon: no sensor or schedule
ticks, so nothing is materialized) on free ports, waits until each answers, saves one screenshot
per page with Debian's `chromium --headless`, then stops both.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = {  # file name -> (server, path)
    "map.png": ("map", "/"),
    "asset_graph.png": ("ui", "/asset-groups"),
    "quality_report.png": ("ui", "/assets/quality_report"),
    "embeddings.png": ("ui", "/assets/embeddings"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout_s: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args[0]} exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f} s")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("no chromium on PATH: apt-get install chromium")


def screenshot(browser: str, url: str, path: Path, budget_ms: int) -> None:
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1400,900", f"--virtual-time-budget={budget_ms}", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=180)
    print(f"  {path} ({path.stat().st_size:,} bytes) <- {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default=str(ROOT / "data"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = parser.parse_args()
    home, out = Path(args.home).resolve(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    browser = chromium()
    bin_dir = Path(sys.executable).parent
    ports = {"map": free_port(), "ui": free_port()}
    env = {**os.environ, "DAGSTER_HOME": str(home / "dagster"), "UMAP_ASSETS_HOME": str(home)}
    servers = {
        "map": subprocess.Popen([sys.executable, "-m", "umap_assets.cli", "map", "--home", str(home), "--no-browser",
                                 "--port", str(ports["map"])], env=env),
        "ui": subprocess.Popen([str(bin_dir / "dagster-webserver"), "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1",
                                "-p", str(ports["ui"])], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    }
    try:
        for name, process in servers.items():
            wait_for(f"http://127.0.0.1:{ports[name]}/", 180, process)
        for file, (name, path) in PAGES.items():
            screenshot(browser, f"http://127.0.0.1:{ports[name]}{path}", out / file, 20_000 if name == "ui" else 8_000)
    finally:
        for process in servers.values():
            process.terminate()
        for process in servers.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
