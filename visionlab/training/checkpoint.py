"""Checkpoints as single safetensors files: nothing here is ever unpickled.

``checkpoint.safetensors`` holds everything a resume needs: the model's weights, the optimiser's
tensors, the RNG states (as uint8 tensors) and, in the header's metadata as JSON, the epoch,
best metric, optimiser hyper-parameters, scheduler state and the resolved config.
``model.safetensors`` holds the best weights. Both are written to a temporary file, flushed to
disk and renamed over the old one, so a kill at any moment leaves the previous file whole and
a partial file is never taken for a checkpoint.

How often the training state is written is ``Cadence``'s call; the best weights found in between
are held in memory and written with the next state, and whenever training stops early (an
error, Ctrl-C).
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import UserError

META_KEY = "visionlab"
AUTO_BUDGET = 0.05  # checkpoint_interval auto: writing costs at most this share of the training time


class Cadence:
    """Whether the training state is due at the end of this epoch.

    ``interval`` seconds (0: every epoch), or "auto": due once the training since the last write
    took at least 1 / AUTO_BUDGET = 20 times as long as that write did. Why: a ResNet-18 state
    is 134 MB. On the 8x8 digits its epochs take 1.7 s, and writing the state after every one
    cost 0.15-0.3 s here (10-15% of the run, and 80 MB/s of writes to a laptop's disk). With
    auto, long epochs are still written after every one; short ones lose at most about 20
    writes' time (ResNet-18 on digits: ~5 s) when the process is killed.
    """

    def __init__(self, interval: float | str, clock=time.monotonic):
        self.interval, self.clock = interval, clock
        self.last_end, self.cost = clock(), 0.0

    def due(self) -> bool:
        wait = self.cost / AUTO_BUDGET if self.interval == "auto" else self.interval
        return self.clock() - self.last_end >= wait

    @contextmanager
    def writing(self):
        """Wrap a write: its duration sets the next wait, which starts when it ends."""
        start = self.clock()
        yield
        self.last_end = self.clock()
        self.cost = self.last_end - start


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, meta: dict) -> None:
    """save_file to a temporary sibling, fsync, then rename over path."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={META_KEY: json.dumps(meta)})
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a folder gone read-only: the previous file is untouched
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: could not be written ({exc.strerror or exc}); the previous version is kept, "
                        "free some space or choose another --out, then rerun with --resume") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a visionlab safetensors file; a clear error if it is not one."""
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: checkpoint is empty (0 bytes); it was never completely written")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"{path}: not a readable safetensors checkpoint ({exc}); it may be truncated or corrupt") from None
    return tensors, meta


def split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def join_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_state(path: Path, model, optimizer, scheduler, rng: dict[str, torch.Tensor], meta: dict) -> None:
    opt_tensors, opt_meta = split_optimizer(optimizer.state_dict())
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(opt_tensors)
    tensors.update({f"rng.{k}": v for k, v in rng.items()})
    meta = {**meta, "optimizer": opt_meta, "scheduler": scheduler.state_dict() if scheduler else None}
    atomic_save(tensors, path, meta)


def load_training_state(path: Path, model, optimizer, scheduler) -> tuple[dict[str, torch.Tensor], dict]:
    """Restore model, optimiser and scheduler in place; return (rng states, metadata)."""
    tensors, meta = read(path)
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optim": {}, "rng": {}}
    for name, value in tensors.items():
        head, _, rest = name.partition(".")
        if head not in groups:
            raise UserError(f"{path}: unexpected tensor '{name}': not a visionlab training checkpoint")
        groups[head][rest if head != "optim" else name] = value
    if "optimizer" not in meta or "epoch" not in meta:
        raise UserError(f"{path}: no training state in the metadata: not a visionlab training checkpoint")
    load_weights_into(model, groups["model"], path)
    optimizer.load_state_dict(join_optimizer(groups["optim"], meta["optimizer"]))
    if scheduler is not None and meta.get("scheduler"):
        scheduler.load_state_dict(meta["scheduler"])
    return groups["rng"], meta


def load_weights_into(model, state: dict[str, torch.Tensor], path: Path) -> None:
    """Strict load: a missing, unexpected or mis-shaped key is an error, never a partial load."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        detail = "; ".join(f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                           for label, keys in (("missing", missing), ("unexpected", unexpected),
                                               ("shape mismatch", shapes)) if keys)
        raise UserError(f"{path}: weights do not fit this model ({detail})")
    model.load_state_dict(state)


def save_weights(path: Path, model, meta: dict) -> None:
    atomic_save(dict(model.state_dict()), path, meta)


def all_finite(model) -> bool:
    return all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
