"""Study benchmark: the README's main job, `visionlab run` with no arguments (the default digits
study: 5 experiments, analysis, comparison, report), from an empty output folder, plus the two
real-data studies of issue [3/8].

usage: python benchmarks/bench_study.py [--runs 2] [--real]
Each run is a new process with a new output folder (the decode cache stays warm, as it is for a
user's second study); wall time of the whole command. The default study runs its experiments in
worker processes (`workers: auto`: one per core here); it is also timed in one process
(`--workers 1`). --real adds one run each of `studies/mnist.yaml --data mnist-png.tar.gz` and
`studies/cifar10.yaml --data cifar10-jpg.tar.gz --quick`, with their test accuracies. Writes benchmarks/results/study.json, prints Markdown.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, machine, measured, save_results  # noqa: E402

REAL = {
    "mnist.yaml": ["studies/mnist.yaml", "--data", str(DATA / "mnist-png.tar.gz")],
    "cifar10.yaml --quick": ["studies/cifar10.yaml", "--data", str(DATA / "cifar10-jpg.tar.gz"), "--quick"],
}


def study(args: list[str], out: Path) -> dict:
    m = measured([sys.executable, "-m", "visionlab", "run", *args, "--out", str(out)], cwd=ROOT)
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_seconds": m.wall_seconds, "peak_rss_mb": m.peak_rss_mb, "experiments": {e["name"]: {"test_accuracy": e["test_accuracy"],
                                                              "train_seconds": e["train_seconds"]}
                                                  for e in summary["experiments"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--real", action="store_true")
    args = parser.parse_args()
    results: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        results["default"], results["default_one_process"] = [], []
        for i in range(args.runs):  # alternating: as the README runs it (workers: auto), then in one process
            results["default"].append(study([], Path(tmp) / f"default{i}"))
            results["default_one_process"].append(study(["--workers", "1"], Path(tmp) / f"single{i}"))
        if args.real:
            results["real"] = {name: study(argv, Path(tmp) / name.split()[0]) for name, argv in REAL.items()}
    save_results("study", results)
    report(results)


def report(r: dict) -> None:
    walls = [run["wall_seconds"] for run in r["default"]]
    print(f"machine: {r['machine']}\n")
    print(f"default study (`visionlab run`, workers: auto): median {statistics.median(walls):.0f} s wall over "
          f"{len(walls)} runs ({', '.join(f'{w:.0f} s' for w in walls)}), peak RSS of the largest process "
          f"{max(r['peak_rss_mb'] for r in r['default']):,.0f} MB\n")
    if r.get("default_one_process"):
        w1 = [run["wall_seconds"] for run in r["default_one_process"]]
        print(f"default study in one process (`--workers 1`): median {statistics.median(w1):.0f} s "
              f"({', '.join(f'{w:.0f} s' for w in w1)}); peak RSS "
              f"{max(run['peak_rss_mb'] for run in r['default_one_process']):,.0f} MB\n")
    print("| study | experiment | train time | test accuracy |\n|---|---|---|---|")
    for name, run in [("default", r["default"][0]), *r.get("real", {}).items()]:
        for exp, m in run["experiments"].items():
            print(f"| {name} ({run['wall_seconds']:.0f} s, {run['peak_rss_mb']:,.0f} MB) | {exp} | {m['train_seconds']:.1f} s | "
                  f"{100 * m['test_accuracy']:.2f}% |")


if __name__ == "__main__":
    main()
