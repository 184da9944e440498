"""Evaluation figures drawn by a second process while this one works.

Why by hand: after training, a run's figures were all single-threaded Python on the critical path:
importing matplotlib (0.4-0.6 s) and drawing the confusion matrix, curves and prediction grid
(0.5-0.9 s), a fifth of lenet's whole 2-epoch MNIST command on this 2-core CPU while the other core
sat idle. A ``Painter`` is started before torch is imported: its process loads matplotlib and
warms the font cache on another core while torch loads, waits (no CPU) while the model trains,
then draws the figures: on a GPU while this process runs the train-subsample pass for the class
centroids and writes predictions.npz, on a CPU once those are done (they would share the cores).
No library does this: a process pool would import the plotting code only when first given work.

Each figure is one call of a function of ``plots`` with picklable arguments, sent over a pipe as
a length-prefixed pickle, and drawn in a child the painter forks for it, so that a run's three
figures are drawn at once (0.3-0.4 s instead of 0.5-0.6 s here). Whatever goes wrong there (the
painter or a drawing child died, a drawing failed, the painter sent something else or made no
progress for STALL seconds) is redone in this process, so the figures are the same either way,
a real error surfaces with its own traceback here, and a stuck painter cannot hang the run.
"""
from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

PLOTS = Path(__file__).with_name("plots.py")
STALL = 120.0  # seconds without a byte moving before the painter counts as stuck (a figure takes ~0.3 s)
HEADER = struct.Struct("<Q")  # each message: its length, then the pickle
LARGEST = 1 << 32  # a longer message is not one of ours (stray bytes read as a length)
AT_ONCE = 4  # drawings under way at a time, at most, and at most one a core (at least 2). A run queues
# three, the longest (the confusion matrix) first; on 2 cores two at a time drew them in 0.24-0.27 s, all
# three at once in 0.25-0.28 s


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def draw_here(name: str, args: tuple, kwargs: dict):
    from . import plots

    return getattr(plots, name)(*args, **kwargs)


