"""airbench: the network of Keller Jordan's airbench94 (CIFAR-10 speed records), as a FeatureModel.

    (B, C, H, W) normalised
    -> whiten   2x2 conv, 2 * C * 4 filters fixed to the training patches' whitening, + bias, GELU
    -> block1   conv 3x3 (64), max-pool 2, BN, GELU, conv 3x3, BN, GELU     (B, 64, (H-1)/2, ...)
    -> block2   the same with 256 channels                                   (B, 256, (H-1)/4, ...)
    -> block3   the same with 256 channels                                   (B, 256, (H-1)/8, ...)
    -> global max-pool, flatten: (B, 256) features
    -> head     Linear without bias, times 1/9: (B, n_classes) logits

A 32x32 image gives 31 -> 15 -> 7 -> 3 -> 1, exactly airbench's MaxPool2d(3) at the end; the
global max-pool lets other sizes (28x28 MNIST, 64x64 photos) run too. The details that matter
for its speed, kept from airbench94.py:

- ``init_from_data`` sets the first layer to the eigenvectors of the covariance of 2x2 patches
  of up to 5,000 training images, scaled by 1 / sqrt(eigenvalue + eps), and their negatives (so
  the GELU after it keeps both signs). These weights are never trained; the bias is.
- Every 3x3 conv starts as the identity on its first C_in output channels (``dirac_``): an
  implicit residual path at initialisation, in a network with no skip connections.
- BatchNorm has no learned scale (fixed at 1), eps 1e-12, momentum 0.4 (airbench's 0.6 in the
  other convention), and its shift learns 64 times faster than the other weights under SGD
  (``ShiftNorm``), airbench's ``bias_scaler``.
- The logits are scaled by 1/9: a fixed temperature that keeps them small while the learning
  rate is large.

- ``on_epoch`` freezes the whitening bias after ``WHITEN_BIAS_EPOCHS`` epochs, as airbench.

The rest of airbench94's recipe is in the training options studies/cifar10-fast.yaml sets:
``schedule: triangle``, ``lookahead: true`` (training/optim.py) and the augmentation
``[crop:2, reflect, flip:alternate]`` (training/augment.py).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .base import FeatureModel, ModelOptions
from .maxpool import MaxPool2x2

WHITEN_KERNEL = 2  # px: side of the patches the first layer whitens
WHITEN_EPS = 5e-4  # added to each eigenvalue of the (normalised) patch covariance before 1/sqrt
WHITEN_IMAGES = 5000  # training images the whitening is fitted on (airbench's count), evenly strided
WHITEN_CHUNK = 500  # images per chunk when accumulating the covariance (bounds the patch copy's memory)
WIDTHS = (64, 256, 256)  # channels of block1, block2, block3
BN_MOMENTUM = 0.4  # torch's convention: weight of the new batch's statistics
BN_EPS = 1e-12  # airbench's; the normalised maps never have near-zero variance in practice
BN_BIAS_LR = 64.0  # BatchNorm shifts learn this many times faster than other weights (SGD)
HEAD_SCALE = 1 / 9  # logits are the head's output times this
WHITEN_BIAS_EPOCHS = 3  # the whitening layer's bias trains for this many epochs, then stays


class ShiftNorm(nn.BatchNorm2d):
    """BatchNorm2d with the scale fixed at 1 and a learned shift that moves ``BN_BIAS_LR`` times faster.

    airbench gives BatchNorm biases their own optimiser group: lr x 64, weight decay / 64 (the same
    decay per step). visionlab's optimisers have one group, so the same update comes from a
    reparametrisation: the parameter ``bias`` is stored divided by g = sqrt(64) = 8 and multiplied
    by g here. Its gradient is g times the shift's, and a step on it moves the shift g times
    further: g^2 = 64 times the plain step, while weight decay shrinks parameter and shift alike.
    For SGD (with momentum, linear in the gradient) this equals airbench's update exactly; under
    Adam, which is scale-invariant, the shift would learn g = 8 times faster instead.
    """

    def __init__(self, channels: int):
        super().__init__(channels, eps=BN_EPS, momentum=BN_MOMENTUM, affine=False)  # no weight
        self.bias = nn.Parameter(torch.zeros(channels))  # the shift / gain, zero at first like torch's
        self.gain = math.sqrt(BN_BIAS_LR)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> same
        return F.batch_norm(x, self.running_mean, self.running_var, None, self.bias * self.gain,
                            self.training, self.momentum, self.eps)


class ScaledLinear(nn.Linear):
    """A Linear layer without bias whose output is multiplied by a constant (``HEAD_SCALE``)."""

    def __init__(self, in_features: int, out_features: int, scale: float):
        super().__init__(in_features, out_features, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, n_classes)
        return super().forward(x) * self.scale


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    """3x3 'same' conv without bias (BN follows), its first min(c_in, c_out) filters the identity."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    nn.init.dirac_(conv.weight[:min(c_in, c_out)])  # an in-place init of a view, under no_grad
    return conv


