"""`visionlab data`: one JSON object with --json, a table without, and every user mistake as
exactly one line on stderr with exit code 2 (no traceback)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_image
from visionlab.cli import main

REPO = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = {"source", "classes", "image_shape", "splits", "class_counts", "skipped",
                "duplicates_across_splits", "cache_dir", "decode_seconds", "cached"}


@pytest.fixture(autouse=True)
def restore_package_logger():
    """main() configures the 'visionlab' logger (handler on the captured stderr, no propagation);
    put it back so later tests' caplog and streams are unaffected."""
    logger = logging.getLogger("visionlab")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err):
    assert code == 2
    assert out == ""
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("visionlab: error: ")
    assert "Traceback" not in err


def test_data_json(class_folder, capsys):
    code, out, err = run_cli(capsys, "data", str(class_folder), "--json")
    assert code == 0
    summary = json.loads(out)  # exactly one JSON document on stdout
    assert isinstance(summary, dict)
    assert set(summary) == SUMMARY_KEYS
    assert summary["source"] == str(class_folder.resolve())
    assert summary["classes"] == ["cat", "dog", "eel"]
    assert summary["image_shape"] == [12, 12, 1]
    assert summary["splits"] == {"train": 24, "val": 3, "test": 3}
    assert summary["class_counts"] == {"train": [8, 8, 8], "val": [1, 1, 1], "test": [1, 1, 1]}
    assert summary["skipped"] == []
    assert summary["duplicates_across_splits"] == 0
    assert summary["cached"] is False
    assert isinstance(summary["decode_seconds"], (int, float)) and summary["decode_seconds"] >= 0
    assert Path(summary["cache_dir"]).is_dir()
    assert Path(os.environ["VISIONLAB_HOME"]) in Path(summary["cache_dir"]).parents

    code, out, _ = run_cli(capsys, "data", str(class_folder), "--json")
    assert code == 0 and json.loads(out)["cached"] is True


def test_data_json_options(class_folder, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "data", str(class_folder), "--json", "--image-size", "8", "--channels", "3",
                           "--val-fraction", "0.2", "--test-fraction", "0.2", "--seed", "5",
                           "--classes", "kitten, puppy ,fish", "--cache-dir", str(tmp_path / "cli-cache"))
    assert code == 0
    summary = json.loads(out)
    assert summary["image_shape"] == [8, 8, 3]
    assert summary["classes"] == ["kitten", "puppy", "fish"]
    assert summary["splits"] == {"train": 18, "val": 6, "test": 6}
    assert (tmp_path / "cli-cache") in Path(summary["cache_dir"]).parents


def test_data_json_lists_skipped_files_and_keeps_stdout_clean(class_folder, capsys):
    (class_folder / "dog" / "broken.png").write_bytes(b"not a png")
    code, out, err = run_cli(capsys, "data", str(class_folder), "--json")
    assert code == 0
    summary = json.loads(out)  # the warning went to stderr, not into the JSON
    assert [s["path"] for s in summary["skipped"]] == ["dog/broken.png"]
    assert "broken.png" in err


def test_data_table(class_folder, capsys):
    code, out, err = run_cli(capsys, "data", str(class_folder))
    assert code == 0
    assert not out.lstrip().startswith("{")
    for word in ("cat", "dog", "eel", "train", "val", "test", "12x12"):
        assert word in out
    assert "train 24" in out and "val 3" in out and "test 3" in out
    cat_row = next(line for line in out.splitlines() if line.startswith("cat "))
    assert cat_row.split()[1:] == ["8", "1", "1"]


def test_data_table_lists_skipped(class_folder, capsys):
    (class_folder / "cat" / "empty.png").write_bytes(b"")
    code, out, _ = run_cli(capsys, "data", str(class_folder))
    assert code == 0
    assert "skipped 1 file(s)" in out and "cat/empty.png" in out


def test_bad_path_is_one_line_exit_2(tmp_path, capsys):
    code, out, err = run_cli(capsys, "data", str(tmp_path / "does-not-exist"), "--json")
    assert_one_line_error(code, out, err)
    assert "does-not-exist" in err


@pytest.mark.parametrize("case", ["unknown_name", "one_class", "classes_mismatch", "strict", "bad_idx",
                                  "refused_archive"])
