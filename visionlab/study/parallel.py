"""A study's experiments spread over worker processes: one GPU each, or a share of the CPU cores.

    parent:  data summary and EDA, then N workers, then comparison and report from their results
    worker:  take an experiment from the shared queue, train it, analyse it, send back
             (metrics, analysis), take the next; stop at a None

Workers are fresh interpreters ('spawn': forking a process that has loaded torch, let alone
CUDA, is unsafe), so a script calling ``run_study`` with workers > 1 needs the usual
``if __name__ == "__main__":`` guard. Each starts with its environment already set
(``CUDA_VISIBLE_DEVICES``: its one GPU, which it sees as cuda:0; ``OMP_NUM_THREADS``: its share
of the cores), so torch reads it at import. Workers read the dataset from the cache the parent
filled and run the code of a sequential run (``runner.run_experiment``); results are put back in
study order, so the experiment folders, summary.json and report.html are those of a sequential
run, timings apart.

Their log records come here through a queue and are logged in this process, each prefixed with
its experiment's name. When an experiment fails, no new one starts, the running ones finish
(Ctrl-C stops them at once: they resume from their last checkpoint when the study is run
again), and its error is raised here as it was raised there: a UserError is one line and exit
code 2, as in a sequential run.
"""
from __future__ import annotations

import contextlib
import logging
import logging.handlers
import multiprocessing as mp
import os
import pickle
import queue
import signal
import sys
import traceback
from pathlib import Path

from ..errors import UserError
from . import runner
from .config import StudyConfig, experiment_config

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5  # how often the parent looks for a worker that died without a word
WORKER_MEMORY = 1.5 * 2**30  # workers: auto on a CPU: at most one per this much available memory
#   (a default-study worker training ResNet-18 on digits peaked at 1.4 GB; torch alone is ~0.5 GB)


def available_memory() -> int | None:
    """Bytes of memory the kernel reports as available (MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def visible_gpus(cuda_visible_devices: str | None, count: int) -> list[str]:
    """The GPUs this process sees, as CUDA_VISIBLE_DEVICES entries (indices, UUIDs or MIG ids),
    so that each worker is pointed at a physical device the parent itself could use."""
    if cuda_visible_devices is None:
        return [str(i) for i in range(count)]
    return [d.strip() for d in cuda_visible_devices.split(",") if d.strip()][:count]


def worker_env(index: int, n_workers: int, gpus: list[str], cores: int) -> dict[str, str]:
    """The environment worker ``index`` of ``n_workers`` starts with: one GPU (round robin when
    there are more workers than GPUs; none on CPU) and an equal share of the cores."""
    threads = str(max(1, cores // n_workers))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    return env


def plan_workers(study: StudyConfig, out: Path, quick: bool, where: str) -> tuple[int, list[str]]:
    """(number of workers, GPUs to hand out: empty on CPU) for this study on this machine."""
    if study.workers == 1:
        return 1, []
    configs = [experiment_config(study, e, out, quick, where) for e in study.experiments]
    gpus: list[str] = []
    if any(c.device != "cpu" for c in configs):
        import torch

        if torch.cuda.is_available():
            gpus = visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count())
    # auto without a GPU: one worker per core. Measured on 2 cores, the default study: two
    # 1-thread workers took 87-96 s where one 2-thread process took 117-131 s (quiet machine,
    # medians 93 s and 121 s); with other jobs running, 120-159 s against 307-825 s before
    # training had its thread tuner (a multi-threaded process waits at every sync point for a
    # descheduled thread; 1-thread workers have none)
    cores = len(os.sched_getaffinity(0))
    workers = (len(gpus) or cores) if study.workers == "auto" else study.workers
    workers = min(workers, len(study.experiments))
    memory = available_memory()
    if study.workers == "auto" and not gpus and memory is not None and workers * WORKER_MEMORY > memory:
        # a laptop with many cores and little memory would swap: fewer workers, never fewer than one
        workers = max(1, int(memory // WORKER_MEMORY))
        log.info("workers: auto -> %d (%.1f GB of memory available, about %.1f GB a worker)", workers,
                 memory / 2**30, WORKER_MEMORY / 2**30)
    if workers > 1 and any(getattr(c, "devices", 1) > 1 for c in configs):
        raise UserError(f"{where}an experiment with devices > 1 uses several GPUs itself; "
                        "run the study with workers: 1")
    return workers, gpus


def run_parallel(study: StudyConfig, out: Path, quick: bool, where: str, n_workers: int, gpus: list[str],
                 n_stages: int) -> list[tuple[dict, dict]]:
    """Every experiment in ``n_workers`` processes; (metrics, analysis) of each, in study order."""
    ctx = mp.get_context("spawn")
    tasks, results, logs, stop = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
    for i in range(len(study.experiments)):
        tasks.put(i)
    for _ in range(n_workers):
        tasks.put(None)  # one stop sign each
    cores = len(os.sched_getaffinity(0))
    log.info("%d workers, each with %s", n_workers,
             "one GPU" if gpus else f"{max(1, cores // n_workers)} of {cores} CPU threads")
    listener = logging.handlers.QueueListener(logs, _Relay())
    listener.start()
    level = logging.getLogger("visionlab").getEffectiveLevel()
    processes = []
    try:
        for w in range(n_workers):
            with _environ(worker_env(w, n_workers, gpus, cores)):  # what the spawned child inherits
                p = ctx.Process(target=_work, name=f"visionlab-worker-{w}",
                                args=(w, study, out, quick, where, n_stages, level, (tasks, results, logs, stop)))
                p.start()
            processes.append(p)
        outcome = _gather([e.name for e in study.experiments], processes, results, stop)
        for p in processes:
            p.join(timeout=60)  # each stops at its None
        return outcome
    finally:  # after an error here or Ctrl-C: stop them
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join()
        listener.stop()


def _gather(names: list[str], processes, results, stop) -> list[tuple[dict, dict]]:
    """(metrics, analysis) of every experiment, in study order. After a failure no new experiment
    starts; once the running ones have finished (every worker has stopped), it is raised."""
    done: dict[int, tuple[dict, dict]] = {}
    running: dict[int, int] = {}  # worker -> the experiment it is on
    failure, dead, last_look = None, set(), False
    while len(done) < len(names):  # after a failure: until every worker has stopped
        try:
            kind, worker, i, *payload = results.get(timeout=POLL_SECONDS)
        except queue.Empty:
            if last_look:  # every worker had stopped and the queue has been read out
                break
            last_look = all(p.exitcode is not None for p in processes)
            for w, p in enumerate(processes):
                if p.exitcode not in (None, 0) and w not in dead:  # killed (out of memory?) or crashed
                    dead.add(w)
                    what = f"experiment '{names[running[w]]}'" if w in running else "before any experiment"
                    failure = failure or (RuntimeError(f"worker {w} died ({what}) with exit code {p.exitcode}"), "")
                    _stop_after_failure(stop, running, w)
            continue
        if kind == "start":
            running[worker] = i
            continue
        running.pop(worker, None)
        if kind == "done":
            done[i] = tuple(payload)
        else:
            failure = failure or (payload[0], f"in the worker running experiment '{names[i]}':\n{payload[1]}")
            _stop_after_failure(stop, running, worker)
    if failure:
        exc, text = failure
        if isinstance(exc, UserError) or not text:
            raise exc  # a UserError: one line, as in a sequential run
        raise exc from WorkerError(text)
    if len(done) < len(names):
        raise RuntimeError("the workers stopped before every experiment was done")
    return [done[i] for i in range(len(names))]


def _stop_after_failure(stop, running: dict[int, int], failed: int) -> None:
    if not stop.is_set() and running.keys() - {failed}:
        log.warning("an experiment failed: no new one starts; waiting for %d running experiment(s) to "
                    "finish (Ctrl-C stops them now, to resume later)", len(running.keys() - {failed}))
    stop.set()


class WorkerError(Exception):
    """Carries a worker's traceback to the parent (as the cause of the re-raised exception)."""


