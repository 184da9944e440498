"""The predictions record: the one pass of the model over the test set, saved as predictions.npz.

Metrics, t-SNE, centroid distances, error galleries and the report all read this file; none of
them runs the model again. Keys:

    logits            (N, K) float32  test-set logits
    labels            (N,)   int64    true classes
    features          (N, D) float32  penultimate features
    indices           (N,)   int64    positions in the test split (names and images from the dataset)
    train_centroids   (K, D) float32  class means of train-set features (from up to 10,000 images)
    train_counts      (K,)   int64    images behind each centroid
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import load_npz, save_npz

KEYS = ("logits", "labels", "features", "indices", "train_centroids", "train_counts")


def save_record(path: Path, **arrays: np.ndarray) -> None:
    missing = set(KEYS) - set(arrays)
    if missing:
        raise ValueError(f"predictions record lacks {sorted(missing)}")
    save_npz(path, **arrays)


def load_record(path: Path) -> dict[str, np.ndarray]:
    record = load_npz(path, "predictions record")
    missing = set(KEYS) - set(record)
    if missing:
        raise UserError(f"{path}: not a visionlab predictions record (missing {', '.join(sorted(missing))})")
    return record


def class_centroids(features: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, D) mean feature per class and (K,) counts; a class with no image gets NaN."""
    counts = np.bincount(labels, minlength=n_classes)
    one_hot = np.zeros((n_classes, len(labels)), np.float64)  # the sums as one float64 product:
    one_hot[labels, np.arange(len(labels))] = 1  # np.add.at took 24 ms for 10k x 64, 176 ms at 512 (3, 13 here)
    sums = one_hot @ features.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroids = sums / counts[:, None]
    return centroids.astype(np.float32), counts
