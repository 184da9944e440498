"""A study over worker processes: the same outputs as a sequential run; a failing experiment is
one line (exit 2) and the others' folders stay; bad worker counts are one line; each worker on a
GPU machine is given exactly one GPU (checked through the pure mapping, no GPU needed)."""
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from visionlab import UserError
from visionlab.cli import main
from visionlab.study import load_study
from visionlab.study import parallel
from visionlab.study.parallel import plan_workers, visible_gpus, worker_env

STUDY = """
name: tiny
data: digits
eda: false
seed: 0
defaults:
  epochs: 2
  batch_size: 64
  device: cpu
  precision: fp32
  deterministic: true
experiments:
  - {name: mlp, model: mlp, hidden: [64]}
  - {name: cnn2, model: cnn2}
analysis:
  tsne_max_points: 120
  feature_map_images: 2
"""


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _without_timings(value):
    """A summary less what differs between any two runs: times, speeds, whether data was cached."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items()
                if "second" not in k and k not in ("timings", "created", "cached")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value if not (isinstance(v, str) and "images/s" in v)]
    return value


def test_two_workers_give_the_outputs_of_a_sequential_run(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY)
    seq, par = tmp_path / "seq", tmp_path / "par"
    # the sequential run with the torch threads each worker gets: float sums then run in the same
    # order and the results are bit-identical (with other thread counts conv outputs may differ
    # in the last bits, as they do between machines)
    worker_threads, threads = max(1, len(os.sched_getaffinity(0)) // 2), torch.get_num_threads()
    torch.set_num_threads(worker_threads)
    try:
        assert main(["run", str(study), "--out", str(seq)]) == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    assert main(["-v", "run", str(study), "--out", str(par), "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "2 workers" in err and f"{worker_threads} CPU threads" in err  # what each worker runs with
    assert "mlp: epoch 2/2" in err and "cnn2: epoch 2/2" in err  # workers' lines, named
    assert _files(seq) == _files(par)
    for name in ("mlp", "cnn2"):
        a, b = (json.loads((root / "experiments" / name / "metrics.json").read_text()) for root in (seq, par))
        assert a["test_accuracy"] == b["test_accuracy"] and a["confusion_matrix"] == b["confusion_matrix"]
        with np.load(seq / "experiments" / name / "predictions.npz") as x, \
                np.load(par / "experiments" / name / "predictions.npz") as y:
            assert x.files == y.files
            for key in x.files:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name}: {key}")
    a, b = (json.loads((root / "summary.json").read_text()) for root in (seq, par))
    assert [e["name"] for e in b["experiments"]] == ["mlp", "cnn2"]  # study order
    assert _without_timings(a) == _without_timings(b)


def test_a_failing_experiment_is_one_line_and_the_others_stay(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.replace("epochs: 2", "epochs: 1").replace(
        "{name: cnn2, model: cnn2}", "{name: cnn2, model: cnn2, weights: " + str(tmp_path / "none.safetensors") + "}"))
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--workers", "2"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("visionlab: error:") and "none.safetensors" in err[-1]
    assert not any("Traceback" in line for line in err)
    finished = out / "experiments" / "mlp" / "metrics.json"
    assert finished.exists() and (out / "experiments" / "mlp" / "analysis" / "analysis.json").exists()
    assert not (out / "report.html").exists()
    mtime = finished.stat().st_mtime_ns
    study.write_text(STUDY.replace("epochs: 2", "epochs: 1"))  # fixed: the rerun keeps mlp
    assert main(["run", str(study), "--out", str(out)]) == 0  # (any number of workers resumes it)
    assert finished.stat().st_mtime_ns == mtime and (out / "report.html").exists()


def test_ctrl_c_stops_every_worker(tmp_path, monkeypatch):
    import multiprocessing

    from visionlab.study import run_study

    study, where = load_study(None)
    study.workers, study.eda, study.experiments = 2, False, study.experiments[:2]

    def interrupted(names, processes, *args):
        assert all(p.is_alive() for p in processes)
        raise KeyboardInterrupt

    monkeypatch.setattr(parallel, "_gather", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, tmp_path / "out", where=where)
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("where, value", [("yaml", "0"), ("yaml", "abc"), ("flag", "abc"), ("flag", "0")])
def test_bad_worker_counts_are_one_line(tmp_path, capsys, where, value):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY + (f"workers: {value}\n" if where == "yaml" else ""))
    argv = ["run", str(study), "--out", str(tmp_path / "o")] + (["--workers", value] if where == "flag" else [])
    if where == "flag":
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    else:
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "workers" in err and "whole number >= 1 or auto" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_each_worker_gets_one_gpu_and_a_share_of_the_cores():
    gpus = visible_gpus(None, 4)
    assert gpus == ["0", "1", "2", "3"]
    envs = [worker_env(i, 4, gpus, cores=16) for i in range(4)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "2", "3"]  # one device each, seen as cuda:0
    assert {e["OMP_NUM_THREADS"] for e in envs} == {"4"}
    # the parent's own CUDA_VISIBLE_DEVICES is respected: workers get those physical devices
    assert visible_gpus("2,5", 2) == ["2", "5"]
    assert visible_gpus("GPU-aa, GPU-bb", 2) == ["GPU-aa", "GPU-bb"]
    assert visible_gpus("3,7,9", 2) == ["3", "7"]  # CUDA stops at an entry it cannot use
    assert visible_gpus("", 0) == []
    assert worker_env(5, 6, ["2", "5"], cores=2)["CUDA_VISIBLE_DEVICES"] == "5"  # more workers: round robin
    cpu = worker_env(0, 2, [], cores=2)
    assert "CUDA_VISIBLE_DEVICES" not in cpu and cpu["OMP_NUM_THREADS"] == "1"
    assert worker_env(0, 8, [], cores=2)["OMP_NUM_THREADS"] == "1"  # never 0


def test_plan_workers(tmp_path, monkeypatch):
    study, where = load_study(None)
    assert study.workers == "auto"  # the default study spreads its experiments
    study.workers = 1
    assert plan_workers(study, tmp_path, False, where) == (1, [])  # sequential
    study.workers = 9
    assert plan_workers(study, tmp_path, False, where)[0] == len(study.experiments)  # no idle workers
    study.workers = "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert plan_workers(study, tmp_path, False, where) == (2, ["4", "6"])  # one per visible GPU
    study.defaults["device"] = "cpu"  # experiments that run on the CPU get no GPU: one worker per core
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.setattr(parallel, "available_memory", lambda: 64 * 2**30)
    assert plan_workers(study, tmp_path, False, where) == (3, [])
    monkeypatch.setattr(parallel, "available_memory", lambda: 3.2 * 2**30)  # room for two workers only
    assert plan_workers(study, tmp_path, False, where) == (2, [])
    monkeypatch.setattr(parallel, "available_memory", lambda: 2**30)  # never fewer than one
    assert plan_workers(study, tmp_path, False, where) == (1, [])
    monkeypatch.setattr(parallel, "available_memory", lambda: None)  # unknown: the cores decide
    assert plan_workers(study, tmp_path, False, where) == (3, [])
    study.workers = 3  # an explicit number is the user's call
    monkeypatch.setattr(parallel, "available_memory", lambda: 2**30)
    assert plan_workers(study, tmp_path, False, where) == (3, [])
    study.workers = 2  # an experiment that is data-parallel itself needs the GPUs to itself
    monkeypatch.setattr(parallel, "experiment_config", lambda *a: SimpleNamespace(device="cpu", devices=4))
    with pytest.raises(UserError, match="workers: 1"):
        plan_workers(study, tmp_path, False, where)
