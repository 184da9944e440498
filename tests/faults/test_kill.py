"""Faults 1-2: a training process SIGKILLed mid-epoch, or halfway through writing a checkpoint,
resumes to the same weights and metrics as a run never interrupted (CPU, deterministic); a
full disk while saving is a clear error that keeps the previous checkpoint.

The kill is real: a child process runs `visionlab train` with a hook that sends itself SIGKILL
at a chosen step or in the middle of a chosen file write, so no Python cleanup runs.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from killer import DRIVER
from visionlab.cli import main
from visionlab.training import checkpoint

ARGS = ["--data", "digits", "--model", "cnn2", "--epochs", "3", "--batch-size", "64", "--lr", "0.003",
        "--device", "cpu", "--set", "precision=fp32", "--set", "deterministic=true",
        "--set", "checkpoint_interval=0"]  # a checkpoint after every epoch: the tests count the writes



def _killed(tmp_path, mode: str, at: int, out) -> None:
    proc = subprocess.run([sys.executable, "-c", DRIVER, mode, str(at), "train", *ARGS, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    home = out.parent / "home"
    env = {**os.environ, "VISIONLAB_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "visionlab", "train", *ARGS, "--out", str(out)], check=True, env=env,
                   capture_output=True, timeout=300)
    return load_file(str(out / "model.safetensors")), json.loads((out / "metrics.json").read_text())


def _same_as(uninterrupted, out) -> None:
    weights, metrics = uninterrupted
    resumed = load_file(str(out / "model.safetensors"))
    assert weights.keys() == resumed.keys() and all((weights[k] == resumed[k]).all() for k in weights)
    got = json.loads((out / "metrics.json").read_text())
    assert got["test_accuracy"] == metrics["test_accuracy"] and got["confusion_matrix"] == metrics["confusion_matrix"]
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, uninterrupted):
    out = tmp_path / "run"
    _killed(tmp_path, "step", 30, out)  # 23 steps an epoch: killed in the middle of epoch 2
    assert not (out / "metrics.json").exists()
    assert main(["train", "--resume", "--out", str(out)]) == 0
    _same_as(uninterrupted, out)


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, uninterrupted):
    out = tmp_path / "run"
    # writes: 1 epoch-0 state, 2 best weights (epoch 1), 3 state (epoch 1), 4 best (epoch 2), 5 state (epoch 2)
    _killed(tmp_path, "save", 5, out)
    leftovers = [p.name for p in out.iterdir() if ".tmp" in p.name]
    assert leftovers, "the half-written temporary file is left behind, never renamed"
    tensors, meta = checkpoint.read(out / "checkpoint.safetensors")  # the epoch-1 state, whole
    assert meta["epoch"] == 1
    assert main(["train", "--resume", "--out", str(out)]) == 0  # the partial file is never picked
    _same_as(uninterrupted, out)


def test_full_disk_while_saving_is_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_save = checkpoint.save_file
    count = [0]

    def disk_full(tensors, filename, metadata=None):
        count[0] += 1
        if count[0] == 3:  # the epoch-1 training state
            with open(filename, "wb") as f:
                f.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    assert main(["train", *ARGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "checkpoint.safetensors" in err and err.count("\n") == 1
    assert checkpoint.read(out / "checkpoint.safetensors")[1]["epoch"] == 0  # the previous state, intact
    assert not [p for p in out.iterdir() if ".tmp" in p.name]  # the failed temporary file is removed
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    assert main(["train", "--resume", "--out", str(out)]) == 0
