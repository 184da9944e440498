"""Hand-crafted features: Sobel and Canny edges, local binary patterns and HOG (scikit-image),
and a HOG + linear SVM baseline (scikit-learn) that says how separable the classes are before
any deep model.

The SVM is scikit-learn's SGDClassifier with the hinge loss and averaged weights (a linear SVM
fitted by SGD): on 10,000 MNIST images with 1,296 HOG features it fits in 2.4 s to 96.9%,
where LinearSVC's exact solver took 70 s for 97.5%.
"""
from __future__ import annotations

import time

import numpy as np

from .stats import grey

HOG_SIDE = 64  # images larger than this are area-resized to it for HOG (cost grows with pixels)
BASELINE_TRAIN = 10_000  # training images for the baseline (stratified subsample)
BASELINE_TEST = 5_000  # test images it is scored on


def _unit(image: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8 -> (H', W') grey float in [0, 1], at most HOG_SIDE per side."""
    g = grey(image[None])[0] / 255.0
    h, w = g.shape
    step = int(np.ceil(max(h, w) / HOG_SIDE))
    if step > 1:
        g = g[: h // step * step, : w // step * step].reshape(h // step, step, w // step, step).mean((1, 3))
    return g


def hog_params(side: int) -> dict:
    """About 7 cells per side, 2x2-cell blocks, 9 orientations (Dalal and Triggs' choice)."""
    cell = max(2, side // 7)
    return {"orientations": 9, "pixels_per_cell": (cell, cell), "cells_per_block": (2, 2), "block_norm": "L2-Hys"}


def feature_panels(image: np.ndarray) -> dict[str, np.ndarray]:
    """One image's hand-crafted views, each (H', W') float for display."""
    from skimage.feature import canny, hog, local_binary_pattern
    from skimage.filters import sobel

    g = _unit(image)
    sigma = 1.0 if min(g.shape) < 48 else 2.0
    _, hog_image = hog(g, visualize=True, **hog_params(min(g.shape)))
    lbp = local_binary_pattern((g * 255).astype(np.uint8), P=8, R=1, method="uniform")
    return {"image": g, "sobel": sobel(g), "canny": canny(g, sigma=sigma).astype(np.float32), "lbp": lbp,
            "hog": hog_image}


def hog_features(images: np.ndarray) -> np.ndarray:
    from skimage.feature import hog

    first = _unit(images[0])
    params = hog_params(min(first.shape))
    return np.stack([hog(_unit(im), **params) for im in images]).astype(np.float32)


def _stratified(labels: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    if len(labels) <= cap:
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    take, _ = train_test_split(np.arange(len(labels)), train_size=cap, stratify=labels, random_state=rng.integers(1 << 31))
    return np.sort(take)


def hog_baseline(train_images, train_labels, test_images, test_labels, seed: int = 0) -> dict:
    """HOG features + a linear SVM: test accuracy on a stratified subsample of each split."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    if len(np.unique(train_labels)) < 2 or len(test_labels) == 0:
        return {"accuracy": None, "note": "needs two classes in train and a non-empty test split"}
    rng = np.random.default_rng(seed)
    tr = _stratified(train_labels, BASELINE_TRAIN, rng)
    te = _stratified(test_labels, BASELINE_TEST, rng) if len(np.unique(test_labels)) > 1 else \
        np.arange(min(len(test_labels), BASELINE_TEST))
    start = time.perf_counter()
    x_train, x_test = hog_features(np.asarray(train_images[tr])), hog_features(np.asarray(test_images[te]))
    features_s = time.perf_counter() - start
    svm = SGDClassifier(loss="hinge", alpha=1e-4, max_iter=10, tol=None, average=True, random_state=seed)
    model = make_pipeline(StandardScaler(), svm)
    model.fit(x_train, train_labels[tr])
    accuracy = float((model.predict(x_test) == test_labels[te]).mean())
    return {"accuracy": round(accuracy, 4), "classifier": "HOG + StandardScaler + linear SVM (SGDClassifier, hinge loss, averaged, 10 epochs)",
            "features": int(x_train.shape[1]), "hog": {k: list(v) if isinstance(v, tuple) else v
                                                       for k, v in hog_params(min(_unit(train_images[0]).shape)).items()},
            "train_images": int(len(tr)), "test_images": int(len(te)),
            "subsampled": bool(len(tr) < len(train_labels) or len(te) < len(test_labels)),
            "seconds": round(time.perf_counter() - start, 2), "feature_seconds": round(features_s, 2)}
