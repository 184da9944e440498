"""``load_dataset``: from a source to train/val/test uint8 arrays, decoding at most once.

    source --resolve--> Source --read (cache miss only)--> Decoded parts --cache--> memmaps
           --split manifest--> Dataset(train, val, test)
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from . import cache, splits
from .sources import resolve_source

log = logging.getLogger(__name__)
CHANNELS = ("auto", "1", "3")


@dataclass
class DataConfig:
    source: str = "digits"  # built-in name (digits, mnist, fashion-mnist, cifar10, svhn) or a path
    image_size: int | None = None  # square side to resize to; None: native size if uniform, else 128
    channels: str = "auto"  # auto (grayscale stays 1) | 1 | 3
    val_fraction: float = 0.1  # of train when the source ships a test split, else of the whole set
    test_fraction: float = 0.1  # used only when the source ships no test split
    seed: int = 0  # drives the split (and everything else in a study)
    strict: bool = False  # any skipped file is an error instead of a warning
    classes: list[str] | None = None  # override the class names, in label order
    merge_splits: bool = False  # pool the source's own splits and split 80/10/10 (or the fractions) anew
    cache_dir: str | None = None  # default $VISIONLAB_HOME or ~/.cache/visionlab

    def validate(self) -> None:
        if self.channels not in CHANNELS:
            raise UserError(f"channels must be one of {', '.join(CHANNELS)}, got '{self.channels}'")
        if self.image_size is not None and not 4 <= self.image_size <= 4096:
            raise UserError(f"image_size must be between 4 and 4096 pixels, got {self.image_size}")
        splits.check_fractions(self.val_fraction, self.test_fraction)


@dataclass
class Split:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64
    part: str  # the cached source part these come from
    index: np.ndarray  # (N,) positions in that part (for file names and original sizes)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    source: str
    kind: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    skipped: list[dict]
    duplicates_across_splits: int  # val/test images whose exact pixels are also in an earlier split
    cache_dir: Path
    decode_seconds: float  # how long the (one) decode took
    cached: bool  # True when this load decoded nothing
    meta: dict = field(repr=False, default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def names(self, name: str) -> list[str]:
        """Where each image of a split came from (file path or 'file[i]')."""
        split = self.split(name)
        parts = list(self.meta["parts"]) if split.part == "merged" else [split.part]
        names = [n for part in parts for n in cache.load_names(self.cache_dir, part)]
        return [names[i] for i in split.index]

    def column(self, name: str, key: str) -> np.ndarray:
        """Per-image cache data of a split, aligned with its images: 'sizes' ((N, 2) int32 original
        height and width before any resize) or 'hashes' ((N,) uint64 pixel hashes)."""
        split = self.split(name)
        parts = list(self.meta["parts"]) if split.part == "merged" else [split.part]
        values = np.concatenate([np.asarray(cache.load_part(self.cache_dir, p)[key]) for p in parts])
        return values[split.index]

    def summary(self) -> dict:
        n_classes = len(self.classes)
        return {
            "source": self.source,
            "classes": self.classes,
            "image_shape": list(self.image_shape),
            "splits": {s: len(self.split(s)) for s in splits.SPLITS},
            "class_counts": {s: np.bincount(self.split(s).labels, minlength=n_classes).tolist() for s in splits.SPLITS},
            "skipped": self.skipped,
            "duplicates_across_splits": self.duplicates_across_splits,
            "cache_dir": str(self.cache_dir),
            "decode_seconds": round(self.decode_seconds, 3),
            "cached": self.cached,
        }


def load_dataset(config: DataConfig | str) -> Dataset:
    """Load a dataset, decoding it only if the cache has no entry for these files and options."""
    config = DataConfig(source=config) if isinstance(config, str) else config
    config.validate()
    home = Path(config.cache_dir).expanduser() if config.cache_dir else cache.home_dir()
    source = resolve_source(config.source, home)
    entry = cache.entry_dir(home, source.kind, source.location, source.identity, config.channels, config.image_size)
    meta = cache.read_meta(entry)
    cached = meta is not None
    if not cached:
        start = time.perf_counter()
        decoded = source.read(config.channels, config.image_size)
        seconds = time.perf_counter() - start
        _check_labels(decoded, source.location)
        cache.write_entry(entry, decoded, {"source": source.location, "kind": source.kind, "decode_seconds": seconds,
                                           "options": {"channels": config.channels, "image_size": config.image_size}})
        meta = cache.read_meta(entry)
    parts = {name: cache.load_part(entry, name) for name in meta["parts"]}
    if config.merge_splits and len(parts) > 1:
        parts = {"merged": {k: np.concatenate([np.asarray(p[k]) for p in parts.values()]) for k in
                            ("images", "labels", "sizes", "hashes")}}
    manifest = splits.load_or_make(entry, {n: p["labels"] for n, p in parts.items()},
                                   config.val_fraction, config.test_fraction, config.seed,
                                   tag="merged-" if "merged" in parts else "")
    built = {s: _take(parts[p], p, idx) for s, (p, idx) in manifest.items()}
    classes = _class_names(meta["classes"], config.classes)
    skipped = meta["skipped"]
    if skipped:
        _report_skipped(skipped, source.location, config.strict)
    return Dataset(source.location, source.kind, classes, built["train"], built["val"], built["test"], skipped,
                   _count_leaks(parts, manifest), entry, meta["decode_seconds"], cached, meta)


def _take(part: dict, name: str, index: np.ndarray) -> Split:
    if len(index) == len(part["labels"]) and np.array_equal(index, np.arange(len(index))):
        return Split(part["images"], np.asarray(part["labels"]), name, index)  # the whole part: stay mapped
    return Split(part["images"][index], part["labels"][index], name, index)


def _count_leaks(parts: dict, manifest: dict) -> int:
    """Val images whose pixels appear in train, plus test images whose pixels appear in train or val.

    Each split's hashes are sorted once and looked up by binary search: np.isin and np.union1d
    sort their inputs again at every call (MNIST, every load: 38 ms alone and up to 75 ms in a run,
    against 3 ms here)."""
    earlier: list[np.ndarray] = []  # the sorted hashes of each split before this one
    leaks = 0
    for s in splits.SPLITS:
        part, index = manifest[s]
        hashes = np.asarray(parts[part]["hashes"])[index]
        found = np.zeros(len(hashes), bool)
        for seen in earlier:
            at = np.searchsorted(seen, hashes).clip(max=len(seen) - 1)
            found |= seen[at] == hashes
        leaks += int(found.sum())
        if len(hashes):
            earlier.append(np.sort(hashes))
    return leaks


def _class_names(found: list[str], override: list[str] | None) -> list[str]:
    if override is None:
        return list(found)
    if len(override) != len(found):
        raise UserError(f"--classes gives {len(override)} names but the dataset has {len(found)} classes ({', '.join(found)})")
    return list(override)


def _check_labels(decoded, where: str) -> None:
    n_classes = len(decoded.classes)
    for name, part in decoded.parts.items():
        if len(part.labels) and (part.labels.min() < 0 or part.labels.max() >= n_classes):
            raise UserError(f"{where}: {name} labels run {part.labels.min()}..{part.labels.max()} for {n_classes} classes")
    if n_classes < 2:
        raise UserError(f"{where}: a classification dataset needs at least two classes, found {n_classes}")


def _report_skipped(skipped: list[dict], where: str, strict: bool) -> None:
    lines = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    if strict:
        raise UserError(f"{where}: {len(skipped)} file(s) could not be used (--strict): {lines}{more}")
    log.warning("%s: skipped %d file(s): %s%s", where, len(skipped), lines, more)
