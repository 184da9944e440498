"""Per-channel pixel statistics of uint8 image arrays, from histograms.

Mean and standard deviation come from each channel's 256-bin histogram (``np.bincount``), not
from a float copy of the pixels: exact, one integer pass, no float64 array of the set (MNIST's
47 million pixels: about 0.05 s instead of 1 s and 380 MB for the float64 way).
"""
from __future__ import annotations

import numpy as np

CHUNK = 4096  # images per pass: bounds the temporary (uint16 for several channels)


def channel_histograms(images: np.ndarray) -> np.ndarray:
    """(C, 256) int64 counts of each value in each channel of (N, H, W, C) uint8 images."""
    c = images.shape[-1]
    counts = np.zeros(256 * c, np.int64)
    offsets = (np.arange(c, dtype=np.uint16) * 256)
    for first in range(0, len(images), CHUNK):
        block = np.asarray(images[first: first + CHUNK])
        if c == 1:
            counts += np.bincount(block.ravel(), minlength=256)
        else:  # one bincount for all channels: value + 256 * channel
            counts += np.bincount((block.reshape(-1, c).astype(np.uint16) + offsets).ravel(), minlength=256 * c)
    return counts.reshape(c, 256)


def channel_mean_std(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation in [0, 1], exact, over every pixel."""
    counts = channel_histograms(images).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    n = np.maximum(counts.sum(1), 1)
    mean = counts @ values / n
    var = counts @ (values * values) / n - mean * mean
    return mean, np.sqrt(np.maximum(var, 0.0))
