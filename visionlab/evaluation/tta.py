"""Test-time augmentation: the logits of a few label-preserving views of each test image, averaged.

    tta: none            the image itself
    tta: flip            the image and its mirror, 1/2 each (airbench's tta_level 1)
    tta: flip-translate  the flip pair (1/2), and the flip pair of the image shifted one pixel
                         up-left and of it shifted one pixel down-right (1/4 each), reflect
                         padded: 6 views (airbench's tta_level 2)

Logits are averaged, not probabilities, as airbench does. Digit-like classes (see
``training.run.digit_like``) are never mirrored, a mirrored 2 not being a 2: ``resolve_tta``
turns flip into none and flip-translate into translate (the three unmirrored views, weights
1/2, 1/4, 1/4) and logs a note. It skips rather than refuses because evaluation runs after
training: an error there would throw a finished run away, and ``tta`` only changes how the
finished model is read.

Features (t-SNE, class centroids) come from the plain view only: analysis describes the model,
not the ensemble of views. The plain view's logits come back too, for the accuracy without TTA.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..errors import UserError

log = logging.getLogger(__name__)

TTA_MODES = ("none", "flip", "flip-translate")  # what the ``tta`` key takes
SHIFT_PX = 1  # translate views: shifted this many pixels, diagonally both ways


def resolve_tta(mode: str, classes: list[str]) -> str:
    """The mode to apply to these classes: ``mode``, or without its flips for digit-like classes."""
    from ..training.run import digit_like

    if mode not in TTA_MODES:
        raise UserError(f"Invalid tta '{mode}'. Only {', '.join(TTA_MODES)} are supported.")
    if mode == "none" or not digit_like(classes):
        return mode
    applied = "translate" if mode == "flip-translate" else "none"
    log.warning("tta: %s asked for, but the classes are digits (a mirrored 2 is not a 2): applying %s", mode, applied)
    return applied


def views(x: torch.Tensor, mode: str) -> list[tuple[float, torch.Tensor]]:
    """(weight, view) pairs of a normalised (B, C, H, W) batch; the weights sum to 1 and the first
    view is ``x`` itself. ``mode``: none | flip | translate | flip-translate."""
    if mode == "none":
        return [(1.0, x)]
    shifted = []
    if mode in ("translate", "flip-translate"):
        h, w = x.shape[-2:]
        s = SHIFT_PX
        padded = F.pad(x, (s, s, s, s), mode="reflect")  # (B, C, H + 2s, W + 2s)
        shifted = [padded[..., :h, :w], padded[..., 2 * s:, 2 * s:]]  # content moved down-right, up-left
    if mode == "translate":
        return [(0.5, x)] + [(0.25, v) for v in shifted]
    if mode == "flip":
        return [(0.5, x), (0.5, x.flip(-1))]
    if mode == "flip-translate":  # the plain pair 1/2, each shifted pair 1/4
        return [(0.25, x), (0.25, x.flip(-1))] + [(0.125, u) for v in shifted for u in (v, v.flip(-1))]
    raise ValueError(f"unknown tta mode {mode!r}")


def infer_tta(model, images: torch.Tensor, engine, batch_size: int, mode: str, features: bool = False):
    """Run the model over (N, H, W, C) uint8 ``images`` with the views of ``mode``: (logits (N, K)
    float32 averaged over the views, features (N, D) of the plain view or None, plain-view logits)."""
    from ..training.loop import infer

    return infer(model, images, engine, batch_size, features, views=lambda x: views(x, mode))
