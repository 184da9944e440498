"""The numbers of an EDA, as pure functions of uint8 arrays (N, H, W, C) and int labels.

Exact over every image where that is cheap (class counts, channel statistics, per-image
brightness and contrast, class mean images); on a seeded subsample where a statistic does not
need every image (pixel correlation), and the result says how many images it used.
"""
from __future__ import annotations

import math

import numpy as np

IMBALANCE = 1.5  # largest / smallest class at or above this: a warning with a suggestion
CHUNK = 1 << 22  # array values per chunk of the float passes: bounds their temporaries (32 MB as float64)
CORR_GRID = 32  # pixel correlation on at most this many pixels per side (area-averaged)
CORR_IMAGES = 10_000  # images behind the correlation matrix
GREY = np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma, RGB -> grey


def class_distribution(labels: dict[str, np.ndarray], classes: list[str]) -> dict:
    """Counts per split and in total, the imbalance ratio (largest / smallest class, over the
    classes that have any image) and the classes with no image at all."""
    k = len(classes)
    counts = {s: np.bincount(np.asarray(l, np.int64), minlength=k)[:k].tolist() for s, l in labels.items()}
    total = np.sum([counts[s] for s in counts], axis=0) if counts else np.zeros(k, np.int64)
    present = total[total > 0]
    ratio = float(present.max() / present.min()) if len(present) else None
    largest, smallest = int(np.argmax(total)), int(np.argmin(np.where(total > 0, total, np.iinfo(np.int64).max)))
    return {"counts": counts, "total": total.tolist(), "imbalance_ratio": ratio,
            "largest": {"class": classes[largest], "images": int(total[largest])},
            "smallest": {"class": classes[smallest], "images": int(total[smallest])},
            "empty_classes": [classes[i] for i in np.flatnonzero(total == 0)],
            "imbalanced": bool(ratio is not None and ratio >= IMBALANCE) or bool((total == 0).any())}


def _chunk(images: np.ndarray) -> int:
    """Images per chunk: CHUNK values (8,192 images were 3.2 GB as float64 at 128 px)."""
    return max(1, CHUNK // max(1, int(np.prod(images.shape[1:]))))


def grey(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, H, W) float32 in [0, 255]."""
    x = np.asarray(images)
    if x.shape[-1] == 1:
        return x[..., 0].astype(np.float32)
    return (x[..., :3].astype(np.float32) @ GREY.astype(np.float32))


def channel_stats(images: np.ndarray) -> dict:
    """Per-channel mean and standard deviation over every pixel of every image, in [0, 1]
    (what training normalises with), exact, from each channel's histogram."""
    from ..data.pixels import channel_mean_std

    mean, std = channel_mean_std(images)
    return {"mean": mean.round(4).tolist(), "std": std.round(4).tolist()}


def intensity(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: brightness (mean grey intensity) and contrast (its standard deviation), 0-255."""
    bright, contrast = np.empty(len(images), np.float32), np.empty(len(images), np.float32)
    step = _chunk(images)
    for first in range(0, len(images), step):
        g = grey(images[first: first + step]).reshape(min(step, len(images) - first), -1)
        bright[first: first + len(g)] = g.mean(1)
        contrast[first: first + len(g)] = g.std(1)
    return bright, contrast


def five_numbers(values: np.ndarray) -> dict | None:
    if len(values) == 0:
        return None
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return dict(zip(("min", "q1", "median", "q3", "max"), np.round(q, 2).tolist()))


def per_class_summary(values: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    return {c: five_numbers(values[labels == i]) for i, c in enumerate(classes)}


def class_images(images: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, H, W, C) float32 mean image and standard-deviation image of each class (0-255);
    a class with no image gets zeros."""
    shape = (n_classes, *images.shape[1:])
    flat = (n_classes, int(np.prod(shape[1:])))  # a class's image as one row
    total, total_sq = np.zeros(flat), np.zeros(flat)
    counts = np.bincount(labels, minlength=n_classes)[:n_classes]
    step = _chunk(images)
    for first in range(0, len(images), step):
        x = np.asarray(images[first: first + step], dtype=np.float64).reshape(-1, total.shape[1])
        # the per-class sums as one matrix product with the chunk's one-hot labels (BLAS; exact:
        # integers below 2^53): CIFAR-10's 45,000 images in 0.35 s against 1.0 s for a masked copy per class
        onehot = np.eye(n_classes)[labels[first: first + step]].T  # (K, chunk)
        total += onehot @ x
        total_sq += onehot @ (x * x)
    total, total_sq = total.reshape(shape), total_sq.reshape(shape)
    n = np.maximum(counts, 1).reshape(-1, *([1] * (len(shape) - 1)))
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean * mean, 0))
    return mean.astype(np.float32), std.astype(np.float32)