class Painter:
    """``draw(name, *args)`` queues ``plots.<name>(*args)``; ``results()`` waits for every queued
    drawing and returns their results in order. Use as a context manager (``close`` ends the process)."""

    stall = STALL

    def __init__(self, process: subprocess.Popen | None):
        self.process = process
        self.jobs: list[tuple[str, tuple, dict]] = []
        self.sent = 0  # jobs[:sent] went to the process; the rest are drawn here
        if process is not None:
            os.set_blocking(process.stdin.fileno(), False)  # writes wait in select, with a deadline

    @classmethod
    def start(cls) -> "Painter":
        """A painter with its own process, or one that draws in this process where a second process
        would not help (one usable core, or a data-parallel rank other than 0) or select() cannot
        watch a pipe (Windows)."""
        if usable_cores() < 2 or os.environ.get("RANK", "0") != "0" or os.name != "posix":  # torchrun: rank 0 evaluates
            return cls(None)
        return cls.launch()

    @classmethod
    def launch(cls) -> "Painter":
        """A painter with its own process (drawing here if the process cannot start)."""
        try:  # the file, not `-m`: importing the visionlab.evaluation package runs its __init__
            process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, bufsize=0)
        except OSError:
            return cls(None)
        return cls(process)

    def draw(self, name: str, *args, **kwargs) -> None:
        self.jobs.append((name, args, kwargs))
        if self.process is not None and self.sent == len(self.jobs) - 1:
            if _send(self.process.stdin.fileno(), self.jobs[-1], self.stall):
                self.sent += 1
            else:  # the painter is gone or stuck: this drawing and the next are done here
                self._stop(kill=True)

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
                    reply = _receive(self.process.stdout.fileno(), self.stall)
                except Exception:  # EOF, no progress for STALL s, or stray bytes on its stdout: draw here
                    self._stop(kill=True)
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

    def _stop(self, kill: bool = False) -> None:
        """End the process: at the end of its input, or at once (kill) when it broke the protocol."""
        process, self.process = self.process, None
        try:
            process.stdin.close()  # the painter ends at end of input
        except OSError:
            pass
        try:
            process.wait(timeout=0 if kill else 5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()

    def __enter__(self) -> "Painter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _message(obj) -> bytes:
    """``obj`` as one message: its pickle's length, then the pickle."""
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


def _send(fd: int, message, stall: float) -> bool:
    """Write one message to a non-blocking pipe; False if the reader is gone or takes no byte for ``stall`` s."""
    data = memoryview(_message(message))
    while data:
        try:
            if not select.select([], [fd], [], stall)[1]:
                return False
            data = data[os.write(fd, data):]
        except BlockingIOError:
            continue
        except OSError:  # a broken pipe: the painter died
            return False
    return True


def _receive(fd: int, stall: float | None):
    """Read one message from a pipe; raises EOFError at its end, TimeoutError after ``stall`` s without
    a byte (None: no deadline), ValueError for what cannot be a message."""
    def exactly(n: int) -> bytes:
        chunks, deadline = [], time.monotonic() + (stall or 0.0)
        while n:
            wait = None if stall is None else max(0.0, deadline - time.monotonic())
            if not select.select([fd], [], [], wait)[0]:
                raise TimeoutError("the painter made no progress")
            chunk = os.read(fd, n)
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            n -= len(chunk)
            deadline = time.monotonic() + (stall or 0.0)
        return b"".join(chunks)

    (length,) = HEADER.unpack(exactly(HEADER.size))
    if length > LARGEST:
        raise ValueError("not a painter message")
    return pickle.loads(exactly(length))


def _serve() -> None:
    """The painter process: load plots.py, warm up, then draw the jobs read from stdin, each in a
    forked child as soon as it arrives (a few at a time: AT_ONCE), and pass their replies on in
    job order.

    One select() watches stdin and every drawing child at once. Waiting for the oldest drawing
    whenever no next job had arrived yet (as this did before) drew a run's figures one after the
    other: the parent computes a little between two draw() calls, so the curves and the sample grid
    started only once the 0.2 s confusion matrix was done (0.38-0.43 s for the three, against
    0.25-0.32 s sent back to back)."""
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
    die_with_parent = _death_signal(signal.SIGKILL)
    running: dict[int, tuple[int, int, bytearray]] = {}  # a child's pipe -> (job number, pid, its reply so far)
    finished: dict[int, bytes] = {}  # job number -> reply, held until every earlier one is passed on
    received = passed = 0
    at_once = min(AT_ONCE, max(2, usable_cores()))
    while True:
        for fd in select.select([*running, *([0] if len(running) < at_once else [])], [], [])[0]:
            if fd == 0:
                try:
                    job = _receive(0, None)
                except EOFError:  # the parent is done: leave at once (it has every reply it wanted)
                    os._exit(0)
                pid, read = _draw_forked(plots, job, die_with_parent)
                running[read] = (received, pid, bytearray())
                received += 1
                continue
            number, pid, reply = running[fd]
            chunk = os.read(fd, 1 << 20)
            if chunk:
                reply += chunk
                continue
            del running[fd]  # end of file: the child has written all it will
            os.close(fd)
            os.waitpid(pid, 0)
            finished[number] = _whole(bytes(reply))
        while passed in finished:
            sys.stdout.buffer.write(finished.pop(passed))
            sys.stdout.buffer.flush()
            passed += 1


def _draw_forked(plots, job: tuple, die_with_parent) -> tuple[int, int]:
    """Fork a child that draws ``job`` and writes its reply (one message) to a pipe: (pid, read end).

    Why fork: the three figures of a run took 0.5-0.65 s one after the other, the last stretch of
    lenet's MNIST command; forked from the warmed-up painter, each starts drawing at once."""
    read, write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write)
        return pid, read
    try:  # the child
        os.close(read)
        quiet = os.open(os.devnull, os.O_RDWR)
        os.dup2(quiet, 0)  # the painter's pipes are the painter's alone: its parent reads
        os.dup2(quiet, 1)  # their end of file as the painter's death
        die_with_parent()
        name, args, kwargs = job
        try:
            reply = (True, getattr(plots, name)(*args, **kwargs))
        except Exception as exc:  # reported as a failure: the parent draws this one itself
            reply = (False, f"{type(exc).__name__}: {exc}")
        with open(write, "wb") as pipe:
            pipe.write(_message(reply))
    finally:
        os._exit(0)


def _whole(data: bytes) -> bytes:
    """A drawing child's reply as it came, or a failure in its place if the child died before
    writing all of it."""
    if len(data) < HEADER.size or HEADER.unpack(data[:HEADER.size])[0] != len(data) - HEADER.size:
        return _message((False, "the drawing process died"))
    return data


def _death_signal(signum: int):
    """A function that makes the calling process get ``signum`` when its parent dies (Linux's
    PR_SET_PDEATHSIG): a drawing child never outlives a painter killed as stuck. A no-op elsewhere."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return lambda: None
    return lambda: prctl(1, signum)  # 1: PR_SET_PDEATHSIG


if __name__ == "__main__":
    _serve()
