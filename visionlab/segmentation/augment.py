"""Joint image + mask augmentation of the whole batch at once, on the training device.

Random scale, a random crop of a fixed size and a horizontal flip are one (B, 2, 3) affine
matrix per sample, applied with one ``F.affine_grid`` and two ``F.grid_sample`` calls that share
the grid: bilinear for the images, nearest for the masks (an id halfway between 'road' and
'car' means nothing). Since both read the same sample points, a mask pixel always describes the
image pixel at the same place. Where the crop leaves the scaled image, images get 0 and masks
get 255 (ignore). Colour jitter (brightness, contrast, saturation) then runs on the images
alone, through the classification engine's ``Augment``.

All random numbers come from one draw on the caller's ``torch.Generator``: a checkpoint that
saves its state resumes the same augmentation.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..training.augment import Augment
from .classes import IGNORE

SCALE, TOP, LEFT, FLIP = range(4)  # columns of the (B, 4) uniform draw


@dataclass(frozen=True)
class JointAugment:
    """``aug(images, masks, generator)``: (B, C, H, W) float in [0, 1] and (B, H, W) uint8 ->
    (B, C, h, w) float and (B, h, w) int64, where (h, w) = crop (default: the input size)."""

    crop: tuple[int, int] | None = None  # (h, w) output size in pixels; None: the input size
    scale: tuple[float, float] = (1.0, 1.0)  # zoom range, uniform; > 1 enlarges the content
    flip: bool = False  # mirror left-right with probability 1/2
    jitter: float = 0.0  # brightness, contrast and saturation within 1 +- jitter (images only)

    def __post_init__(self):
        if not 0 < self.scale[0] <= self.scale[1] <= 10:
            raise UserError(f"scale must be a range LO-HI with 0 < LO <= HI <= 10, got {self.scale}")
        if self.crop is not None and min(self.crop) < 1:
            raise UserError(f"crop must be a positive size in pixels, got {self.crop}")
        if not 0 <= self.jitter <= 1:
            raise UserError(f"jitter must be in [0, 1], got {self.jitter}")

    def theta(self, u: torch.Tensor, size: tuple[int, int], crop: tuple[int, int]) -> torch.Tensor:
        """(B, 4) uniforms -> (B, 2, 3) matrices mapping output to input normalised coordinates.

        With align_corners=False an output pixel j of the crop sits at scaled-image position
        offset + j + 0.5, i.e. input position (offset + j + 0.5) / s, so in normalised coordinates
        x_in = (w / (s W)) x_out + (2 offset + w) / (s W) - 1, and a flip negates the first term.
        The offset is a whole number of scaled pixels, so scale 1 moves pixels without resampling.
        """
        (height, width), (h, w) = size, crop
        lo, hi = self.scale
        s = lo + (hi - lo) * u[:, SCALE]  # (B,)
        # the crop's top-left corner in the scaled image, anywhere it overlaps it
        top = torch.floor(torch.minimum(s * height - h, torch.zeros_like(s)) + u[:, TOP] * (s * height - h).abs())
        left = torch.floor(torch.minimum(s * width - w, torch.zeros_like(s)) + u[:, LEFT] * (s * width - w).abs())
        sign = torch.where(u[:, FLIP] < 0.5, -1.0, 1.0) if self.flip else torch.ones_like(s)
        theta = torch.zeros(len(u), 2, 3, device=u.device)
        theta[:, 0, 0] = sign * w / (s * width)
        theta[:, 0, 2] = (2 * left + w) / (s * width) - 1
        theta[:, 1, 1] = h / (s * height)
        theta[:, 1, 2] = (2 * top + h) / (s * height) - 1
        return theta

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
        if images.ndim != 4 or masks.ndim != 3 or (images.shape[0], *images.shape[2:]) != masks.shape:
            raise ValueError(f"expected (B, C, H, W) images and (B, H, W) masks, got {tuple(images.shape)} and "
                             f"{tuple(masks.shape)}")
        n, size = len(images), tuple(images.shape[2:])
        crop = tuple(self.crop or size)
        u = torch.rand(n, 4, generator=generator, device=generator.device).to(images.device)
        if crop == size and self.scale == (1.0, 1.0) and not self.flip:
            out, labels = images, masks.long()
        else:
            no_autocast = (torch.autocast(images.device.type, enabled=False)
                           if torch.amp.is_autocast_available(images.device.type) else contextlib.nullcontext())
            with no_autocast:  # float32 sample points: bf16 ones would misplace pixels
                grid = F.affine_grid(self.theta(u, size, crop), [n, 1, *crop], align_corners=False)  # (B, h, w, 2)
                out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
                # masks shifted by one so that 'outside' (zero padding) is told apart from id 0
                shifted = F.grid_sample(masks[:, None].float() + 1, grid, mode="nearest", padding_mode="zeros",
                                        align_corners=False)[:, 0].long()  # (B, h, w)
            labels = torch.where(shifted == 0, IGNORE, shifted - 1)
        if self.jitter:
            out = Augment(brightness=self.jitter, contrast=self.jitter, saturation=self.jitter)(out, generator)
        return out, labels

    def describe(self) -> str:
        parts = [f"crop {self.crop[0]}x{self.crop[1]}" if self.crop else "full image"]
        if self.scale != (1.0, 1.0):
            parts.append(f"scale {self.scale[0]:g}-{self.scale[1]:g}")
        if self.flip:
            parts.append("flip")
        if self.jitter:
            parts.append(f"jitter {self.jitter:g}")
        return " + ".join(parts)
