"""Convolutions over feature maps of a few pixels, run as one matrix product.

Why by hand: oneDNN's convolution kernels are built for maps of many pixels. ResNet-18 on the
8x8 digits reaches layer3 at 2x2 and layer4 at 1x1, and there a 3x3 convolution's backward took
20 ms on this CPU (bf16, batch 64) for what is a (64 x 512) by (512 x 512) matrix product, which
takes under 2 ms as one. Those four layers were half of every training step.

When a convolution's input map has fewer pixels than its kernel has taps, the convolution is
exactly a dense linear map from the whole input map to the whole output map: the matrix of
(out channel, output pixel) x (input pixel, in channel) whose block for output pixel p and input
pixel q is the kernel tap that links them, or zero where none does (a tap that only ever meets
the zero padding never appears). It has fewer multiply-adds than the convolution computes, and
it is the same function with the same gradients, only summed in another order. Measured here
(bf16, batch 64, forward + backward): 512 channels on 1x1, 18-23 ms -> 2.4-2.6 ms; 256 channels
on 2x2, 6.1-6.6 -> 2.2 ms. A 3x3 map under a 3x3 kernel saves no multiply-adds; there the
matrix was as fast at batch 64 (8.7 vs 8.0 ms) and faster at 512 (40 vs 23 ms), but such layers
are left alone: airbench's last block is one, and its GPU speed could not be measured here.

``densify(model, in_channels, image_size)`` finds those convolutions with one probe forward pass
and turns them into ``SmallMapConv2d``: still an ``nn.Conv2d`` with the same parameters and the
same state dict, whose forward takes the matrix route on inputs of the probed size and the
ordinary convolution on any other size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SmallMapConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that runs as a matrix product on inputs of ``map_size`` (see the module
    docstring). Made by ``densify`` from a plain Conv2d, never constructed directly."""

    map_size: tuple[int, int]  # the input (H, W) the matrix is for
    out_size: tuple[int, int]
    window: tuple[int, int, int, int] | None  # one output pixel: (row, col, height, width) of the live taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.map_size:
            return super().forward(x)
        b, (ho, wo), o = x.shape[0], self.out_size, self.out_channels
        # columns (input pixel, in channel), the order of a channels_last x; rows (out channel, output pixel)
        if self.window is not None:  # one output pixel: the live taps are a window of the kernel
            r, c, h, w = self.window
            x = x[:, :, :h, :w]
            weight = self.weight[:, :, r:r + h, c:c + w].permute(0, 2, 3, 1).reshape(o, -1)
        else:
            taps = self.weight.permute(0, 2, 3, 1).reshape(o, -1, self.in_channels)  # (O, T, C): a view when channels_last
            weight = torch.matmul(self.tap_map.to(taps.dtype), taps).view(o * ho * wo, -1)  # (O, PQ, C) -> (O*P, Q*C)
        bias = None if self.bias is None else self.bias.repeat_interleave(ho * wo)
        y = F.linear(x.permute(0, 2, 3, 1).reshape(b, -1), weight, bias)  # a view of a channels_last x
        return y.view(b, o, ho, wo)


def tap_map(map_size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
            padding: tuple[int, int]) -> torch.Tensor:
    """(P*Q, T) zeros and ones: row p*Q+q has a 1 in the column of the tap that links output pixel
    p to input pixel q (pixels and taps row-major), and none when no tap does."""
    (h, w), (kh, kw), (sh, sw), (ph, pw) = map_size, kernel, stride, padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    i, j, u, v = torch.meshgrid(torch.arange(ho), torch.arange(wo), torch.arange(h), torch.arange(w), indexing="ij")
    a, c = u - i * sh + ph, v - j * sw + pw  # the tap's row and column, when inside the kernel
    inside = (a >= 0) & (a < kh) & (c >= 0) & (c < kw)
    tap = torch.where(inside, a * kw + c, kh * kw).reshape(-1)
    return F.one_hot(tap, kh * kw + 1)[:, :-1].float()  # the last column, "no tap", dropped


def densify(model: nn.Module, in_channels: int, image_size: tuple[int, int]) -> int:
    """Make every plain ``nn.Conv2d`` of ``model`` whose input map, for (in_channels, *image_size)
    images, has fewer pixels than its kernel has taps (or just one) a ``SmallMapConv2d``.
    Returns how many."""
    convs = [m for m in model.modules() if type(m) is nn.Conv2d and m.groups == 1 and m.dilation == (1, 1)
             and m.padding_mode == "zeros" and not isinstance(m.padding, str)]
    if not convs:
        return 0
    sizes: dict[nn.Module, tuple[int, int]] = {}

    def record(module, args):  # returns None: a pre-hook's return value would replace the input
        sizes.setdefault(module, tuple(args[0].shape[-2:]))

    hooks = [m.register_forward_pre_hook(record) for m in convs]
    training = model.training
    try:
        model.eval()  # batch norm in train mode refuses one image on a 1x1 map
        with torch.no_grad():
            model(torch.zeros(1, in_channels, *image_size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(training)
    count = 0
    for m, (h, w) in sizes.items():
        (kh, kw), (sh, sw), (ph, pw) = m.kernel_size, m.stride, m.padding
        if h * w > 1 and h * w >= kh * kw:  # no multiply-adds to save: left alone (see the docstring)
            continue
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        window = None
        if ho == wo == 1:
            window = (ph, pw, min(h, kh - ph), min(w, kw - pw))
            if window[2] < 1 or window[3] < 1:  # the output sees only padding: leave such a layer alone
                continue
        m.__class__ = SmallMapConv2d
        m.map_size, m.out_size, m.window = (h, w), (ho, wo), window
        if window is None:  # not in the state dict: checkpoints and weight files stay a plain Conv2d's
            m.register_buffer("tap_map", tap_map((h, w), (kh, kw), (sh, sw), (ph, pw)), persistent=False)
        count += 1
    return count
