"""Evaluation figures drawn by a second process while this one works.

Why by hand: after training, a run's figures were all single-threaded Python on the critical path:
importing matplotlib (0.4-0.6 s) and drawing the confusion matrix, curves and prediction grid
(0.5-0.9 s), a fifth of lenet's whole 2-epoch MNIST command on this 2-core CPU while the other core
sat idle. A ``Painter`` is started before torch is imported: its process loads matplotlib and
warms the font cache on another core while torch loads, waits (no CPU) while the model trains,
then draws the figures while this process runs the train-subsample pass for the class centroids
and writes predictions.npz. No library does this: a process pool would import the plotting code
only when first given work.

Each figure is one call of a function of ``plots`` with picklable arguments, sent over a pipe.
Whatever goes wrong in the painter (it died, a drawing failed) is redone in this process, so the
figures are the same either way and a real error surfaces with its own traceback here.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

PLOTS = Path(__file__).with_name("plots.py")


def draw_here(name: str, args: tuple, kwargs: dict):
    from . import plots

    return getattr(plots, name)(*args, **kwargs)


class Painter:
    """``draw(name, *args)`` queues ``plots.<name>(*args)``; ``results()`` waits for every queued
    drawing and returns their results in order. Use as a context manager (``close`` ends the process)."""

    def __init__(self, process: subprocess.Popen | None):
        self.process = process
        self.jobs: list[tuple[str, tuple, dict]] = []
        self.sent = 0  # jobs[:sent] went to the process; the rest are drawn here

    @classmethod
    def start(cls) -> "Painter":
        """A painter with its own process, or one that draws in this process where a second process
        would not help: one usable core, or a data-parallel rank other than 0."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if cores < 2 or os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 evaluates
            return cls(None)
        return cls.launch()

    @classmethod
    def launch(cls) -> "Painter":
        """A painter with its own process (drawing here if the process cannot start)."""
        try:  # the file, not `-m`: importing the visionlab.evaluation package runs its __init__
            process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL)
        except OSError:
            return cls(None)
        return cls(process)

    def draw(self, name: str, *args, **kwargs) -> None:
        self.jobs.append((name, args, kwargs))
        if self.process is not None and self.sent == len(self.jobs) - 1:
            try:
                pickle.dump(self.jobs[-1], self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                self.process.stdin.flush()
                self.sent += 1
            except (OSError, ValueError):  # the painter is gone (broken pipe, closed): draw here
                self._stop()

    @property
    def drawing(self) -> bool:
        """Is the painter process busy with queued drawings?"""
        return self.process is not None and self.sent > 0

    def results(self) -> list:
        """Every queued drawing's result, in order; the queue is then empty. A drawing that fails
        here raises its own error (and the painter process is ended: its replies would be out of step)."""
        jobs, sent = self.jobs, self.sent
        self.jobs, self.sent = [], 0
        results = []
        for i, job in enumerate(jobs):
            reply = None
            if i < sent and self.process is not None:
                try:
                    reply = pickle.load(self.process.stdout)
                except Exception:  # EOF, a broken pipe, or stray bytes on its stdout: draw here
                    self._stop()
            if isinstance(reply, tuple) and len(reply) == 2 and reply[0] is True:
                results.append(reply[1])
                continue
            try:
                results.append(draw_here(*job))
            except BaseException:
                self.close()
                raise
        return results

    def close(self) -> None:
        if self.process is not None:
            self._stop()

    def _stop(self) -> None:
        process, self.process = self.process, None
        try:
            process.stdin.close()  # the painter ends at end of input
        except OSError:
            pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> "Painter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _serve() -> None:
    """The painter process: load plots.py, warm up, then draw each job read from stdin."""
    import importlib.util
    import io
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes the pipe
    if sys.path and Path(sys.path[0] or ".").resolve() == PLOTS.parent.resolve():
        del sys.path[0]  # this file's folder (run as a script): its modules are not top-level ones
    spec = importlib.util.spec_from_file_location("visionlab_painter_plots", PLOTS)
    plots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plots)
    fig = plots.plt.figure(figsize=(1, 1))  # load the fonts and the PNG writer now, not on the first figure
    fig.text(0.5, 0.5, "0.99 warm-up")
    fig.savefig(io.BytesIO(), format="png")
    plots.plt.close(fig)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            name, args, kwargs = pickle.load(stdin)
        except EOFError:  # the parent is done: leave at once (every reply is flushed)
            os._exit(0)
        try:
            reply = (True, getattr(plots, name)(*args, **kwargs))
        except Exception as exc:  # reported as a failure: the parent draws this one itself
            reply = (False, f"{type(exc).__name__}: {exc}")
        pickle.dump(reply, stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()


if __name__ == "__main__":
    _serve()