class _Relay:
    """Logs a worker's record in this process, through the logger that made it."""

    def handle(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


class _Prefix(logging.Filter):
    """Puts the running experiment's name in front of a worker's messages."""

    experiment: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.experiment and not message.startswith(f"{self.experiment}:"):  # unless it names it already
            record.msg, record.args = f"{self.experiment}: {message}", None
        return True


class _NotATerminal:
    """A worker's stderr, reporting itself as no terminal: training then logs one line per epoch
    instead of drawing progress bars, which several processes on one terminal would garble."""

    def __init__(self, stream):
        self._stream = stream

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _work(worker: int, study: StudyConfig, out: Path, quick: bool, where: str, n_stages: int, level: int,
          queues) -> None:
    """A worker process: experiments from ``tasks`` until a None, the ``stop`` event (another
    experiment failed) or the parent's end."""
    tasks, results, logs, stop = queues
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    sys.stderr = _NotATerminal(sys.stderr)
    prefix = _Prefix()
    handler = logging.handlers.QueueHandler(logs)
    handler.addFilter(prefix)
    root = logging.getLogger("visionlab")
    root.handlers[:], root.propagate = [handler], False
    root.setLevel(level)
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    log.debug("worker %d: CUDA_VISIBLE_DEVICES=%s, %d CPU threads", worker,
              os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"), torch.get_num_threads())
    parent, dataset = os.getppid(), None
    while not stop.is_set() and os.getppid() == parent and (i := tasks.get()) is not None:
        results.put(("start", worker, i))
        runner.experiment_stage(study, i, n_stages)
        prefix.experiment = study.experiments[i].name
        try:
            if dataset is None:
                dataset = runner.load_study_data(study)  # from the cache the parent filled
            metrics, analysis = runner.run_experiment(study, study.experiments[i], dataset, out, quick, where)
        except Exception as exc:  # noqa: BLE001 - every failure goes to the parent, which stops the study
            results.put(("error", worker, i, *_portable(exc)))
            return
        prefix.experiment = None
        results.put(("done", worker, i, metrics, analysis))


def _portable(exc: Exception) -> tuple[Exception, str]:
    """The exception (or a stand-in when it cannot be pickled) and its traceback as text."""
    text = "".join(traceback.format_exception(exc))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - an exception type that does not survive pickling
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc, text
