"""Metrics as pure functions of a predictions record (no model, no data loading).

scikit-learn computes every number; ``labels=range(n_classes)`` keeps a class that the test set
lacks in every table (with zero support) instead of shifting the others.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, top_k_accuracy_score


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classes: list[str], top_k: int = 5) -> dict:
    """Accuracy, F1 (macro, weighted), per-class report, top-k accuracy, confusion matrices."""
    n_classes = len(classes)
    ids = list(range(n_classes))
    preds = logits.argmax(axis=1)
    cm = confusion_matrix(labels, preds, labels=ids)
    row = cm.sum(axis=1, keepdims=True)
    report = classification_report(labels, preds, labels=ids, target_names=[str(c) for c in classes],
                                   output_dict=True, zero_division=0)
    k = min(top_k, n_classes - 1) if n_classes > 2 else 1
    top = top_k_accuracy_score(labels, logits, k=k, labels=ids) if n_classes > 2 and len(labels) else None
    return {
        "test_accuracy": float(accuracy_score(labels, preds)) if len(labels) else float("nan"),
        "test_macro_f1": float(f1_score(labels, preds, labels=ids, average="macro", zero_division=0)),
        "test_weighted_f1": float(f1_score(labels, preds, labels=ids, average="weighted", zero_division=0)),
        "top_k": k,
        "test_top_k_accuracy": float(top) if top is not None else None,
        "per_class": {str(c): {m: float(report[str(c)][m]) for m in ("precision", "recall", "f1-score", "support")}
                      for c in classes},
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
