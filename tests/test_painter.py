"""The painter process draws the same figures as this process, and whatever goes wrong there is
redone here: no figure is lost and a real error surfaces with its own exception."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from visionlab.evaluation.painter import Painter, draw_here


def _jobs():
    rng = np.random.default_rng(0)
    classes = ["cat", "US$", "dog", "c4"]
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_accuracy": 1 - 1 / (e + 1),
                "val_accuracy": 1 - 1.1 / (e + 1)} for e in (1, 2, 3)]
    images = rng.integers(0, 255, (6, 10, 12, 3), dtype=np.uint8)
    return [("plot_confusion", (rng.integers(0, 50, (4, 4)), classes), "confusion"),
            ("plot_curves", (history,), "curves"),
            ("plot_prediction_grid", (images, np.array([0, 1, 2, 3, 0, 1]), np.array([0, 1, 2, 0, 0, 1]), rng.random(6),
                                      classes), "grid")]


def test_painter_draws_the_same_files_as_this_process(tmp_path):
    with Painter.launch() as painter:
        assert painter.process is not None
        for name, args, tag in _jobs():
            painter.draw(name, *args, tmp_path / f"{tag}-painter.png", "run")
        assert painter.sent == len(_jobs())  # all went to the process
        paths = painter.results()
        assert painter.process is not None  # it drew them all: nothing was redone here
        process = painter.process
    assert process.returncode == 0  # it left at the end of its input
    assert [p.name for p in paths] == [f"{tag}-painter.png" for _, _, tag in _jobs()]
    for name, args, tag in _jobs():
        draw_here(name, (*args, tmp_path / f"{tag}-here.png", "run"), {})
        assert (tmp_path / f"{tag}-painter.png").read_bytes() == (tmp_path / f"{tag}-here.png").read_bytes(), tag


def test_a_dead_painter_loses_no_figure(tmp_path):
    painter = Painter.launch()
    jobs = _jobs()
    painter.draw(jobs[0][0], *jobs[0][1], tmp_path / "first.png", "run")
    painter.process.kill()  # dies with a drawing queued, and before the next is sent
    painter.process.wait()
    for name, args, tag in jobs[1:]:
        painter.draw(name, *args, tmp_path / f"{tag}.png", "run")
    assert len(painter.results()) == 3
    assert painter.process is None
    for name in ("first.png", "curves.png", "grid.png"):
        assert (tmp_path / name).stat().st_size > 1000
    painter.close()


def test_a_failed_drawing_is_redone_here_and_raises_its_own_error(tmp_path):
    with Painter.launch() as painter:
        painter.draw("plot_curves", [{"epoch": 1}], tmp_path / "curves.png", "run")  # no losses: KeyError
        with pytest.raises(KeyError, match="train_loss"):
            painter.results()
        assert painter.process is None and painter.jobs == []  # no reply left to be taken for a later job's


def test_start_draws_here_where_a_second_process_would_not_help(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert Painter.start().process is None
    monkeypatch.undo()
    monkeypatch.setenv("RANK", "1")  # a torchrun rank other than 0 never evaluates
    assert Painter.start().process is None


def test_the_painter_module_imports_neither_torch_nor_matplotlib():
    """The painter is started before torch is imported so that matplotlib loads meanwhile on
    another core; importing it must not pull either in."""
    code = ("import sys, visionlab.evaluation.painter; "
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_stray_output_from_the_painter_process_loses_no_figure(tmp_path):
    """Anything else on the painter's stdout (a sitecustomize that prints, say) cannot be taken
    for a reply: the figures are drawn here instead."""
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.write('hello, painter here'); "
                                "sys.stdout.flush(); sys.stdin.buffer.read()"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
    painter = Painter(process)
    for name, args, tag in _jobs():
        painter.draw(name, *args, tmp_path / f"{tag}.png", "run")
    assert [p.name for p in painter.results()] == ["confusion.png", "curves.png", "grid.png"]
    assert painter.process is None and process.returncode is not None
    for _, _, tag in _jobs():
        assert (tmp_path / f"{tag}.png").stat().st_size > 1000


@pytest.mark.parametrize("side", [4, 200])  # the job fits in the pipe's buffer, or its write waits on the reader
def test_a_stuck_painter_cannot_hang_the_run(tmp_path, side):
    """A painter process that neither reads nor answers is killed after ``stall`` seconds without
    progress and the figures are drawn here."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
    painter = Painter(process)
    painter.stall = 0.5
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (32, side, side, 3), dtype=np.uint8)  # 200 px: a 3.8 MB message
    labels = np.arange(32) % 4
    painter.draw("plot_prediction_grid", images, labels, labels, rng.random(32), ["a", "b", "c", "d"],
                 tmp_path / "grid.png", "run")
    [path] = painter.results()
    assert path.stat().st_size > 1000
    assert painter.process is None and process.returncode == -signal.SIGKILL  # killed, not waited out


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="finds the drawing child through Linux's /proc")
def test_a_drawing_child_that_dies_loses_no_figure(tmp_path):
    """Each drawing runs in a child forked by the painter; one killed mid-drawing is reported as
    failed, drawn here instead, and the painter carries on."""
    with Painter.launch() as painter:
        painter.stall = 10
        rng = np.random.default_rng(0)
        images = rng.integers(0, 255, (32, 400, 400, 3), dtype=np.uint8)  # seconds to draw: time to catch it
        labels = np.arange(32) % 4
        painter.draw("plot_prediction_grid", images, labels, labels, rng.random(32), ["a", "b", "c", "d"],
                     tmp_path / "grid.png", "run")
        children = Path(f"/proc/{painter.process.pid}/task/{painter.process.pid}/children")
        deadline = time.monotonic() + 30
        while not children.read_text().split() and time.monotonic() < deadline:
            time.sleep(0.005)
        [child] = children.read_text().split()
        os.kill(int(child), signal.SIGKILL)
        painter.draw("plot_curves", _jobs()[1][1][0], tmp_path / "curves.png", "run")
        grid, curves = painter.results()
        assert painter.process is not None  # only the drawing died, not the painter
    assert grid.stat().st_size > 1000 and curves.stat().st_size > 1000
