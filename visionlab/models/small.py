"""The small from-scratch networks: mlp, cnn2, cnn3 and the Keras-tutorial lenet.

Each is one ``Classifier``: an ``nn.Sequential`` of named blocks ending in the penultimate
features, then a single ``nn.Linear`` head. The conv maps ``feature_maps`` returns are the
activated, pre-pooling output of each conv block, named ``conv1``, ``conv2``, ...
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import UserError
from .base import FeatureModel, ModelOptions, make_activation
from .maxpool import MaxPool2x2

CNN_HEAD = 128  # cnn2/cnn3: width of the fully connected layer before the head
CNN_POOL = 4  # cnn2/cnn3: the last conv map is average-pooled to at most 4x4 (see _cnn)
LENET_DENSE = 64  # lenet: width of the Dense layer before the head
MONOTONIC = {"relu", "leaky_relu", "tanh", "sigmoid"}  # activations that commute with max-pooling


class Classifier(FeatureModel):
    """``features`` (B, C, H, W) -> (B, D), then ``head`` (B, D) -> (B, n_classes)."""

    def __init__(self, arch: str, features: nn.Sequential, head: nn.Linear, n_conv: int):
        super().__init__()
        self.arch = arch
        self.features = features
        self.head = head
        self.feature_dim = head.in_features
        self._feature_layers, self._map_post = {}, {}
        for i in range(1, n_conv + 1):
            block = features.get_submodule(f"conv{i}")
            names = list(block._modules)
            if names.index("pool") < names.index("act"):  # pool-first block: show the map before
                before = "bn" if "bn" in block._modules else "conv"  # pooling, activated here
                self._feature_layers[f"conv{i}"] = f"features.conv{i}.{before}"
                self._map_post[f"conv{i}"] = block.act
            else:
                self._feature_layers[f"conv{i}"] = f"features.conv{i}.act"
        self._stage_params = {f"conv{i}": [f"features.conv{i}"] for i in range(1, n_conv + 1)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def get_classifier(self) -> nn.Module:
        return self.head


def conv_block(c_in: int, c_out: int, kernel: int, padding: int, options: ModelOptions) -> nn.Sequential:
    """conv (+BN) + activation and 2x2 max-pool: (B, c_in, H, W) -> (B, c_out, H', W') with
    H' = (H + 2 * padding - kernel + 1) // 2."""
    layers = OrderedDict(conv=nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=not options.batch_norm))
    if options.batch_norm:  # the BN shift makes the conv bias redundant
        layers["bn"] = nn.BatchNorm2d(c_out)
    if options.activation in MONOTONIC:
        # max-pool commutes with a non-decreasing activation: pooling first gives the same
        # output with the activation (and its backward) on 4x fewer values; on a CPU these
        # element-wise passes, not the convolutions, dominate a small net's step
        layers["pool"] = MaxPool2x2()
        layers["act"] = make_activation(options.activation)
    else:  # gelu dips below zero: pool(gelu(x)) != gelu(pool(x))
        layers["act"] = make_activation(options.activation)
        layers["pool"] = MaxPool2x2()
    return nn.Sequential(layers)


def dense(c_in: int, c_out: int, options: ModelOptions, suffix: str = "") -> OrderedDict:
    """Linear + activation (+ dropout) as named entries for a Sequential."""
    layers = OrderedDict([(f"fc{suffix}", nn.Linear(c_in, c_out)), (f"act{suffix}", make_activation(options.activation))])
    if options.dropout > 0:
        layers[f"drop{suffix}"] = nn.Dropout(options.dropout)
    return layers


def _check_size(arch: str, size: tuple[int, int], min_size: int) -> None:
    if min(size) < 1:
        raise UserError(f"{arch}: image_size {tuple(size)} is too small; it needs at least {min_size}x{min_size} pixels")


