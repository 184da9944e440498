"""Evaluation figures, as functions of metrics and records: confusion matrices, training curves,
a grid of test predictions. Matplotlib's Agg backend: no display needed.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ERROR = "#d62728"
RIGHT = "#2ca02c"


def mathsafe(text) -> str:
    """User text (class, run, dataset names) for a matplotlib label: '$' escaped, so 'US$' or
    '$x^$' is drawn as written, never parsed as mathtext (which can fail to render)."""
    return str(text).replace("$", r"\$")


def short(name, n: int = 14) -> str:
    """A class or run name as a matplotlib label: at most n characters, mathtext-safe."""
    name = str(name)
    return mathsafe(name if len(name) <= n else name[: n - 1] + "…")


def plot_confusion(cm, classes: list[str], path: Path, title: str = "") -> Path:
    """Counts and row-normalised confusion matrices side by side. Cells without images are left
    blank, so the confusions stand out (and the zeros, most of the cells, are not drawn: about
    0.25 ms of matplotlib each)."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    size = min(4 + 0.45 * k, 16)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size - 0.5, size))
    fig.subplots_adjust(left=0.09, right=0.97, bottom=0.14, top=0.93, wspace=0.3)  # fixed: layout engines cost seconds
    for ax, data, label, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalised (recall)", ".2f")):
        im = ax.imshow(data, cmap="Blues", vmin=0, vmax=data.max() or 1)
        ax.set_title(mathsafe(f"{title} {label}".strip()))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ticks = np.arange(k)
        ax.set_xticks(ticks, [short(c) for c in classes], rotation=90 if k > 6 else 0)
        ax.set_yticks(ticks, [short(c) for c in classes])
        if k <= 20:  # numbers in the cells that have any images; a blank cell is a confusion that never happened
            threshold = data.max() / 2 if data.max() else 1
            for i, j in zip(*np.nonzero(cm)):
                ax.text(j, i, format(data[i, j], fmt), ha="center", va="center", fontsize=8 if k > 10 else 10,
                        color="white" if data[i, j] > threshold else "black")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(history: list[dict], path: Path, title: str = "") -> Path:
    """Loss and accuracy per epoch, train vs validation."""
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.13, top=0.92, wspace=0.18)  # fixed: no layout engine
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax1.set_title(mathsafe(f"{title} loss".strip()))
    ax2.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    ax2.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="validation")
    ax2.set_title(mathsafe(f"{title} accuracy".strip()))
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        if len(epochs) < 15:
            ax.set_xticks(epochs)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_prediction_grid(images: np.ndarray, labels, preds, confidence, classes: list[str], path: Path,
                         title: str = "", cols: int = 8) -> Path:
    """Sample test images with true label, prediction and confidence; errors framed in red.

    images: (N, H, W, C) uint8, already chosen by the caller. Drawn as one mosaic in one axes:
    32 separate axes cost matplotlib seconds of tick and layout work for nothing.
    """
    n, h, w, c = images.shape
    rows = max(1, int(np.ceil(n / cols)))
    pad, band = max(2, w // 10), max(8, int(h * 0.6))  # gaps, and a white band for two lines of text
    pitch_y, pitch_x = band + h + pad, w + pad
    mosaic = np.full((rows * pitch_y, cols * pitch_x + pad, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        y, x = r * pitch_y + band, pad + k * pitch_x
        mosaic[y: y + h, x: x + w] = img
    scale = 1.6 / pitch_x  # inches per mosaic pixel
    fig = plt.figure(figsize=(mosaic.shape[1] * scale, mosaic.shape[0] * scale + 0.4))
    ax = fig.add_axes((0, 0, 1, mosaic.shape[0] * scale / (mosaic.shape[0] * scale + 0.4)))
    ax.imshow(mosaic.squeeze(-1) if c == 1 else mosaic, cmap="gray" if c == 1 else None, vmin=0, vmax=255,
              interpolation="nearest")
    ax.axis("off")
    for i, (t, p, conf) in enumerate(zip(labels, preds, confidence)):
        r, k = divmod(i, cols)
        y, x = r * pitch_y + band, pad + k * pitch_x
        wrong = t != p
        ax.text(x + w / 2, y - 1, f"true {short(classes[t], 10)}\npred {short(classes[p], 10)} {conf:.0%}",
                ha="center", va="bottom", fontsize=7.5, color=ERROR if wrong else RIGHT)
        if wrong:
            ax.add_patch(plt.Rectangle((x - 1, y - 1), w + 1, h + 1, fill=False, edgecolor=ERROR, linewidth=2.5))
    if title:
        fig.suptitle(mathsafe(title), fontsize=11)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
