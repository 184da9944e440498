"""Conv feature maps of a few chosen test images: what each conv layer responds to.

The one analysis that runs the model, and only on a handful of images (``feature_map_images``
test images, one per class where possible, and as many misclassified ones), never the test set.
For each image and conv layer the figure shows the input and its 8 most active channels (largest
mean absolute activation for that image), each scaled to its own range. Models without conv
layers (mlp) have nothing to show.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..evaluation.metrics import softmax  # noqa: E402
from ..evaluation.plots import ERROR, RIGHT, mathsafe, short  # noqa: E402

CHANNELS = 8  # channels shown per layer


def choose_per_class(candidates: np.ndarray, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n of the candidate rows, one class after another (classes in a seeded order), so that n
    images cover n classes where the candidates allow it."""
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(candidates[labels[candidates] == k]).tolist() for k in np.unique(labels[candidates])]
    pools = [pools[i] for i in rng.permutation(len(pools))]
    chosen = []
    while len(chosen) < n and any(pools):
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(pool.pop())
    return np.asarray(chosen, dtype=np.int64)


def compute_maps(model, engine, images: np.ndarray) -> dict[str, np.ndarray]:
    """{conv layer: (B, C, h, w) float32} for (B, H, W, C) uint8 images, in eval mode, no autograd."""
    model.eval()
    with torch.inference_mode():
        x = engine.prepare(torch.from_numpy(np.ascontiguousarray(images)).to(engine.device))  # (B, C, H, W)
        maps = model.feature_maps(x)
    return {name: m.float().contiguous().cpu().numpy() for name, m in maps.items() if m.ndim == 4}


def _strip(maps: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """(C, h, w) maps of one image -> (h, CHANNELS * (w + 1) - 1) tiles of the most active channels,
    each min-max scaled, separated by NaN (drawn blank), and the channel numbers shown."""
    order = np.argsort(-np.abs(maps).mean(axis=(1, 2)), kind="stable")[:CHANNELS]
    h, w = maps.shape[1:]
    strip = np.full((h, len(order) * (w + 1) - 1), np.nan, np.float32)
    for j, ch in enumerate(order):
        tile = maps[ch]
        span = tile.max() - tile.min()
        strip[:, j * (w + 1): j * (w + 1) + w] = (tile - tile.min()) / span if span > 0 else 0.0
    return strip, order.tolist()


def plot_feature_maps(images: np.ndarray, maps: dict[str, np.ndarray], captions: list[tuple[str, bool]], path: Path,
                      title: str) -> Path:
    """One block per image: the input on the left, one row of channel tiles per conv layer.

    images: (B, H, W, C) uint8; maps: {layer: (B, C, h, w)}; captions: (text, correct) per image.
    """
    n, h, w, c = images.shape
    layers = list(maps)
    n_rows = n * len(layers)
    row_h, input_w, label_w, strip_w = 1.05, 1.8, 0.9, 7.6  # inches: 8 square tiles fill a strip
    fig = plt.figure(figsize=(input_w + label_w + strip_w + 0.3, n_rows * row_h + 0.45 * n + 0.7))
    grid = fig.add_gridspec(n_rows, 3, width_ratios=(input_w, label_w, strip_w), left=0.01, right=0.99,
                            top=1 - 0.7 / fig.get_figheight(), bottom=0.02, hspace=0.5, wspace=0.02)
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")  # the NaN gaps between tiles
    for b in range(n):
        ax = fig.add_subplot(grid[b * len(layers): (b + 1) * len(layers), 0])
        ax.imshow(images[b].squeeze(-1) if c == 1 else images[b], cmap="gray" if c == 1 else None, vmin=0,
                  vmax=255, interpolation="nearest")
        text, correct = captions[b]
        ax.set_title(text, fontsize=8.5, color=RIGHT if correct else ERROR)
        ax.axis("off")
        for l, layer in enumerate(layers):
            _, n_channels, map_h, map_w = maps[layer].shape
            ax = fig.add_subplot(grid[b * len(layers) + l, 1])
            ax.text(0.95, 0.5, f"{layer}\n{n_channels}×{map_h}×{map_w}", ha="right", va="center", fontsize=8.5,
                    transform=ax.transAxes)
            ax.axis("off")
            strip, channels = _strip(maps[layer][b])
            ax = fig.add_subplot(grid[b * len(layers) + l, 2])
            ax.imshow(strip, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_anchor("W")  # tiles stay square, flush left
            ax.set_xticks([j * (map_w + 1) + (map_w - 1) / 2 for j in range(len(channels))],
                          [f"ch {ch}" for ch in channels], fontsize=7)
            ax.tick_params(length=0, pad=1)
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
    fig.suptitle(mathsafe(title), fontsize=11)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def feature_map_figures(model, engine, record: dict[str, np.ndarray], test_images: np.ndarray, classes: list[str],
                        out: Path, n_images: int, seed: int) -> dict[str, Path]:
    """feature_maps.png (n test images) and feature_maps_errors.png (n misclassified ones);
    {} for a model without conv layers, no errors figure when there are no errors."""
    if n_images <= 0 or not model.conv_layer_names():
        return {}
    labels, preds = record["labels"], record["logits"].argmax(axis=1)
    confidence = softmax(record["logits"].astype(np.float64)).max(axis=1)
    figures = {}
    sets = {"feature_maps": (np.arange(len(labels)), "test images"),
            "feature_maps_errors": (np.flatnonzero(preds != labels), "misclassified test images")}
    for key, (candidates, what) in sets.items():
        rows = choose_per_class(candidates, labels, n_images, seed)
        if not len(rows):
            continue
        index = record["indices"][rows]
        order = np.argsort(index)  # memmaps read fastest in order
        rows, index = rows[order], index[order]
        images = np.asarray(test_images[index])  # (B, H, W, C) uint8
        maps = compute_maps(model, engine, images)
        captions = [(f"test #{i}\ntrue {short(classes[labels[r]], 14)}\npred {short(classes[preds[r]], 14)} "
                     f"{confidence[r]:.0%}", bool(labels[r] == preds[r])) for i, r in zip(index, rows)]
        figures[key] = plot_feature_maps(images, maps, captions, out / f"{key}.png",
                                         f"Feature maps of {what}: the {CHANNELS} most active channels per conv layer")
    return figures