def test_user_errors_are_one_line_exit_2(case, tmp_path, capsys, monkeypatch, class_folder):
    monkeypatch.chdir(tmp_path)
    if case == "unknown_name":
        argv = ["data", "cifar100"]
    elif case == "one_class":
        write_image(tmp_path / "one" / "cat" / "0.png", np.zeros((4, 4), np.uint8))
        argv = ["data", str(tmp_path / "one")]
    elif case == "classes_mismatch":
        argv = ["data", str(class_folder), "--classes", "a,b"]
    elif case == "strict":
        (class_folder / "cat" / "x.png").write_bytes(b"")
        argv = ["data", str(class_folder), "--strict", "--json"]
    elif case == "bad_idx":
        (tmp_path / "idx").mkdir()
        (tmp_path / "idx" / "train-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78" + b"\0" * 20)
        (tmp_path / "idx" / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\x01\x00")
        argv = ["data", str(tmp_path / "idx")]
    else:
        import tarfile
        import io
        with tarfile.open(tmp_path / "evil.tar", "w") as tf:
            info = tarfile.TarInfo("../evil.png")
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
        argv = ["data", str(tmp_path / "evil.tar")]
    code, out, err = run_cli(capsys, *argv)
    assert_one_line_error(code, out, err)
    expected = {"unknown_name": "digits", "one_class": "at least two", "classes_mismatch": "3 classes",
                "strict": "strict", "bad_idx": "magic", "refused_archive": "refused"}[case]
    assert expected in err


@pytest.mark.parametrize("argv", [
    ["data", "digits", "--channels", "2"],
    ["data", "digits", "--image-size", "big"],
    ["data"],
    ["nosuchcommand"],
])
def test_bad_arguments_are_one_line_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert_one_line_error(2, out, err)


def test_bad_config_value_is_one_line_exit_2(class_folder, capsys):
    code, out, err = run_cli(capsys, "data", str(class_folder), "--val-fraction", "0.6", "--test-fraction", "0.5")
    assert_one_line_error(code, out, err)


def test_console_entry_subprocess(tmp_path):
    missing = tmp_path / "no-such-dataset"
    proc = subprocess.run([sys.executable, "-m", "visionlab", "data", str(missing), "--json"],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ})
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip("\n").split("\n")
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("visionlab: error: ") and "no-such-dataset" in lines[0]


def test_console_entry_flushes_block_buffered_output(class_folder):
    """`python -m visionlab` leaves through os._exit (cli.run): what it printed to a pipe, which
    Python buffers in blocks, must still arrive whole, with the exit code."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run([sys.executable, "-m", "visionlab", "data", str(class_folder), "--json"],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["classes"] == ["cat", "dog", "eel"]


class _Exited(Exception):
    pass


def test_run_exits_quickly_unless_something_still_runs(monkeypatch):
    """cli.run: main's exit code through os._exit; the ordinary exit (SystemExit) instead while a
    thread that is not a daemon still runs, so that Python waits for it."""
    import threading

    from visionlab import cli

    def fake_exit(code):
        raise _Exited(code)

    monkeypatch.setattr(cli, "main", lambda: 3)
    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    with pytest.raises(_Exited) as quick:
        cli.run()
    assert quick.value.args == (3,)
    release = threading.Event()
    worker = threading.Thread(target=release.wait)  # not a daemon
    worker.start()
    try:
        with pytest.raises(SystemExit) as ordinary:
            cli.run()
        assert ordinary.value.code == 3
    finally:
        release.set()
        worker.join()


def test_importing_turns_the_collector_back_on_and_freezes(monkeypatch):
    """cli._importing: the cyclic collector is off inside, on again after, even when the block
    raises (a failed import must not leave a long run without it); what existed is frozen."""
    import gc

    from visionlab import cli

    frozen = []
    monkeypatch.setattr(cli.gc, "freeze", lambda: frozen.append(True))  # the real one would freeze the test session
    assert gc.isenabled()
    with pytest.raises(ImportError):
        with cli._importing():
            assert not gc.isenabled()
            raise ImportError("no such module")
    assert gc.isenabled() and frozen == [True]
    with cli._importing():
        assert not gc.isenabled()
    assert gc.isenabled() and frozen == [True, True]
