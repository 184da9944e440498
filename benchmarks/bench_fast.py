"""The GPU fast path: `studies/cifar10-fast.yaml` on the CIFAR-10 JPEGs, timed by the runs themselves.

usage: python benchmarks/bench_fast.py [--cpu] [--quick] [--only airbench]
On a machine with a CUDA GPU: `visionlab run studies/cifar10-fast.yaml --data cifar10-jpg.tar.gz`
in a new process and output folder, then per experiment the test accuracy with and without TTA,
`train_seconds` (the training epochs, the first one's start-up included), the same without the
first epoch scaled to all epochs (steady state), `test_seconds` (the TTA pass) and images/s,
against the issue's aims (airbench >= 94% in < 5 s of training, ResNet-18 >= 95% in < 2 min).
Without a GPU it says so and measures nothing, unless --cpu: then only the airbench experiment
runs (accuracy does not depend on the device; about 16 minutes on the 2-core CPU).
--quick passes --quick to the study (the plumbing, not the numbers).
Writes benchmarks/results/fast.json and prints Markdown.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, machine, measured, save_results  # noqa: E402

CIFAR = DATA / "cifar10-jpg.tar.gz"
STUDY = ROOT / "studies" / "cifar10-fast.yaml"
AIMS = {"airbench": (0.94, 5.0), "resnet18": (0.95, 120.0)}  # (test accuracy, training seconds) on one GPU


def has_gpu() -> bool:
    probe = "import torch; print(torch.cuda.is_available())"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "True"


def study_file(tmp: Path, only: list[str] | None) -> Path:
    """The study YAML, restricted to the experiments named in ``only``."""
    if not only:
        return STUDY
    study = yaml.safe_load(STUDY.read_text())
    study["experiments"] = [e for e in study["experiments"] if e["name"] in only]
    if not study["experiments"]:
        raise SystemExit(f"--only {' '.join(only)}: no such experiment in {STUDY.name}")
    path = tmp / STUDY.name
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def experiment_numbers(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    later = [e["train_seconds"] for e in epochs[1:]]
    return {"test_accuracy": metrics["test_accuracy"], "test_accuracy_no_tta": metrics.get("test_accuracy_no_tta"),
            "train_seconds": metrics["train_seconds"], "epochs": metrics["epochs"],
            "steady_train_seconds": sum(later) * len(epochs) / len(later) if later else None,
            "test_seconds": metrics["test_seconds"], "train_images_per_second": metrics["train_images_per_second"],
            "device": metrics["device"], "precision": metrics["precision"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="no GPU: run the airbench experiment on the CPU anyway")
    parser.add_argument("--quick", action="store_true", help="the study's --quick (plumbing only)")
    parser.add_argument("--only", nargs="*", help="experiment names (default: all; airbench with --cpu)")
    args = parser.parse_args()
    results: dict = {"machine": machine(), "gpu": has_gpu()}
    if not results["gpu"] and not args.cpu:
        print(f"machine: {results['machine']}\n\nno CUDA GPU on this machine: the fast path was not measured "
              "(python benchmarks/bench_fast.py --cpu measures the airbench recipe's accuracy on the CPU)")
        return
    only = args.only or (["airbench"] if not results["gpu"] else None)
    tmp = Path(tempfile.mkdtemp())
    try:
        out = tmp / "study"
        argv = [sys.executable, "-m", "visionlab", "run", str(study_file(tmp, only)), "--data", str(CIFAR),
                "--out", str(out)] + (["--quick"] if args.quick else [])
        m = measured(argv, cwd=ROOT)
        results.update(wall_seconds=m.wall_seconds, peak_rss_mb=m.peak_rss_mb, quick=args.quick,
                       experiments={run.name: experiment_numbers(run)
                                    for run in sorted((out / "experiments").iterdir()) if (run / "metrics.json").exists()})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    save_results("fast", results)
    report(results)


def report(r: dict) -> None:
    print(f"machine: {r['machine']}\n")
    print(f"`visionlab run studies/cifar10-fast.yaml`{' --quick' if r['quick'] else ''} on cifar10-jpg.tar.gz, "
          f"{r['wall_seconds']:.0f} s for the whole command\n")
    print("| experiment | device, precision | test accuracy (TTA) | without TTA | training (all epochs) "
          "| steady state | test pass | train images/s | aim |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, e in r["experiments"].items():
        accuracy, seconds = AIMS.get(name, (None, None))
        aim = "-" if accuracy is None else "(a GPU aim)" if not e["device"].startswith("cuda") else (
            f">= {accuracy:.0%} in < {seconds:g} s: "
            + ("met" if e["test_accuracy"] >= accuracy and e["train_seconds"] < seconds else "not met"))
        steady = f"{e['steady_train_seconds']:.1f} s" if e["steady_train_seconds"] is not None else "-"
        no_tta = f"{e['test_accuracy_no_tta']:.2%}" if e["test_accuracy_no_tta"] is not None else "-"
        print(f"| {name} | {e['device']}, {e['precision']} | {e['test_accuracy']:.2%} | {no_tta} | "
              f"{e['train_seconds']:.1f} s ({e['epochs']}) | {steady} | {e['test_seconds']:.1f} s | "
              f"{e['train_images_per_second']:,.0f} | {aim} |")


if __name__ == "__main__":
    main()
