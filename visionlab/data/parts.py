"""What every reader returns: decoded uint8 images per source split, before the split manifest.

A source's own splits are its "parts" ('train', 'val', 'test', or 'all' when it ships one
set). The cache stores parts; the split manifest later draws train/val/test from them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass
class Part:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64 class indices
    names: list[str]  # (N,) where each image came from: a file path or 'file[i]'
    sizes: np.ndarray  # (N, 2) int32 original (H, W) before any resize


@dataclass
class Decoded:
    classes: list[str]
    parts: dict[str, Part]
    skipped: list[dict] = field(default_factory=list)  # [{"path", "reason"}]


def array_part(images: np.ndarray, labels: np.ndarray, file: str, channels: str, image_size: int | None) -> Part:
    """A Part from arrays a format ships decoded (idx, .mat, .npz, digits), under the decode options."""
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W) -> (N, H, W, 1)
    if images.dtype != np.uint8:
        scale = 255.0 if images.size and float(images.max()) <= 1.0 else 1.0
        images = np.clip(np.rint(images.astype(np.float32) * scale), 0, 255).astype(np.uint8)
    n, h, w, c = images.shape
    if channels == "3" and c == 1:
        images = np.repeat(images, 3, axis=3)
    elif channels == "1" and c == 3:
        # ITU-R 601 luma, the same weights PIL's convert('L') uses for file sources
        luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        images = np.rint(luma).astype(np.uint8)[..., None]
    if image_size is not None and (h, w) != (image_size, image_size):
        from .decode import fit_square

        mode = "L" if images.shape[3] == 1 else "RGB"
        images = np.stack([
            np.asarray(fit_square(Image.fromarray(img.squeeze(2) if mode == "L" else img, mode), image_size)).reshape(
                image_size, image_size, -1)
            for img in images
        ]) if n else images[:, :image_size, :image_size]
    names = [f"{file}[{i}]" for i in range(n)]
    sizes = np.tile(np.array([h, w], np.int32), (n, 1))
    return Part(np.ascontiguousarray(images), labels.astype(np.int64), names, sizes)