def pixel_correlation(images: np.ndarray, seed: int = 0) -> dict:
    """Correlation between pixel intensities (grey) across images, on a grid of at most
    CORR_GRID x CORR_GRID area-averaged cells, from at most CORR_IMAGES images; and its mean
    against the distance between the two pixels (in original pixels)."""
    n, h, w = images.shape[:3]
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, CORR_IMAGES, replace=False)) if n > CORR_IMAGES else np.arange(n)
    stride = max(1, math.ceil(max(h, w) / CORR_GRID))
    gh, gw = h // stride, w // stride
    g = grey(images[pick])[:, : gh * stride, : gw * stride]
    g = g.reshape(len(pick), gh, stride, gw, stride).mean((2, 4)).reshape(len(pick), -1)  # (n, gh*gw)
    g = g - g.mean(0)
    norm = np.sqrt((g * g).sum(0))
    live = norm > 1e-6  # a pixel that never changes (an MNIST corner) has no correlation
    corr = np.full((g.shape[1], g.shape[1]), np.nan, np.float32)
    gl = g[:, live] / norm[live]
    corr[np.ix_(live, live)] = (gl.T @ gl).astype(np.float32)
    yy, xx = np.divmod(np.arange(gh * gw), gw)
    dist = np.hypot(yy[:, None] - yy[None], xx[:, None] - xx[None]) * stride
    bins = np.round(dist).astype(int)
    valid = np.isfinite(corr) & (dist > 0)
    sums = np.bincount(bins[valid], weights=corr[valid].astype(np.float64))
    counts = np.bincount(bins[valid])
    by_distance = [[int(d), round(float(sums[d] / counts[d]), 4)] for d in range(len(counts)) if counts[d]]
    neighbour = by_distance[0][1] if by_distance else None
    return {"matrix": corr, "grid": [gh, gw], "stride": stride, "images_used": int(len(pick)),
            "constant_pixels": int((~live).sum()), "by_distance": by_distance, "neighbour_correlation": neighbour}


def image_sizes(sizes: np.ndarray, image_shape: tuple[int, int, int]) -> dict:
    """Original (height, width) of every image before any resize, and a recommended image_size."""
    sizes = np.asarray(sizes).reshape(-1, 2)
    if len(sizes) == 0:
        return {"uniform": True, "recommended_image_size": int(image_shape[0])}
    h, w = sizes[:, 0].astype(float), sizes[:, 1].astype(float)
    aspect = w / np.maximum(h, 1)
    uniform = bool((sizes == sizes[0]).all())
    shorter = np.minimum(h, w)
    if uniform:
        recommended = int(sizes[0].min())
        why = "every image has the same size: keep it"
    else:
        # the median shorter side, to a multiple of 32, within 32..224 (224: what ImageNet models saw)
        recommended = int(min(224, max(32, 32 * round(float(np.median(shorter)) / 32))))
        why = "the median shorter side, rounded to a multiple of 32 and capped at 224"
    unique = np.unique(sizes, axis=0)
    return {"uniform": uniform, "distinct_sizes": int(len(unique)),
            "height": five_numbers(h), "width": five_numbers(w), "aspect_ratio": five_numbers(aspect),
            "most_common": [int(v) for v in unique[np.argmax(np.unique(sizes, axis=0, return_counts=True)[1])]],
            "recommended_image_size": recommended, "recommendation": why, "stored_as": list(image_shape[:2])}
