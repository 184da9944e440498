"""Stratified, seeded train/val/test splits, saved as an index manifest beside the cache.

Where the source ships a test split it is kept and validation is carved from train; where it
ships nothing, 80/10/10. Per-class counts are allocated by largest remainder, written here
rather than taken from scikit-learn's ``train_test_split`` because that one refuses classes
with a single image (real folders have them) while giving the same totals otherwise
(MNIST: exactly 6,000 of 60,000 for a 10% validation split).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import save_npz

SPLITS = ("train", "val", "test")


def _allocate(counts: np.ndarray, n_take: int) -> np.ndarray:
    """Per-class share of n_take, proportional to counts, summing exactly to n_take."""
    exact = counts * (n_take / max(counts.sum(), 1))
    take = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - take), kind="stable")
    take[order[: n_take - take.sum()]] += 1
    return np.minimum(take, counts)


def _carve(labels: np.ndarray, pool: np.ndarray, n_take: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split pool (indices into labels) into (taken, rest), stratified by label."""
    classes, counts = np.unique(labels[pool], return_counts=True)
    take = _allocate(counts, n_take)
    taken, rest = [], []
    for cls, k in zip(classes, take):
        members = rng.permutation(pool[labels[pool] == cls])
        taken.append(members[:k])
        rest.append(members[k:])
    cat = lambda xs: np.sort(np.concatenate(xs)) if xs else np.zeros(0, np.int64)  # noqa: E731
    return cat(taken), cat(rest)


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise UserError(f"{name} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1.0:
        raise UserError(f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}")


def make_split(parts: dict[str, np.ndarray], val_fraction: float, test_fraction: float, seed: int) -> dict:
    """{split: (part name, indices into that part)} from each part's labels.

    Fractions are of the base part: the whole set when the source ships one ('all'), else
    its train part (MNIST: 10% of 60,000 = 6,000 validation images).
    """
    rng = np.random.default_rng(seed)
    base = "all" if "all" in parts else "merged" if "merged" in parts else "train"
    labels = np.asarray(parts[base])
    pool = np.arange(len(labels))
    out = {}
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if split in parts:  # shipped by the source: kept as it is
            out[split] = (split, np.arange(len(parts[split])))
        else:
            taken, pool = _carve(labels, pool, int(round(len(labels) * fraction)), rng)
            out[split] = (base, taken)
    out["train"] = (base, pool)
    return {s: out[s] for s in SPLITS}


def manifest_path(entry: Path, val_fraction: float, test_fraction: float, seed: int, tag: str = "") -> Path:
    return entry / "splits" / f"{tag}seed{seed}-val{val_fraction:g}-test{test_fraction:g}.npz"


def load_or_make(entry: Path, parts: dict[str, np.ndarray], val_fraction: float, test_fraction: float, seed: int,
                 tag: str = "") -> dict:
    """The saved manifest if there is one, else a new one, saved atomically for later runs."""
    path = manifest_path(entry, val_fraction, test_fraction, seed, tag)
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            return {s: (str(z[f"{s}_part"]), z[f"{s}_index"]) for s in SPLITS}
    split = make_split(parts, val_fraction, test_fraction, seed)
    path.parent.mkdir(exist_ok=True)
    save_npz(path, **{f"{s}_part": np.array(p) for s, (p, _) in split.items()},
                   **{f"{s}_index": i for s, (_, i) in split.items()})
    return split
