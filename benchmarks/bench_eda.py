"""EDA benchmark: `visionlab eda` on the real archives in ../shared/data (decode cache warm).

usage: python benchmarks/bench_eda.py [--runs 3] [ARCHIVE ...]
Whole-command wall time (new process each run) and the EDA's own per-step seconds from eda.json;
medians. Writes benchmarks/results/eda.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import archive_arguments, machine, measured, save_results  # noqa: E402



def one(archive: Path, out: Path) -> tuple[float, dict, float]:
    m = measured([sys.executable, "-m", "visionlab", "eda", str(archive), "--out", str(out)])
    return m.wall_seconds, json.loads((out / "eda.json").read_text()), m.peak_rss_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    archive_arguments(parser)
    args = parser.parse_args()
    results = {"machine": machine(), "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        for archive in args.archives:
            measured([sys.executable, "-m", "visionlab", "data", str(archive)])
            runs = [one(archive, Path(tmp) / f"{archive.stem}{i}") for i in range(args.runs)]
            steps = {k: statistics.median(r["seconds"][k] for _, r, _ in runs) for k in runs[0][1]["seconds"]}
            last = runs[-1][1]
            results["results"].append({
                "archive": archive.name, "images": sum(last["images"].values()),
                "wall_seconds": [w for w, _, _ in runs], "peak_rss_mb": max(m for _, _, m in runs),
                "steps_median": steps,
                "hog_baseline_accuracy": last["handcrafted"]["hog_baseline"]["accuracy"],
                "near_duplicate_pairs": last["quality"]["near_duplicates"]["pairs"],
                "exact_duplicate_copies": last["quality"]["exact_duplicates"]["extra_copies"]})
    save_results("eda", results)
    print(f"machine: {results['machine']}\n")
    print("| archive | images | CLI wall (median) | EDA total | slowest step | HOG + linear SVM | peak RSS |\n"
          "|---|---|---|---|---|---|---|")
    for r in results["results"]:
        steps = {k: v for k, v in r["steps_median"].items() if k != "total"}
        slow = max(steps, key=steps.get)
        print(f"| {r['archive']} | {r['images']:,} | {statistics.median(r['wall_seconds']):.1f} s | "
              f"{r['steps_median']['total']:.1f} s | {slow} {steps[slow]:.1f} s | {100 * r['hog_baseline_accuracy']:.1f}% | "
              f"{r['peak_rss_mb']:,.0f} MB |")


if __name__ == "__main__":
    main()
