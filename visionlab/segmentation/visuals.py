"""Segmentation figures, as functions of a predictions record and its metrics (no model runs here).

    plot_overlays          image | ground truth | prediction for a spread of images, with a legend
    plot_failures          the lowest-IoU images, each with its per-class IoU listed beside it
    plot_iou_bars          per-class IoU bars in the classes' own colours, the mIoU as a line
    plot_confusion_present the row-normalised confusion matrix over the classes that occur
    plot_curves            training loss and validation mIoU per epoch
    plot_cross_dataset     per-class IoU on the training dataset and on another, side by side

Masks are drawn in the class map's colours blended over the image; ignored pixels (255) show
the image darkened. Matplotlib ``Figure`` objects (no pyplot state), PNG files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..evaluation.plots import mathsafe, short
from .classes import IGNORE, ClassMap

ALPHA = 0.6  # weight of the class colour over the image
IGNORE_COLOR = (40, 40, 40)


def colorize(image: np.ndarray, mask: np.ndarray, class_map: ClassMap) -> np.ndarray:
    """(H, W, 3) uint8 image and (H, W) train ids -> (H, W, 3) uint8 overlay."""
    colors = class_map.palette()[mask].astype(np.float32)  # (H, W, 3)
    blend = (1 - ALPHA) * image.astype(np.float32) + ALPHA * colors
    blend[mask == IGNORE] = 0.35 * image[mask == IGNORE] + 0.65 * np.array(IGNORE_COLOR)
    return np.clip(blend, 0, 255).astype(np.uint8)


def _legend(fig: Figure, class_map: ClassMap, ids: np.ndarray, ignore: bool) -> None:
    handles = [Patch(facecolor=np.array(class_map.colors[k]) / 255, edgecolor="black", linewidth=0.5,
                     label=short(class_map.names[k], 20)) for k in ids]
    if ignore:
        handles.append(Patch(facecolor=np.array(IGNORE_COLOR) / 255, edgecolor="black", linewidth=0.5, label="ignore"))
    fig.legend(handles=handles, loc="lower center", ncols=min(len(handles), 7), fontsize=8, frameon=False)


def _shown(masks: np.ndarray, preds: np.ndarray, k: int) -> tuple[np.ndarray, bool]:
    """Class ids that occur in the shown masks or predictions, and whether any pixel is ignored."""
    values = np.union1d(np.unique(masks), np.unique(preds))
    return values[values < k], bool((masks == IGNORE).any())


def _panel(ax, picture: np.ndarray, title: str) -> None:
    ax.imshow(picture, interpolation="nearest")
    ax.set_title(mathsafe(title), fontsize=9)
    ax.set_axis_off()


def plot_overlays(images, masks, preds, class_map: ClassMap, path: Path, title: str, n: int = 4) -> Path | None:
    """n images spread evenly over the split: the image, its ground truth, the prediction."""
    if len(images) == 0:
        return None
    pick = np.unique(np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int))
    h, w = images.shape[1:3]
    fig = Figure(figsize=(3 * 3.2, len(pick) * 3.2 * h / w + 1.4))
    axes = fig.subplots(len(pick), 3, squeeze=False)
    for row, i in zip(axes, pick):
        _panel(row[0], images[i], f"image #{i}")
        _panel(row[1], colorize(images[i], masks[i], class_map), "ground truth")
        _panel(row[2], colorize(images[i], preds[i], class_map), "prediction")
    fig.suptitle(mathsafe(title), fontsize=11)
    _legend(fig, class_map, *_shown(masks[pick], preds[pick], class_map.n_classes))
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.5 / fig.get_figheight(), bottom=0.75 / fig.get_figheight(),
                        wspace=0.03, hspace=0.2)
    fig.savefig(path, dpi=100)
    return path


def plot_failures(images, masks, preds, per_class: np.ndarray, per_image: np.ndarray, class_map: ClassMap,
                  path: Path, title: str, n: int = 4, names: list[str] | None = None) -> Path | None:
    """The n images of lowest mean IoU: image (its file name when ``names`` are given), truth,
    prediction, and that image's per-class IoU."""
    order = np.argsort(np.nan_to_num(per_image, nan=np.inf))[: min(n, len(images))]
    if len(order) == 0:
        return None
    h, w = images.shape[1:3]
    fig = Figure(figsize=(3 * 3.2 + 2.6, len(order) * 3.2 * h / w + 1.4))
    axes = fig.subplots(len(order), 4, squeeze=False, gridspec_kw={"width_ratios": [1, 1, 1, 0.8]})
    for row, i in zip(axes, order):
        label = Path(names[i]).stem.removesuffix("_leftImg8bit") if names else f"image #{i}"  # _panel: mathsafe
        label = label if len(label) <= 30 else label[:29] + "…"
        _panel(row[0], images[i], f"{label}: mIoU {per_image[i]:.3f}")
        _panel(row[1], colorize(images[i], masks[i], class_map), "ground truth")
        _panel(row[2], colorize(images[i], preds[i], class_map), "prediction")
        ious = [(v, class_map.names[k]) for k, v in enumerate(per_class[i]) if np.isfinite(v)]
        lines = [f"{short(name, 16):<16} {v:5.2f}" for v, name in sorted(ious)[:10]]
        row[3].text(0.0, 1.0, "IoU per class\n" + "\n".join(lines), va="top", ha="left", family="monospace",
                    fontsize=8, transform=row[3].transAxes)
        row[3].set_axis_off()
    fig.suptitle(mathsafe(title), fontsize=11)
    _legend(fig, class_map, *_shown(masks[order], preds[order], class_map.n_classes))
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.5 / fig.get_figheight(), bottom=0.75 / fig.get_figheight(),
                        wspace=0.05, hspace=0.2)
    fig.savefig(path, dpi=100)
    return path