def mlp(n_classes: int, in_channels: int, image_size: tuple[int, int], options: ModelOptions) -> Classifier:
    """flatten, then Linear + activation (+ dropout) per hidden width; features = the last hidden layer
    (the flattened image when ``hidden`` is empty, i.e. logistic regression)."""
    width = in_channels * image_size[0] * image_size[1]
    layers = OrderedDict(flatten=nn.Flatten())  # (B, C, H, W) -> (B, C*H*W)
    for i, h in enumerate(options.hidden, start=1):
        layers.update(dense(width, h, options, suffix=str(i)))
        width = h
    return Classifier("mlp", nn.Sequential(layers), nn.Linear(width, n_classes), n_conv=0)


def _cnn(arch: str, widths: list[int], n_classes: int, in_channels: int, image_size: tuple[int, int],
         options: ModelOptions) -> Classifier:
    """3x3 conv blocks of ``widths`` channels, each halving H and W, then Linear 128 + activation
    (+ dropout) as features and a Linear head."""
    layers, c, (h, w) = OrderedDict(), in_channels, image_size
    for i, width in enumerate(widths, start=1):
        layers[f"conv{i}"] = conv_block(c, width, 3, 1, options)
        c, h, w = width, h // 2, w // 2
    _check_size(arch, (h, w), 2 ** len(widths))
    # Average-pool to at most 4x4 so the fully connected layer stays c*16 wide whatever the input:
    # a 224x224 image would otherwise give cnn2 a 64*56*56 = 200,704-wide Linear. Adaptive, so
    # other sizes still run; an identity for maps already at most 4x4 (digits, MNIST with cnn3).
    pooled = (min(h, CNN_POOL), min(w, CNN_POOL))
    layers["pool"] = nn.AdaptiveAvgPool2d(pooled)
    layers["flatten"] = nn.Flatten()  # (B, c, h', w') -> (B, c*h'*w')
    layers.update(dense(c * pooled[0] * pooled[1], CNN_HEAD, options))
    return Classifier(arch, nn.Sequential(layers), nn.Linear(CNN_HEAD, n_classes), n_conv=len(widths))


def cnn2(n_classes: int, in_channels: int, image_size: tuple[int, int], options: ModelOptions) -> Classifier:
    """Two conv blocks (32, 64 channels), Linear 128, head."""
    return _cnn("cnn2", [32, 64], n_classes, in_channels, image_size, options)


def cnn3(n_classes: int, in_channels: int, image_size: tuple[int, int], options: ModelOptions) -> Classifier:
    """Three conv blocks (32, 64, 128 channels), Linear 128, head. Also registered as ``cnn``."""
    return _cnn("cnn3", [32, 64, 128], n_classes, in_channels, image_size, options)


def lenet(n_classes: int, in_channels: int, image_size: tuple[int, int], options: ModelOptions) -> Classifier:
    """The Keras-tutorial LeNet: Conv 16@5x5, MaxPool 2, Conv 32@5x5, MaxPool 2, Flatten, Dense 64, Dense.

    Valid padding as in Keras (28x28 -> 24 -> 12 -> 8 -> 4, flatten 32*4*4 = 512); below 16 px the
    convs pad 'same' (2) instead, as valid padding would shrink 8x8 digits to nothing.
    """
    padding = 2 if min(image_size) < 16 else 0
    h, w = image_size
    for _ in range(2):  # conv then pool
        h, w = (h + 2 * padding - 4) // 2, (w + 2 * padding - 4) // 2
    _check_size("lenet", (h, w), 4)
    layers = OrderedDict(conv1=conv_block(in_channels, 16, 5, padding, options),
                         conv2=conv_block(16, 32, 5, padding, options),
                         flatten=nn.Flatten())  # (B, 32, h, w) -> (B, 32*h*w)
    layers.update(dense(32 * h * w, LENET_DENSE, options))
    return Classifier("lenet", nn.Sequential(layers), nn.Linear(LENET_DENSE, n_classes), n_conv=2)
