"""Metrics as pure functions of a predictions record (no model, no data loading).

Written with NumPy from the confusion matrix rather than called from scikit-learn: importing
``sklearn.metrics`` costs about 1.5 s here, a sixth of a whole two-epoch MNIST run, and every
number below is a ratio of confusion-matrix sums. tests/test_evaluation.py checks each against
scikit-learn's accuracy_score, f1_score, classification_report and top_k_accuracy_score.
A class the test set lacks keeps its row (zero support) instead of shifting the others;
0/0 is 0, as with scikit-learn's ``zero_division=0``.
"""
from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) int64 counts: row = true class, column = predicted class."""
    flat = np.asarray(labels, dtype=np.int64) * n_classes + np.asarray(preds, dtype=np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(np.shape(a), dtype=np.float64), where=b > 0)


def per_class_scores(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """precision, recall, F1 and support per class from a confusion matrix."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    precision, recall = _ratio(tp, cm.sum(axis=0)), _ratio(tp, support)
    return precision, recall, _ratio(2 * precision * recall, precision + recall), support


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of samples whose true class is among the k highest scores."""
    true = logits[np.arange(len(labels)), labels][:, None]
    return float(((logits > true).sum(axis=1) < k).mean())


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classes: list[str], top_k: int = 5) -> dict:
    """Accuracy, F1 (macro, weighted), per-class report, top-k accuracy, confusion matrices."""
    n_classes = len(classes)
    labels = np.asarray(labels, dtype=np.int64)
    preds = logits.argmax(axis=1)
    cm = confusion_matrix(labels, preds, n_classes)
    precision, recall, f1, support = per_class_scores(cm)
    row = cm.sum(axis=1, keepdims=True)
    k = min(top_k, n_classes - 1) if n_classes > 2 else 1
    top = top_k_accuracy(logits, labels, k) if n_classes > 2 and len(labels) else None
    return {
        "test_accuracy": float(np.trace(cm) / len(labels)) if len(labels) else float("nan"),
        "test_macro_f1": float(f1.mean()),
        "test_weighted_f1": float((f1 * support).sum() / support.sum()) if support.sum() else 0.0,
        "top_k": k,
        "test_top_k_accuracy": top,
        "per_class": {str(c): {"precision": float(precision[i]), "recall": float(recall[i]), "f1-score": float(f1[i]),
                               "support": float(support[i])} for i, c in enumerate(classes)},
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": np.divide(cm, np.maximum(row, 1)).round(4).tolist(),
        "n_test": int(len(labels)),
    }


def top_confusions(cm: np.ndarray, classes: list[str], n: int = 5) -> list[dict]:
    """The most frequent (true, predicted) off-diagonal pairs."""
    cm = np.asarray(cm).copy()
    np.fill_diagonal(cm, 0)
    order = np.argsort(cm, axis=None)[::-1][:n]
    pairs = [np.unravel_index(i, cm.shape) for i in order]
    return [{"true": classes[t], "predicted": classes[p], "count": int(cm[t, p])} for t, p in pairs if cm[t, p] > 0]
