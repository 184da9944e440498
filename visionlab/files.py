"""Atomic file writes: every JSON, page, log and array record visionlab writes goes to a
temporary sibling first and is renamed over the target, so a reader, or a kill mid-write,
never sees half a file, and the previous version stays whole until the new one is complete.
(Checkpoints also fsync: see training/checkpoint.atomic_save.)"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import UserError


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")  # hidden; per process, so writers never collide


def write_text(path: Path, text: str) -> Path:
    """``text`` (UTF-8) to ``path``, atomically."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_npz(path: Path, compressed: bool = False, **arrays: np.ndarray) -> Path:
    """``np.savez`` (or ``savez_compressed``) of ``arrays`` to ``path``, atomically."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as f:  # a file object: numpy adds no '.npz' to the temporary name
            (np.savez_compressed if compressed else np.savez)(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """Every array of an .npz (never unpickling), or one line saying it cannot be read as ``what``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the {what} ({exc})") from None
