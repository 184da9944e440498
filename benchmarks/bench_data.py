"""Data-layer benchmark: cold decode and warm load of the real archives, against a plain
single-process PIL loop over the same files.

usage: python benchmarks/bench_data.py [--runs 3] [ARCHIVE ...]
Defaults to ../shared/data/mnist-png.tar.gz and cifar10-jpg.tar.gz. Each cold run uses a fresh
cache directory and a fresh process (`visionlab data ARCHIVE --json`); warm runs load again
from that cache. Writes benchmarks/results/data.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import archive_arguments, machine, measured, save_results  # noqa: E402



def cli_load(archive: Path, home: str) -> tuple[float, dict, float]:
    """Wall seconds of `visionlab data ARCHIVE --json` in a new process, its summary, its peak RSS (MB)."""
    m = measured([sys.executable, "-m", "visionlab", "data", str(archive), "--json"], env={"VISIONLAB_HOME": home})
    return m.wall_seconds, json.loads(m.stdout), m.peak_rss_mb


def in_process_warm(archive: Path, home: str) -> float:
    code = ("import time,sys; t=time.perf_counter(); from visionlab.data import load_dataset; "
            f"d=load_dataset({str(archive)!r}); d.train.images.sum(); print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "VISIONLAB_HOME": home},
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def pil_single_process(archive: Path) -> float:
    """What a notebook does: read each member and decode it with PIL, one process."""
    start = time.perf_counter()
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith((".png", ".jpg")):
                np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())))
    return time.perf_counter() - start


def bench(archive: Path, runs: int) -> dict:
    cold, decode, warm_cli, warm_lib, peak = [], [], [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as home:
            seconds, summary, rss = cli_load(archive, home)
            cold.append(seconds)
            peak.append(rss)
            decode.append(summary["decode_seconds"])
            warm_cli.append(cli_load(archive, home)[0])
            warm_lib.append(in_process_warm(archive, home))
    pil = [pil_single_process(archive) for _ in range(max(1, runs // 2))]
    return {
        "archive": archive.name, "images": sum(summary["splits"].values()), "splits": summary["splits"],
        "image_shape": summary["image_shape"], "runs": runs,
        "cold_cli_seconds_median": statistics.median(cold), "cold_decode_seconds_median": statistics.median(decode),
        "warm_cli_seconds_median": statistics.median(warm_cli), "warm_load_seconds_median": statistics.median(warm_lib),
        "pil_single_process_seconds_median": statistics.median(pil),
        "speedup_vs_pil": statistics.median(pil) / statistics.median(cold), "cold_peak_rss_mb": max(peak),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    archive_arguments(parser)
    args = parser.parse_args()
    results = {"machine": machine(), "results": [bench(a, args.runs) for a in args.archives]}
    save_results("data", results)
    print(f"machine: {results['machine']}\n")
    print("| archive | images | cold decode (CLI wall) | decode only | warm load (library) | warm CLI wall | single-process PIL "
          "| speed-up | peak RSS (cold) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results["results"]:
        print(f"| {r['archive']} | {r['images']:,} | {r['cold_cli_seconds_median']:.2f} s | {r['cold_decode_seconds_median']:.2f} s "
              f"| {r['warm_load_seconds_median']:.2f} s | {r['warm_cli_seconds_median']:.2f} s "
              f"| {r['pil_single_process_seconds_median']:.2f} s | {r['speedup_vs_pil']:.1f}x | {r['cold_peak_rss_mb']:,.0f} MB |")


if __name__ == "__main__":
    main()
