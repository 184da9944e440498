"""What every benchmark shares: the machine's description and a measured child process
(wall time and peak resident memory), so that speed and memory come from the same run."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Measured:
    wall_seconds: float
    peak_rss_mb: float  # the largest resident set of the process and the children it waited for
    stdout: str
    stderr: str


def measured(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> Measured:
    """Run cmd to completion; its wall time and peak RSS (from wait4's rusage); fail loudly.

    Output goes to temporary files and the child is reaped with os.wait4 here (not by Popen),
    so that its rusage, and with it ru_maxrss, is ours to read."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=cwd, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{stderr[-3000:]}")
    return Measured(wall, usage.ru_maxrss / 1024, stdout, stderr)


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    described = f"{cpu}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}"
    try:  # the GPUs, named, where there are any (nvidia-smi answers without importing torch)
        gpus = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        gpus = []
    return described + (f", GPU: {'; '.join(gpus)}" if gpus else ", no GPU")


PYTHON = sys.executable
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"  # the real archives (../shared/data/README.md)


def archive_arguments(parser: argparse.ArgumentParser) -> None:
    """ARCHIVE ... (default: the MNIST and CIFAR-10 archives in ../shared/data) and --runs N."""
    parser.add_argument("archives", nargs="*", type=Path, default=[DATA / "mnist-png.tar.gz", DATA / "cifar10-jpg.tar.gz"])
    parser.add_argument("--runs", type=int, default=3)


def save_results(name: str, results: dict) -> Path:
    """benchmarks/results/<name>.json, where run_all.py and BENCHMARKS.md's readers find it."""
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    return path
