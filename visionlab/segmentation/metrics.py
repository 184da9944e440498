"""Segmentation metrics as pure functions of confusion matrices.

Every number comes from one (K, K) confusion matrix summed over all pixels of the whole split
(row = true class, column = predicted class; pixels whose truth is 255 are left out), never
from per-image scores averaged: a small image with one misread pole would otherwise weigh as
much as a whole street. For class k, with TP = cm[k, k], FP = column sum - TP, FN = row sum - TP:

    IoU_k = TP / (TP + FP + FN)     NaN when the class is neither true nor predicted anywhere
    precision_k = TP / (TP + FP)    NaN when the class is never predicted
    recall_k = TP / (TP + FN)       NaN when the class is never true
    mIoU = mean of IoU_k over the classes where it is defined (cityscapesScripts' rule: a class
           absent from the ground truth but predicted somewhere counts, with IoU 0)
    pixel accuracy = trace / total

JSON has no NaN: ``segmentation_metrics`` writes None for an undefined value.
"""
from __future__ import annotations

import numpy as np
import torch

from .classes import IGNORE


def confusion_matrix(target: torch.Tensor, pred: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(K, K) int64 counts from masks of any equal shape (train ids; target 255 ignored)."""
    target, pred = torch.as_tensor(target).reshape(-1).long(), torch.as_tensor(pred).reshape(-1).long()
    keep = target != IGNORE
    flat = target[keep] * n_classes + pred[keep]
    return torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_image_confusion(target: torch.Tensor, pred: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(N, K, K) int64: one confusion matrix per image of (N, H, W) masks (their sum is the split's)."""
    target, pred = torch.as_tensor(target).long(), torch.as_tensor(pred).long()
    n = target.shape[0]
    image = torch.arange(n, device=target.device).view(n, *([1] * (target.ndim - 1))).expand_as(target)
    keep = target != IGNORE
    flat = (image[keep] * n_classes + target[keep]) * n_classes + pred[keep]
    return torch.bincount(flat, minlength=n * n_classes * n_classes).reshape(n, n_classes, n_classes)


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.full(np.shape(a), np.nan)
    np.divide(a, b, out=out, where=b > 0)
    return out


def class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class iou, precision, recall (NaN where undefined) and true/predicted pixel counts."""
    cm = np.asarray(cm, dtype=np.float64)
    tp, true, predicted = np.diagonal(cm, axis1=-2, axis2=-1), cm.sum(axis=-1), cm.sum(axis=-2)
    return {"iou": _divide(tp, true + predicted - tp), "precision": _divide(tp, predicted),
            "recall": _divide(tp, true), "true_pixels": true, "predicted_pixels": predicted}


def mean_iou(cm: np.ndarray) -> float:
    """Mean IoU over the classes present (true or predicted); NaN for an empty matrix."""
    iou = class_scores(cm)["iou"]
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(cm: np.ndarray) -> float:
    cm = np.asarray(cm)
    return float(np.trace(cm) / cm.sum()) if cm.sum() else float("nan")


def image_ious(per_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) per-class IoU of each image (NaN: class absent there) and (N,) each image's mean IoU."""
    iou = class_scores(per_image)["iou"]
    mean = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in iou])
    return iou, mean


def _json(x: np.ndarray) -> list:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in x]


def segmentation_metrics(cm: np.ndarray, names: list[str]) -> dict:
    """The metrics.json block: miou, pixel_accuracy, per-class dicts by name, the matrix itself."""
    cm = np.asarray(cm, dtype=np.int64)
    scores = class_scores(cm)
    miou, accuracy = mean_iou(cm), pixel_accuracy(cm)
    return {
        "miou": None if np.isnan(miou) else round(miou, 6),
        "pixel_accuracy": None if np.isnan(accuracy) else round(accuracy, 6),
        "per_class_iou": dict(zip(names, _json(scores["iou"]))),
        "per_class_precision": dict(zip(names, _json(scores["precision"]))),
        "per_class_recall": dict(zip(names, _json(scores["recall"]))),
        "classes_present": [n for n, v in zip(names, scores["iou"]) if np.isfinite(v)],
        "n_pixels": int(cm.sum()),
        "confusion_matrix": cm.tolist(),
    }
