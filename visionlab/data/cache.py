"""The decode cache: one memory-mappable .npy per source part, written once, atomically.

Layout of ``$VISIONLAB_HOME/datasets/<kind>-<key>/``:

    meta.json                 classes, part sizes, image shape, skipped files, decode time
    <part>.images.npy         (N, H, W, C) uint8, opened with mmap_mode='r'
    <part>.labels.npy         (N,) int64
    <part>.sizes.npy          (N, 2) int32 original (H, W)
    <part>.hashes.npy         (N,) uint64 pixel hashes, for exact duplicates
    <part>.names.json         where each image came from
    splits/<seed,fractions>.npz   the split manifest (see splits.py)

The key hashes the source's identity and the decode options, so a changed file or option
decodes again and an unchanged one never does. Entries are written to a temporary folder and
renamed into place: a kill mid-decode leaves no half entry.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .parts import Decoded

CACHE_VERSION = 1


def home_dir() -> Path:
    return Path(os.environ.get("VISIONLAB_HOME", "~/.cache/visionlab")).expanduser()


def entry_dir(home: Path, kind: str, location: str, identity: str, channels: str, image_size: int | None) -> Path:
    key = json.dumps([CACHE_VERSION, kind, location, identity, channels, image_size])
    return home / "datasets" / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def pixel_hashes(images: np.ndarray) -> np.ndarray:
    """(N,) uint64: a 64-bit blake2b of each image's bytes; equal pixels give equal hashes."""
    flat = images.reshape(len(images), -1)
    return np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in flat],
                    dtype=np.uint64)


@contextlib.contextmanager
def staged_entry(entry: Path):
    """A temporary folder beside ``entry`` to write a cache entry into (ending with its
    meta.json), renamed to ``entry`` when the block ends without error: a kill or an error
    leaves no half entry. If another process published the same entry first, theirs is kept."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=entry.name + ".tmp-", dir=entry.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, entry)
        except OSError:  # another process wrote the same entry first: theirs is as good
            if not (entry / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_entry(entry: Path, decoded: Decoded, meta: dict) -> None:
    with staged_entry(entry) as tmp:
        for name, part in decoded.parts.items():
            np.save(tmp / f"{name}.images.npy", part.images)
            np.save(tmp / f"{name}.labels.npy", part.labels)
            np.save(tmp / f"{name}.sizes.npy", part.sizes)
            np.save(tmp / f"{name}.hashes.npy", pixel_hashes(part.images))
            (tmp / f"{name}.names.json").write_text(json.dumps(part.names))
        shape = next(iter(decoded.parts.values())).images.shape[1:]
        meta = {**meta, "version": CACHE_VERSION, "classes": decoded.classes, "skipped": decoded.skipped,
                "parts": {n: len(p.labels) for n, p in decoded.parts.items()}, "image_shape": list(shape)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))


def read_meta(entry: Path) -> dict | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("version") == CACHE_VERSION else None


def load_part(entry: Path, name: str) -> dict[str, np.ndarray]:
    """Memory-map one part: nothing is read until it is used."""
    return {k: np.load(entry / f"{name}.{k}.npy", mmap_mode="r") for k in ("images", "labels", "sizes", "hashes")}


def load_names(entry: Path, name: str) -> list[str]:
    return json.loads((entry / f"{name}.names.json").read_text())
