"""The scratch figures (matplotlib, Agg): one function per figure, each writes a PNG and returns its path.

    kernels_figure   an image, its convolutions with standard kernels, then max and average pooled
    training_figure  loss and accuracy per epoch of the NumPy network
    filters_figure   the network's filters before and after training, and what they see in one image

Every convolution and pooling drawn here is computed with ``visionlab.scratch.conv``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .conv import avgpool2d, conv2d, maxpool2d  # noqa: E402

__all__ = ["KERNELS", "apply_kernels", "filters_figure", "kernels_figure", "training_figure"]

# name -> (3x3 kernel, signed?). Signed outputs (edges) are drawn with a diverging map around 0.
KERNELS = {
    "Sobel x (vertical edges)": (np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float), True),
    "Sobel y (horizontal edges)": (np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], float), True),
    "Laplacian (all edges)": (np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], float), True),
    "box blur": (np.full((3, 3), 1 / 9), False),
    "Gaussian blur": (np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], float) / 16, False),
    "sharpen": (np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], float), False),
}


def apply_kernels(image: np.ndarray, pool: int = 2) -> dict[str, np.ndarray]:
    """A grey (H, W) image through every kernel at once: conv (padding 1), then 2x2 pooling.

    Returns 'conv' (K, H, W), 'max' and 'avg' (K, H/2, W/2), and the same pooling of the image
    itself as 'image_max' and 'image_avg' (H/2, W/2), K = len(KERNELS).
    """
    x = image[None, None].astype(np.float64)  # (1, 1, H, W)
    w = np.stack([k for k, _ in KERNELS.values()])[:, None]  # (K, 1, 3, 3)
    conv, _ = conv2d(x, w, np.zeros(len(w)), stride=1, padding=1)  # (1, K, H, W)
    return {"conv": conv[0], "max": maxpool2d(conv, pool)[0][0], "avg": avgpool2d(conv, pool)[0][0],
            "image_max": maxpool2d(x, pool)[0][0, 0], "image_avg": avgpool2d(x, pool)[0][0, 0]}


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _show(ax, img: np.ndarray, signed: bool, title: str = "", limits: tuple | None = None) -> None:
    """Signed maps: blue < 0 < red on a symmetric scale; others: grey, black to white.
    ``limits`` (low, high) fixes the scale (for signed maps, max(|low|, |high|) either side of 0)."""
    low, high = limits if limits is not None else (float(img.min()), float(img.max()))
    if signed:
        m = max(abs(low), abs(high)) or 1.0
        ax.imshow(img, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
    else:
        ax.imshow(img, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def _kernel_cell(ax, kernel: np.ndarray, name: str) -> None:
    """A 3x3 kernel as a small heat map with its numbers written in."""
    _show(ax, kernel, True, "")
    strong = 0.6 * np.abs(kernel).max()
    for (i, j), v in np.ndenumerate(kernel):
        ax.text(j, i, f"{v:.2g}" if abs(v) < 1 else f"{v:g}", ha="center", va="center", fontsize=7,
                color="white" if abs(v) > strong else "black")
    ax.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")


def kernels_figure(image: np.ndarray, path: Path, caption: str = "") -> Path:
    """Rows: the input and its pooling, then one row per kernel: kernel | conv | max pool | avg pool.
    A row shares one colour scale, so pooling's effect on the values shows (max keeps the peaks,
    the average lowers them)."""
    out = apply_kernels(image)
    h, w = image.shape
    ph, pw = out["max"].shape[1:]
    rows = 1 + len(KERNELS)
    fig, axes = plt.subplots(rows, 4, figsize=(9, 2.0 * rows), gridspec_kw={"width_ratios": [0.6, 1, 1, 1]})
    axes[0, 0].axis("off")
    limits = (float(image.min()), float(image.max()))
    _show(axes[0, 1], image, False, f"input {h}x{w}", limits)
    _show(axes[0, 2], out["image_max"], False, f"max pool 2x2 -> {ph}x{pw}", limits)
    _show(axes[0, 3], out["image_avg"], False, f"avg pool 2x2 -> {ph}x{pw}", limits)
    for r, (name, (kernel, signed)) in enumerate(KERNELS.items(), start=1):
        conv = out["conv"][r - 1]
        limits = (float(conv.min()), float(conv.max()))
        _kernel_cell(axes[r, 0], kernel, name)
        _show(axes[r, 1], conv, signed, f"conv 3x3, pad 1 -> {h}x{w}" if r == 1 else "", limits)
        _show(axes[r, 2], out["max"][r - 1], signed, f"max pool 2x2 -> {ph}x{pw}" if r == 1 else "", limits)
        _show(axes[r, 3], out["avg"][r - 1], signed, f"avg pool 2x2 -> {ph}x{pw}" if r == 1 else "", limits)
    fig.suptitle(f"kernel -> convolution -> pooling, with NumPy conv2d and pool2d\n{caption}\n"
                 "edges: red > 0 > blue; each row on one colour scale", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def training_figure(history: list[dict], test_accuracy: float, path: Path, title: str = "") -> Path:
    """Cross-entropy and accuracy per epoch, train and validation; the test accuracy as a line."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    for split, style, label in (("train", "-o", "train (mean during the epoch)"), ("val", "--s", "val (end of epoch)")):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], style, ms=3, label=label)
        ax_acc.plot(epochs, [h[f"{split}_accuracy"] for h in history], style, ms=3, label=label)
    ax_acc.axhline(test_accuracy, color="gray", lw=1, ls=":", label=f"test {test_accuracy:.2%}")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def filters_figure(initial: dict, params: dict, x: np.ndarray, path: Path, caption: str = "") -> Path:
    """Columns: the F filters (channel 0). Rows: at initialisation, after training, the ReLU map of
    the standardised image x (1, C, H, W) through the trained filter, and that map max-pooled."""
    w0, w1 = initial["conv_w"][:, 0], params["conv_w"][:, 0]  # (F, K, K)
    pad = w1.shape[-1] // 2
    maps = np.maximum(conv2d(x, params["conv_w"], params["conv_b"], 1, pad)[0], 0.0)  # (1, F, H, W)
    pooled = maxpool2d(maps, 2)[0]  # (1, F, H/2, W/2)
    f = len(w1)
    fig, axes = plt.subplots(4, f + 1, figsize=(1.0 * (f + 1), 4.6))
    for ax in axes[:, 0]:
        ax.axis("off")
    _show(axes[2, 0], x[0, 0], False, "input")
    m = float(max(np.abs(w0).max(), np.abs(w1).max()))
    limit = (-m, m)  # one scale for all filters, so their growth in training shows
    for j in range(f):
        _show(axes[0, j + 1], w0[j], True, f"{j}", limit)
        _show(axes[1, j + 1], w1[j], True, "", limit)
        _show(axes[2, j + 1], maps[0, j], False)
        _show(axes[3, j + 1], pooled[0, j], False)
    for row, label in enumerate(("at init", "trained", "ReLU map", "max pooled")):
        axes[row, 1].set_ylabel(label, fontsize=8)
    fig.suptitle("the network's 3x3 filters (red > 0 > blue, one scale) and what they pick out in a test image"
                 + (f"\n{caption}" if caption else ""), fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
