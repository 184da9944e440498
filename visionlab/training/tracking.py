"""Per-epoch logging: ``metrics.jsonl`` always; Weights & Biases and TensorBoard when asked.

Each epoch's line is flushed at once (a killed process loses none) and synced to disk with
every checkpoint. On resume, lines past the checkpoint's epoch (written after the checkpoint by
a run that was then killed) are dropped, so the file holds each epoch once.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import string
from pathlib import Path

from ..errors import UserError
from ..files import write_text

log = logging.getLogger(__name__)


class Tracker:
    def __init__(self, out: Path, config, start_epoch: int):
        self.path = out / "metrics.jsonl"
        self.history = _read_jsonl(self.path)
        self._file = None
        self.rewind(start_epoch)
        self._wandb = _start_wandb(out, config) if config.wandb != "off" else None
        self._tb = _start_tensorboard(out) if config.tensorboard else None

    def rewind(self, epoch: int) -> None:
        """Keep the lines of epochs up to ``epoch`` only (a resume, or an out-of-memory redo)."""
        if self._file is not None:
            self._file.close()
        self.history[:] = [h for h in self.history if h.get("epoch", 0) <= epoch]  # in place: callers hold the list
        write_text(self.path, "".join(json.dumps(h) + "\n" for h in self.history))
        self._file = open(self.path, "a")

    def log(self, stats: dict) -> None:
        self.history.append(stats)
        self._file.write(json.dumps(stats) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log(stats, step=stats["epoch"])
        if self._tb is not None:
            for key, value in stats.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, stats["epoch"])

    def sync(self) -> None:
        """On disk, not only in the OS's cache: called before each checkpoint is written."""
        os.fsync(self._file.fileno())

    def close(self) -> None:
        with contextlib.suppress(OSError):  # flushed already; a failing sync must not hide the error that stops a run
            self.sync()
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            break  # a line cut by a kill: everything before it is whole
    return lines


def _start_wandb(out: Path, config):
    try:
        import wandb
    except ImportError:
        raise UserError("wandb logging asked for but the wandb package is missing: pip install wandb") from None
    id_file = out / "wandb_id"  # the same W&B run continues on --resume
    run_id = id_file.read_text().strip() if id_file.exists() else "".join(
        secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    id_file.write_text(run_id)
    run = wandb.init(project=config.wandb_project, name=out.name, id=run_id, resume="allow", dir=str(out),
                     mode=config.wandb, config=config.model_dump())
    if config.wandb == "offline":
        log.info("W&B offline run in %s; upload it later with: wandb sync %s", run.dir, Path(run.dir).parent)
    return run


def _start_tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("tensorboard logging asked for but the tensorboard package is missing: "
                        "pip install tensorboard") from None
    return SummaryWriter(str(out / "tensorboard"))
