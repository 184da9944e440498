"""Where the mistakes sit in feature space, from the predictions record alone.

For each misclassified test image: the Euclidean distance of its penultimate features to the
train-set centroid of its true class and to that of the class it was predicted as. A mistake
closer to the predicted centroid (dist_true / dist_pred > 1) is one the features themselves
confuse: to the network the image looks like the other class. One closer to its own centroid is
a near miss at the decision boundary. A class without train images has a NaN centroid: its
mistakes get no distances and are left out of the fraction and the ratios.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from ..evaluation import top_confusions  # noqa: E402
from ..evaluation.metrics import softmax  # noqa: E402
from ..evaluation.plots import ERROR, mathsafe, short  # noqa: E402


@dataclass
class Mistakes:
    """The misclassified rows of a record, most confident first."""

    rows: np.ndarray  # (E,) rows of the record
    true: np.ndarray  # (E,) true class
    pred: np.ndarray  # (E,) predicted class
    confidence: np.ndarray  # (E,) softmax probability of the predicted class
    dist_true: np.ndarray  # (E,) distance to the true class's train centroid; NaN: no centroid
    dist_pred: np.ndarray  # (E,) distance to the predicted class's train centroid

    @property
    def ratio(self) -> np.ndarray:  # (E,) dist_true / dist_pred; NaN where a centroid is missing
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.dist_true / np.maximum(self.dist_pred, 1e-12)

    @property
    def measured(self) -> np.ndarray:  # (E,) bool: both distances defined
        return np.isfinite(self.dist_true) & np.isfinite(self.dist_pred)


def find_mistakes(record: dict[str, np.ndarray]) -> Mistakes:
    """Distances of every misclassified test feature vector to the two train centroids."""
    probs = softmax(record["logits"].astype(np.float64))  # (N, K)
    preds, labels = probs.argmax(axis=1), record["labels"]
    rows = np.flatnonzero(preds != labels)
    confidence = probs[rows, preds[rows]]
    order = np.argsort(-confidence, kind="stable")
    rows, confidence = rows[order], confidence[order]
    features = record["features"][rows].astype(np.float64)  # (E, D)
    centroids = record["train_centroids"].astype(np.float64)  # (K, D)
    true, pred = labels[rows], preds[rows]
    return Mistakes(rows, true, pred, confidence,
                    np.linalg.norm(features - centroids[true], axis=1),
                    np.linalg.norm(features - centroids[pred], axis=1))


def _number(x: float) -> float | None:
    return round(float(x), 4) if np.isfinite(x) else None


def summarize(mistakes: Mistakes, record: dict[str, np.ndarray], classes: list[str], names: list[str] | None = None,
              n_confident: int = 16, n_confusions: int = 10) -> dict:
    """The JSON summary: counts, fraction closer to the predicted centroid, ratio statistics,
    the most frequent confusions and the most confident mistakes."""
    ids = list(range(len(classes)))
    cm = confusion_matrix(record["labels"], record["logits"].argmax(axis=1), labels=ids)
    ok = mistakes.measured
    ratio = mistakes.ratio[ok]
    closer = (mistakes.dist_pred[ok] < mistakes.dist_true[ok])
    indices = record["indices"]
    confident = []
    for j in range(min(n_confident, len(mistakes.rows))):
        index = int(indices[mistakes.rows[j]])
        confident.append({
            "index": index, "true": classes[mistakes.true[j]], "predicted": classes[mistakes.pred[j]],
            "confidence": round(float(mistakes.confidence[j]), 4), "dist_true": _number(mistakes.dist_true[j]),
            "dist_pred": _number(mistakes.dist_pred[j]), "name": str(names[index]) if names is not None else None})
    return {
        "n_errors": int(len(mistakes.rows)),
        "n_without_centroid": int((~ok).sum()),  # errors left out: a class with no train images
        "closer_to_predicted_fraction": round(float(closer.mean()), 4) if len(ratio) else 0.0,
        "mean_distance_ratio": round(float(ratio.mean()), 4) if len(ratio) else 0.0,
        "median_distance_ratio": round(float(np.median(ratio)), 4) if len(ratio) else 0.0,
        "top_confusions": top_confusions(cm, classes, n_confusions),
        "most_confident": confident,
    }


def plot_distance_ratio(mistakes: Mistakes, path: Path, title: str = "") -> Path:
    """Histogram of dist_true / dist_pred over the mistakes, a line at 1, the fraction above it."""
    ratio = mistakes.ratio[mistakes.measured]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if len(ratio):
        top = max(2.0, float(np.quantile(ratio, 0.99)) * 1.05)
        shown = np.clip(ratio, 0, top)  # the last bin also holds the rare far outliers
        ax.hist(shown, bins=int(np.clip(np.sqrt(len(ratio)) * 2, 10, 60)), range=(0, top), color="#4c72b0",
                edgecolor="white", linewidth=0.5)
        ax.axvline(1.0, color=ERROR, linewidth=1.5, linestyle="--")
        fraction = float((ratio > 1).mean())
        ax.text(0.98, 0.95, f"{fraction:.0%} of {len(ratio):,} errors lie closer to\nthe predicted class's centroid "
                            f"(ratio > 1)\nmedian ratio {np.median(ratio):.2f}",
                transform=ax.transAxes, ha="right", va="top", fontsize=9,
                bbox={"facecolor": "white", "edgecolor": "#cccccc", "boxstyle": "round"})
    else:
        ax.text(0.5, 0.5, "no misclassified test images with both centroids", transform=ax.transAxes,
                ha="center", va="center")
    ax.set_xlabel("distance to true-class centroid / distance to predicted-class centroid")
    ax.set_ylabel("misclassified test images")
    ax.set_title(mathsafe(title) if title else "Misclassified images: feature-space distance ratio", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confident_mistakes(images: np.ndarray, mistakes: Mistakes, classes: list[str], path: Path,
                            title: str = "", cols: int = 8) -> Path:
    """The most confident mistakes: image, true and predicted class, confidence, both distances.

    images: (E', H, W, C) uint8 of the first E' mistakes (most confident first), chosen by the caller.
    """
    n, h, w, c = images.shape
    cols = min(cols, n)
    rows = int(np.ceil(n / cols))
    cell_w, img_h, text_h = 1.55, 1.55 * h / w, 0.58  # inches
    fig = plt.figure(figsize=(cols * cell_w, rows * (img_h + text_h) + 0.45))
    fig_w, fig_h = fig.get_size_inches()
    for i in range(n):
        r, k = divmod(i, cols)
        top = fig_h - 0.45 - r * (img_h + text_h)  # inches from the bottom
        ax = fig.add_axes(((k * cell_w + 0.06) / fig_w, (top - text_h - img_h) / fig_h,
                           (cell_w - 0.12) / fig_w, (img_h - 0.06) / fig_h))
        ax.imshow(images[i].squeeze(-1) if c == 1 else images[i], cmap="gray" if c == 1 else None,
                  vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set(edgecolor=ERROR, linewidth=1.5)
        dt, dp = (f"{d:.2f}" if np.isfinite(d) else "n/a" for d in (mistakes.dist_true[i], mistakes.dist_pred[i]))
        fig.text((k + 0.5) * cell_w / fig_w, (top - text_h + 0.02) / fig_h,  # just above the image
                 f"true {short(classes[mistakes.true[i]], 12)}\npred {short(classes[mistakes.pred[i]], 12)} "
                 f"{mistakes.confidence[i]:.0%}\ndist true {dt}\ndist pred {dp}",
                 ha="center", va="bottom", fontsize=7.5, linespacing=1.15)
    fig.suptitle(mathsafe(title) if title else "Most confident mistakes", fontsize=11, y=1 - 0.12 / fig_h, va="top")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

