"""Fault 19: an output folder that cannot be written (a path through a file, a folder that
refuses writes) is a clear error before any work starts, and earlier results stay intact.
Tests run as root in CI, where permission bits do not stop writes, so the refusal is made
by the filesystem layout or by the write itself."""
from __future__ import annotations

import errno
import os
import pathlib

import pytest

from visionlab.cli import main

TRAIN = ["--data", "digits", "--model", "mlp", "--epochs", "1", "--device", "cpu"]


@pytest.fixture
def blocked(tmp_path):
    """A path whose parent is a regular file: nothing can be created under it."""
    (tmp_path / "file").write_text("I am a file, not a folder")
    return tmp_path / "file" / "out"


@pytest.mark.parametrize("command", [
    ["train", *TRAIN, "--out", "{out}"],
    ["run", "--data", "digits", "--out", "{out}"],
    ["eda", "digits", "--out", "{out}"],
])
def test_unwritable_output_is_one_line_before_work(blocked, capsys, command, monkeypatch):
    started = []
    import visionlab.training.run as run_module

    monkeypatch.setattr(run_module, "fit", lambda *a, **k: started.append(1))
    assert main([part.replace("{out}", str(blocked)) for part in command]) == 2
    err = capsys.readouterr().err
    assert str(blocked) in err and err.count("\n") == 1 and "Traceback" not in err
    assert started == []


def test_refused_writes_keep_the_earlier_run_intact(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", *TRAIN, "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    real_write = pathlib.Path.write_bytes

    def read_only(self, data):  # the disk turned read-only: every new file write under tmp_path fails
        if tmp_path in self.parents:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_write(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", read_only)
    capsys.readouterr()
    assert main(["train", *TRAIN, "--out", str(out)]) == 2  # a second run into the same folder: refused
    assert main(["train", *TRAIN, "--out", str(tmp_path / "run2")]) == 2  # a new run there: cannot write
    err = capsys.readouterr().err
    assert "already holds a run" in err and "Read-only file system" in err
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before
    assert not os.path.exists(tmp_path / "run2" / "config.yaml")
