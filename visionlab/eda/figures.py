"""EDA figures (matplotlib, Agg): one function per figure, each writes a PNG and returns its path."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..evaluation.plots import mathsafe, short  # noqa: E402

SPLIT_COLORS = {"train": "#3b6fb6", "val": "#8fb8e8", "test": "#f0a04b"}
MAX_CLASSES_SHOWN = 20  # image grids and per-class panels show at most this many classes


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _show(ax, image: np.ndarray, **kw) -> None:
    """(H, W, C) or (H, W) in 0-255 or [0, 1]."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        ax.imshow(img, cmap=kw.pop("cmap", "gray"), **kw)
    else:
        ax.imshow(np.clip(img, 0, 255).astype(np.uint8) if img.max() > 1.0 else img, **kw)
    ax.set_xticks([])
    ax.set_yticks([])


def class_distribution(dist: dict, classes: list[str], path: Path) -> Path:
    k = len(classes)
    fig, ax = plt.subplots(figsize=(min(2 + 0.45 * k, 18), 3.8))
    bottom = np.zeros(k)
    for split, counts in dist["counts"].items():
        ax.bar(np.arange(k), counts, bottom=bottom, color=SPLIT_COLORS.get(split), label=split)
        bottom += np.asarray(counts)
    ax.set_xticks(np.arange(k), [short(c, 12) for c in classes] if k <= 40 else [],
                  rotation=90 if k > 10 else 0)
    ratio = dist["imbalance_ratio"]
    ax.set_title(f"images per class and split (imbalance ratio {ratio:.2f})" if ratio else "images per class")
    ax.set_ylabel("images")
    ax.set_ylim(0, max(bottom.max(), 1) * 1.18)  # headroom: balanced classes leave no empty corner for the legend
    ax.legend(frameon=False, loc="upper center", ncol=len(dist["counts"]))
    return _save(fig, path)


def class_images(mean: np.ndarray, std: np.ndarray, classes: list[str], path: Path) -> Path:
    k = min(len(classes), MAX_CLASSES_SHOWN)
    fig, axes = plt.subplots(2, k, figsize=(1.2 * k + 0.8, 3.0), squeeze=False)
    for i in range(k):
        _show(axes[0, i], mean[i])
        _show(axes[1, i], std[i].mean(-1) if std[i].ndim == 3 else std[i], cmap="magma")
        axes[0, i].set_title(short(classes[i], 10), fontsize=8)
    axes[0, 0].set_ylabel("mean", fontsize=9)
    axes[1, 0].set_ylabel("std", fontsize=9)
    fig.suptitle("per-class mean image and standard-deviation image" +
                 (f" (first {k} classes)" if k < len(classes) else ""), fontsize=10)
    return _save(fig, path)


def intensity(brightness: np.ndarray, contrast: np.ndarray, labels: np.ndarray, classes: list[str],
              path: Path) -> Path:
    k = min(len(classes), MAX_CLASSES_SHOWN)
    fig, axes = plt.subplots(1, 2, figsize=(min(3 + 0.6 * k, 18), 3.6))
    for ax, values, name in ((axes[0], brightness, "brightness (mean grey level)"),
                             (axes[1], contrast, "contrast (grey-level std)")):
        data = [values[labels == i] for i in range(k)]
        ax.boxplot([d if len(d) else [np.nan] for d in data], showfliers=False)
        ax.set_xticks(np.arange(1, k + 1), [short(c, 8) for c in classes[:k]], rotation=90 if k > 10 else 0,
                      fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_ylim(0, 255 if "brightness" in name else max(1.0, float(np.nanmax(values)) * 1.05))
    return _save(fig, path)


def samples(images: np.ndarray, labels: np.ndarray, classes: list[str], per_class: int, path: Path,
            seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    k = min(len(classes), MAX_CLASSES_SHOWN)
    fig, axes = plt.subplots(k, per_class, figsize=(per_class * 0.9 + 1.2, k * 0.9 + 0.4), squeeze=False)
    for i in range(k):
        idx = np.flatnonzero(labels == i)
        pick = rng.choice(idx, min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[i, j]
            if j < len(pick):
                _show(ax, images[pick[j]])
            else:
                ax.axis("off")
        axes[i, 0].set_ylabel(short(classes[i], 12), fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(f"{per_class} random training images per class", fontsize=10)
    return _save(fig, path)


def correlation(corr: dict, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    im = axes[0].imshow(corr["matrix"], cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    g = corr["grid"]
    axes[0].set_title(f"pixel-pixel correlation ({g[0]}x{g[1]} grid, {corr['images_used']:,} images)", fontsize=9)
    axes[0].set_xlabel("pixel (row-major)")
    d = np.asarray(corr["by_distance"], float).reshape(-1, 2)
    axes[1].plot(d[:, 0], d[:, 1], marker=".")
    axes[1].axhline(0, color="#999", lw=0.8)
    axes[1].set_xlabel("distance between pixels (pixels)")
    axes[1].set_ylabel("mean correlation")
    axes[1].set_title("correlation falls with distance", fontsize=9)
    return _save(fig, path)


def gallery(images: list[np.ndarray], captions: list[str], title: str, path: Path, per_row: int = 8,
            frame: str | None = None) -> Path:
    n = max(len(images), 1)
    rows = -(-n // per_row)
    fig, axes = plt.subplots(rows, per_row, figsize=(per_row * 1.25, rows * 1.55 + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.axis("on")
        _show(ax, image)
        ax.set_title(mathsafe(caption), fontsize=6.5)
        if frame:
            for spine in ax.spines.values():
                spine.set_edgecolor(frame)
                spine.set_linewidth(2)
    fig.suptitle(mathsafe(title), fontsize=10)
    return _save(fig, path)


def handcrafted(panels: list[dict[str, np.ndarray]], names: list[str], path: Path) -> Path:
    views = ["image", "sobel", "canny", "lbp", "hog"]
    titles = {"image": "image", "sobel": "Sobel", "canny": "Canny", "lbp": "LBP (uniform, P=8)", "hog": "HOG"}
    fig, axes = plt.subplots(len(panels), len(views), figsize=(len(views) * 1.5 + 1, len(panels) * 1.45 + 0.4),
                             squeeze=False)
    for i, (panel, name) in enumerate(zip(panels, names)):
        for j, view in enumerate(views):
            _show(axes[i, j], panel[view], cmap="gray" if view != "lbp" else "viridis")
            if i == 0:
                axes[i, j].set_title(titles[view], fontsize=9)
        axes[i, 0].set_ylabel(short(name, 12), fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle("hand-crafted features of one training image per class", fontsize=10)
    return _save(fig, path)


def augmentations(originals: np.ndarray, previews: dict[str, np.ndarray], path: Path) -> Path:
    """Rows: the originals, then each preset; columns: the same images."""
    rows = [("original", originals), *previews.items()]
    n = len(originals)
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 1.1 + 1.2, len(rows) * 1.15 + 0.4), squeeze=False)
    for i, (name, imgs) in enumerate(rows):
        for j in range(n):
            _show(axes[i, j], imgs[j])
        axes[i, 0].set_ylabel(name, fontsize=9, rotation=0, ha="right", va="center")
    fig.suptitle("augmentation presets, as training sees them (one draw each)", fontsize=10)
    return _save(fig, path)
