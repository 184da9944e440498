"""Noise and artifacts: exact and near duplicates (within and across splits), blank or
near-constant images, brightness and contrast outliers.

Every finding is a list of images named by split, index in that split and source file, so a
user can open and fix them.
"""
from __future__ import annotations

import numpy as np

from .stats import grey

BLANK_STD = 2.0  # grey-level standard deviation (0-255) below which an image is near-constant
OUTLIER_Z = 5.0  # robust z-score (median / MAD) beyond which brightness or contrast is an outlier
THUMB = 16  # near duplicates are compared as THUMB x THUMB grey thumbnails
NEAR = 0.995  # cosine similarity of the standardised thumbnails at or above which two images are near duplicates
NEAR_IMAGES = 20_000  # images searched for near duplicates (pairwise: n^2 / 2 comparisons)
LISTED = 24  # examples kept per finding


def exact_duplicates(hashes: np.ndarray, split_of: np.ndarray, split_names: list[str], index: np.ndarray,
                     names: list[str] | None = None) -> dict:
    """Groups of images with identical pixels (equal 64-bit pixel hashes), over all splits.

    hashes, split_of (split number per image), index (position in its split): one entry per image.
    """
    _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    dup = counts[inverse] > 1
    order = np.flatnonzero(dup)[np.argsort(inverse[dup], kind="stable")]
    groups = np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1) if len(order) else []
    across = [g for g in groups if len(set(split_of[g].tolist())) > 1]
    examples = [[{"split": split_names[split_of[i]], "index": int(index[i]),
                  "name": names[i] if names is not None else None} for i in g] for g in (across + [
                      g for g in groups if len(set(split_of[g].tolist())) == 1])[:LISTED]]
    return {"groups": len(groups), "images": int(sum(len(g) for g in groups)),
            "extra_copies": int(sum(len(g) - 1 for g in groups)), "groups_across_splits": len(across),
            "groups_within_a_split": len(groups) - len(across), "examples": examples}


def thumbnails(images: np.ndarray, size: int = THUMB) -> np.ndarray:
    """(N, size*size) float32: grey, area-averaged to size x size, standardised to unit norm."""
    import torch
    import torch.nn.functional as F

    out = np.empty((len(images), size * size), np.float32)
    for first in range(0, len(images), 4096):
        g = torch.from_numpy(grey(images[first: first + 4096]))[:, None]
        t = F.adaptive_avg_pool2d(g, size).flatten(1)
        t = t - t.mean(1, keepdim=True)
        out[first: first + len(t)] = (t / t.norm(dim=1, keepdim=True).clamp_min(1e-6)).numpy()
    return out


def near_duplicates(images: np.ndarray, exact_hashes: np.ndarray, seed: int = 0) -> dict:
    """Pairs of different images whose thumbnails are nearly the same (cosine >= NEAR): the same
    picture re-encoded, resized, shifted in brightness. Searched among at most NEAR_IMAGES images
    (a seeded subsample, said in the result); identical-pixel pairs are left to exact_duplicates.
    Returns pairs as positions in ``images``."""
    n = len(images)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, NEAR_IMAGES, replace=False)) if n > NEAR_IMAGES else np.arange(n)
    t = thumbnails(images[pick])
    flat = np.asarray(grey(images[pick]).reshape(len(pick), -1).std(1)) > 1.0  # blank images match everything
    pairs, scores = [], []
    for first in range(0, len(pick), 2048):
        sim = t[first: first + 2048] @ t.T  # (b, n)
        rows, cols = np.nonzero(sim >= NEAR)
        keep = cols > rows + first  # each pair once, no self pairs
        rows, cols = rows[keep] + first, cols[keep]
        keep = flat[rows] & flat[cols] & (exact_hashes[pick[rows]] != exact_hashes[pick[cols]])
        pairs.append(np.stack([pick[rows[keep]], pick[cols[keep]]], 1))
        scores.append(sim[rows[keep] - first, cols[keep]])
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), int)
    scores = np.concatenate(scores) if scores else np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    return {"pairs": pairs[order], "similarity": scores[order], "searched": int(len(pick)), "of": int(n),
            "threshold": NEAR, "thumbnail": THUMB}


def blank_images(contrast: np.ndarray) -> np.ndarray:
    """Positions of near-constant images (grey standard deviation below BLANK_STD)."""
    return np.flatnonzero(contrast < BLANK_STD)


def robust_z(values: np.ndarray) -> np.ndarray:
    med = np.median(values)
    mad = np.median(np.abs(values - med)) * 1.4826
    return (values - med) / max(mad, 1e-6)


def outliers(brightness: np.ndarray, contrast: np.ndarray) -> dict:
    """Positions whose brightness or contrast lies more than OUTLIER_Z robust deviations from the
    median, most extreme first."""
    zb, zc = robust_z(brightness), robust_z(contrast)
    score = np.maximum(np.abs(zb), np.abs(zc))
    flagged = np.flatnonzero(score > OUTLIER_Z)
    flagged = flagged[np.argsort(-score[flagged], kind="stable")]
    return {"positions": flagged, "z_brightness": zb[flagged], "z_contrast": zc[flagged], "threshold": OUTLIER_Z}
