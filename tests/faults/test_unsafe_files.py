"""Faults 4-5: pickles with a code-running payload, and damaged safetensors files, wherever a
file is read: as a resume checkpoint, as a side file next to one, as `weights:`, through
`visionlab evaluate` / `predict`. Refused with one clear line naming the file; no code runs
(the payload's marker file never appears); never a silent partial load."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch

from visionlab.cli import main
from visionlab.training import make_config, train

FAST = dict(data="digits", model="cnn2", epochs=1, batch_size=64, device="cpu", precision="fp32")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling runs os.system("touch marker")
        return os.system, (f"touch {self.marker}",)


def _pickle_bomb(path, marker, with_torch: bool) -> None:
    obj = {"conv1.weight": torch.zeros(1), "evil": _Payload(marker)}
    if with_torch:
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished run, trained once for the module; each test damages its own copy."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VISIONLAB_HOME", str(root / "home"))
        train(make_config({**FAST, "out": str(root / "run")}))
    return root / "run"


@pytest.fixture
def run_dir(trained, tmp_path):
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _one_line_error(capsys, name: str) -> str:
    err = capsys.readouterr().err
    assert name in err and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("which", ["checkpoint.safetensors", "model.safetensors"])
def test_pickle_in_place_of_a_checkpoint_is_refused(run_dir, tmp_path, capsys, which):
    marker = tmp_path / "pwned"
    _pickle_bomb(run_dir / which, marker, with_torch=True)
    capsys.readouterr()
    command = ["train", "--resume", "--out", str(run_dir)] if which == "checkpoint.safetensors" else \
        ["evaluate", str(run_dir)]
    if which == "checkpoint.safetensors":
        (run_dir / "metrics.json").unlink()  # an unfinished run, so that --resume reads the checkpoint
    assert main(command) == 2
    _one_line_error(capsys, which)
    assert not marker.exists()


def test_pickle_side_files_are_never_read(run_dir, tmp_path, capsys):
    """Files a user or another tool left next to the checkpoint (.pt, .pth, .pkl) play no part."""
    marker = tmp_path / "pwned"
    for name in ("checkpoint.pt", "model.pth", "optimizer.pkl", "checkpoint.safetensors.pt"):
        _pickle_bomb(run_dir / name, marker, with_torch=name.endswith((".pt", ".pth")))
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] > 0
    assert not marker.exists()


@pytest.mark.parametrize("with_torch", [True, False])
def test_pickle_as_weights_is_refused_with_no_fallback(tmp_path, capsys, with_torch):
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pt"
    _pickle_bomb(path, marker, with_torch)
    assert main(["train", "--data", "digits", "--model", "resnet18", "--epochs", "1", "--weights", str(path),
                 "--out", str(tmp_path / "run")]) == 2
    assert "refused" in _one_line_error(capsys, "weights.pt") or "cannot read" in capsys.readouterr().err
    assert not marker.exists()


def _header_file(path, header: bytes, length: int | None = None, body: bytes = b"") -> None:
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + body)


@pytest.mark.parametrize("damage", ["bad json header", "oversized header length", "data shorter than declared",
                                    "zero bytes", "not safetensors at all"])
def test_damaged_safetensors_checkpoint_is_a_clear_error(run_dir, capsys, damage):
    path = run_dir / "checkpoint.safetensors"
    if damage == "bad json header":
        _header_file(path, b"{not json")
    elif damage == "oversized header length":
        _header_file(path, b"{}", length=2 ** 40)
    elif damage == "data shorter than declared":
        header = json.dumps({"model.w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
        _header_file(path, header, body=b"\0" * 100)
    elif damage == "zero bytes":
        path.write_bytes(b"")
    else:
        path.write_text("hello, I am a text file")
    (run_dir / "metrics.json").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run_dir)]) == 2
    _one_line_error(capsys, "checkpoint.safetensors")


def test_weights_with_a_missing_key_are_never_partly_loaded(run_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    state = load_file(str(run_dir / "model.safetensors"))
    state.pop(next(iter(state)))
    save_file(state, str(run_dir / "model.safetensors"))
    capsys.readouterr()
    assert main(["evaluate", str(run_dir)]) == 2
    assert "missing" in _one_line_error(capsys, "model.safetensors")