def conv_group(c_in: int, c_out: int) -> nn.Sequential:
    """conv, 2x max-pool, BN, GELU, conv, BN, GELU: (B, c_in, H, W) -> (B, c_out, H // 2, W // 2).

    Pooling right after the first conv (not after the block) runs BN, GELU and the second conv
    on a quarter of the pixels: this is where most of airbench's speed comes from.
    """
    return nn.Sequential(OrderedDict(conv1=conv3x3(c_in, c_out), pool=MaxPool2x2(), norm1=ShiftNorm(c_out),
                                     act1=nn.GELU(), conv2=conv3x3(c_out, c_out), norm2=ShiftNorm(c_out),
                                     act2=nn.GELU()))


class Airbench(FeatureModel):
    """``features`` (B, C, H, W) -> (B, 256), then ``head`` (B, 256) -> (B, n_classes)."""

    def __init__(self, n_classes: int, in_channels: int):
        super().__init__()
        self.arch = "airbench"
        k = WHITEN_KERNEL
        whiten = nn.Conv2d(in_channels, 2 * in_channels * k * k, k, padding=0, bias=True)
        whiten.weight.requires_grad_(False)  # set by init_from_data, never trained
        nn.init.zeros_(whiten.bias)
        widths = (whiten.out_channels, *WIDTHS)
        self.features = nn.Sequential(OrderedDict(
            whiten=nn.Sequential(OrderedDict(conv=whiten, act=nn.GELU())),
            **{f"block{i}": conv_group(widths[i - 1], widths[i]) for i in range(1, len(WIDTHS) + 1)},
            pool=nn.AdaptiveMaxPool2d(1),  # 32 px: a 3x3 map, airbench's MaxPool2d(3)
            flatten=nn.Flatten()))  # (B, 256, 1, 1) -> (B, 256)
        self.head = ScaledLinear(WIDTHS[-1], n_classes, HEAD_SCALE)
        self.feature_dim = WIDTHS[-1]
        stages = ["whiten", *(f"block{i}" for i in range(1, len(WIDTHS) + 1))]
        self._feature_layers = {name: f"features.{name}" for name in stages}  # each stage's activated output
        self._stage_params = {name: [f"features.{name}"] for name in stages}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def get_classifier(self) -> nn.Module:
        return self.head

    def on_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the training loop before each epoch (0-based): from epoch
        ``WHITEN_BIAS_EPOCHS`` on, the whitening bias stops training (it never restarts one)."""
        if epoch >= WHITEN_BIAS_EPOCHS:
            self.features.whiten.conv.bias.requires_grad_(False)

    @torch.no_grad()
    def init_from_data(self, images: np.ndarray, mean: list[float], std: list[float]) -> None:
        """Fit the whitening layer on (N, H, W, C) uint8 training images, normalised with (mean, std)
        per channel in [0, 1] as training normalises them. Returns nothing; sets the weights."""
        conv = self.features.whiten.conv
        eigenvalues, eigenvectors = patch_eigens(images, mean, std, conv.kernel_size[0])
        filters = eigenvectors / torch.sqrt(eigenvalues + WHITEN_EPS).view(-1, 1, 1, 1)  # (D, C, k, k)
        conv.weight.copy_(torch.cat([filters, -filters]).to(conv.weight))
        conv.bias.zero_()


def patch_eigens(images: np.ndarray, mean: list[float], std: list[float], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of the uncentred covariance of all k x k patches (stride 1) of up to
    ``WHITEN_IMAGES`` images: eigenvalues (D,) descending and eigenvectors (D, C, k, k) as conv
    filters, with D = C * k * k. Uncentred, as airbench: the conv bias absorbs the mean."""
    n, _, _, c = images.shape
    if n == 0:
        raise UserError("airbench: no training images to fit the whitening layer on")
    picked = np.asarray(images[:: max(1, n // WHITEN_IMAGES)][:WHITEN_IMAGES])
    mean_t = torch.tensor(mean, dtype=torch.float64).view(1, c, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float64).view(1, c, 1, 1)
    covariance = torch.zeros(c * k * k, c * k * k, dtype=torch.float64)
    count = 0
    for first in range(0, len(picked), WHITEN_CHUNK):
        x = torch.from_numpy(np.ascontiguousarray(picked[first: first + WHITEN_CHUNK])).permute(0, 3, 1, 2)
        x = (x.double() / 255.0 - mean_t) / std_t  # (b, C, H, W) normalised
        patches = x.unfold(2, k, 1).unfold(3, k, 1)  # (b, C, H-k+1, W-k+1, k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)  # (P, C*k*k), conv weight order
        covariance += patches.T @ patches
        count += len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance / count)  # ascending; columns are vectors
    return eigenvalues.flip(0).float(), eigenvectors.T.flip(0).reshape(c * k * k, c, k, k).float()


def airbench(n_classes: int, in_channels: int, image_size: tuple[int, int], options: ModelOptions) -> Airbench:
    """airbench94's network; ``options`` other than weights/freeze (handled by build_model) do not apply."""
    smallest = WHITEN_KERNEL + 2 ** len(WIDTHS) - 1  # the whitening conv takes k-1 px, each block halves
    if min(image_size) < smallest:
        raise UserError(f"airbench: image_size {tuple(image_size)} is too small; it needs at least "
                        f"{smallest}x{smallest} pixels (a 2x2 whitening conv and three 2x max-pools)")
    return Airbench(n_classes, in_channels)
