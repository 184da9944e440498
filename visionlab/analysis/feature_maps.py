"""Conv feature maps of a few chosen test images: what each conv layer responds to.

The one analysis that runs the model, and only on a handful of images (``feature_map_images``
test images, one per class where possible, and as many misclassified ones), never the test set.
For each image and conv layer the figure shows the input and its 8 most active channels (largest
mean absolute activation for that image), each scaled to its own range (1x1 maps, which have no
range, are scaled together). Models without conv
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


# Layout in pixels of the saved PNG (DPI): the whole figure is one composed RGB canvas drawn
# with figimage, pixel for pixel, plus text. Why by hand: one matplotlib Axes per tile row
# (66 for ResNet-18 and 4 images) took about a second a figure, a tenth of a digits study.
DPI = 80
TILE, GAP = 56, 8  # a channel's tile (maps are scaled up or down to fit) and the space between tiles
LABEL_W, INPUT_W = 118, 150  # the layer-name column and the input-image column
ROW = TILE + 22  # a layer's row: its tiles and the channel numbers under them
CAPTION, BLOCK_GAP, TOP, MARGIN = 46, 14, 34, 10


def _resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w, ...) -> (height, width, ...) by nearest neighbour: map pixels stay crisp squares."""
    rows = np.arange(height) * image.shape[0] // height
    cols = np.arange(width) * image.shape[1] // width
    return image[rows][:, cols]


def _fit(h: int, w: int, box_h: int, box_w: int) -> tuple[int, int]:
    """The largest (height, width) of an h x w image inside box_h x box_w, aspect kept."""
    scale = min(box_h / h, box_w / w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _tiles(maps: np.ndarray) -> tuple[list[np.ndarray], list[int], bool]:
    """(C, h, w) maps of one image -> the CHANNELS most active channels (largest mean |activation|),
    each scaled to [0, 1] over its own range, and their numbers. Single-pixel maps have no range
    of their own: they are scaled together (the third value says so), so colour compares channels."""
    order = np.argsort(-np.abs(maps).mean(axis=(1, 2)), kind="stable")[:CHANNELS]
    chosen = maps[order].astype(np.float32)
    joint = chosen.shape[1] * chosen.shape[2] == 1
    axes = None if joint else (1, 2)
    low, high = chosen.min(axis=axes, keepdims=True), chosen.max(axis=axes, keepdims=True)
    span = high - low
    scaled = np.where(span > 0, (chosen - low) / np.where(span > 0, span, 1), 0.0)
    return list(scaled), order.tolist(), joint


def plot_feature_maps(images: np.ndarray, maps: dict[str, np.ndarray], captions: list[tuple[str, bool]], path: Path,
                      title: str) -> Path:
    """One block per image: the input on the left, one row of channel tiles per conv layer.

    images: (B, H, W, C) uint8; maps: {layer: (B, C, h, w)}; captions: (text, correct) per image.
    """
    n, h, w, c = images.shape
    layers = list(maps)
    block_h = CAPTION + max(len(layers) * ROW, 60) + BLOCK_GAP
    width = MARGIN + INPUT_W + LABEL_W + CHANNELS * TILE + (CHANNELS - 1) * GAP + MARGIN
    height = TOP + n * block_h + MARGIN
    canvas = np.full((height, width, 3), 255, np.uint8)
    colours = plt.get_cmap("viridis")
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)

    def text(x, y, s, **kw):  # x, y in canvas pixels from the top left
        fig.text(x / width, 1 - y / height, s, **kw)

    for b in range(n):
        y0 = TOP + b * block_h
        words, correct = captions[b]
        text(MARGIN + INPUT_W / 2 - 5, y0 + CAPTION - 4, words, ha="center", va="bottom", fontsize=8.5,
             color=RIGHT if correct else ERROR)
        image = images[b] if c == 3 else np.repeat(images[b][..., :1], 3, axis=2)
        ih, iw = _fit(h, w, min(len(layers) * ROW - GAP, 200), INPUT_W - 20)
        canvas[y0 + CAPTION: y0 + CAPTION + ih, MARGIN: MARGIN + iw] = _resize_nearest(image, ih, iw)
        for l, layer in enumerate(layers):
            _, n_channels, map_h, map_w = maps[layer].shape
            tiles, channels, joint = _tiles(maps[layer][b])
            y = y0 + CAPTION + l * ROW
            label = f"{layer}\n{n_channels}×{map_h}×{map_w}" + ("\nscaled together" if joint else "")
            text(MARGIN + INPUT_W + LABEL_W - 10, y + TILE / 2, label, ha="right", va="center", fontsize=8.5)
            th, tw = _fit(map_h, map_w, TILE, TILE)
            for j, (tile, ch) in enumerate(zip(tiles, channels)):
                x = MARGIN + INPUT_W + LABEL_W + j * (TILE + GAP)
                canvas[y: y + th, x: x + tw] = colours(_resize_nearest(tile, th, tw), bytes=True)[..., :3]
                text(x + tw / 2, y + th + 2, f"ch {ch}", ha="center", va="top", fontsize=7)
    fig.figimage(canvas, 0, 0, origin="upper")
    text(width / 2, TOP / 2, mathsafe(title), ha="center", va="center", fontsize=11)
    fig.savefig(path, dpi=DPI)
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