def plot_iou_bars(per_class_iou: dict, class_map: ClassMap, path: Path, title: str) -> Path:
    """One bar per class in its colour; classes absent from truth and prediction say so."""
    names = list(class_map.names)
    values = [per_class_iou.get(n) for n in names]
    k = len(names)
    fig = Figure(figsize=(6.4, 1.0 + 0.3 * k), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(k)
    ax.barh(y, [v or 0 for v in values], color=[np.array(c) / 255 for c in class_map.colors], edgecolor="black",
            linewidth=0.5)
    for i, v in enumerate(values):
        ax.text((v or 0) + 0.01, i, "absent" if v is None else f"{v:.3f}", va="center", fontsize=8,
                color="#777" if v is None else "black")
    present = [v for v in values if v is not None]
    if present:
        ax.axvline(float(np.mean(present)), color="black", linestyle="--", linewidth=1)
        ax.text(float(np.mean(present)), -0.7, f"mIoU {np.mean(present):.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_yticks(y, [short(n, 22) for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("IoU")
    ax.set_title(mathsafe(title), fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.savefig(path, dpi=100)
    return path


def plot_confusion_present(cm: np.ndarray, names: list[str], path: Path, title: str) -> Path | None:
    """Row-normalised confusion (recall on the diagonal) over the classes true or predicted somewhere.

    Not evaluation.plots.plot_confusion: its counts panel prints every cell's count, which for
    pixels (millions) is unreadable; a share per true class is what a pixel matrix can show."""
    cm = np.asarray(cm)
    keep = np.flatnonzero(cm.sum(0) + cm.sum(1))
    if len(keep) == 0:
        return None
    sub = cm[np.ix_(keep, keep)]
    norm = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1)
    k = len(keep)
    size = min(3 + 0.42 * k, 14)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    labels = [short(names[i], 16) for i in keep]
    ax.set_xticks(np.arange(k), labels, rotation=90, fontsize=8)
    ax.set_yticks(np.arange(k), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if norm[i, j] >= 0.005:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(mathsafe(f"{title}: pixel confusion (row-normalised)"), fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=100)
    return path


def plot_curves(history: list[dict], path: Path, title: str) -> Path:
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    left.set_xlabel("epoch")
    left.set_ylabel("cross-entropy per pixel")
    right.plot(epochs, [h["val_miou"] for h in history], marker="o", label="val mIoU")
    right.plot(epochs, [h["val_pixel_accuracy"] for h in history], marker="s", label="val pixel accuracy")
    right.set_xlabel("epoch")
    right.set_ylim(0, 1)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(mathsafe(title), fontsize=10)
    fig.savefig(path, dpi=100)
    return path


def plot_cross_dataset(cross: dict, class_map: ClassMap, path: Path) -> Path:
    """Per-class IoU on the training data's val split and on the target, as paired bars (classes
    absent from both are left out)."""
    rows = [r for r in cross["rows"] if r["source_iou"] is not None or r["target_iou"] is not None]
    k = len(rows)
    fig = Figure(figsize=(7, 1.2 + 0.34 * k), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(k)
    source = [r["source_iou"] for r in rows]
    target = [r["target_iou"] for r in rows]
    name = lambda where: short(Path(str(where)).name, 30)  # noqa: E731
    ax.barh(y - 0.2, [v or 0 for v in source], height=0.38, color="#3b6fb6",
            label=f"trained on: {name(cross['source'])}")
    ax.barh(y + 0.2, [v or 0 for v in target], height=0.38, color="#f0a04b",
            label=f"evaluated on: {name(cross['target'])}")
    for i, (s, t) in enumerate(zip(source, target)):
        for v, dy in ((s, -0.2), (t, 0.2)):
            ax.text((v or 0) + 0.01, i + dy, "-" if v is None else f"{v:.2f}", va="center", fontsize=7)
    ax.set_yticks(y, [short(r["class"], 22) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("IoU ('-': class absent there)")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    ax.set_title(mathsafe(f"cross-dataset per-class IoU (mapping: {cross['mapping']})"), fontsize=10)
    fig.savefig(path, dpi=100)
    return path
