"""Models: one ``build_model(name, ...)`` over a plain dict of builders, plus ``timm:<name>``.

    model = build_model("cnn3", n_classes=10, in_channels=1, image_size=(28, 28))
    logits = model(x)                       # (B, C, H, W) normalised float -> (B, n_classes)
    feats = model.forward_features(x)       # (B, model.feature_dim), what t-SNE and centroids use
    logits = model.forward_head(feats)      # the same logits
    maps = model.feature_maps(x)            # {name: (B, C', H', W')} for model.conv_layer_names()

Names: mlp, cnn2, cnn3, cnn (= cnn3), lenet, resnet18, and timm:<any timm model> when timm is
installed. ``model.normalization`` is (mean, std) the weights need, or None: use the dataset's.
"""
from __future__ import annotations

import operator

from torch import nn

from ..errors import UserError
from .airbench import airbench
from .base import FeatureModel, ModelOptions, read_state_dict
from .small import cnn2, cnn3, lenet, mlp
from .small_maps import densify


def resnet18(n_classes: int, in_channels: int, image_size: tuple[int, int], options: ModelOptions) -> FeatureModel:
    """torchvision's ResNet-18 (see resnet.py). Imported on first use: torchvision takes seconds
    to import, a tax every small-CNN run would otherwise pay."""
    from .resnet import resnet18 as build

    return build(n_classes, in_channels, image_size, options)


MODELS = {
    "mlp": mlp,
    "cnn2": cnn2,
    "cnn3": cnn3,
    "cnn": cnn3,  # the default CNN is the deeper one: three blocks still run on 8x8 digits
    "lenet": lenet,
    "resnet18": resnet18,
    "airbench": airbench,  # airbench94's network for the CIFAR-10 speed recipe (studies/cifar10-fast.yaml)
}
PRETRAINED_MODELS = ("resnet18",)  # the names in MODELS with ImageNet weights (timm: ones too)
TIMM_PREFIX = "timm:"


def build_model(name: str, n_classes: int, in_channels: int, image_size: tuple[int, int],
                options: ModelOptions | None = None) -> FeatureModel:
    """The model ``name`` for (B, in_channels, *image_size) inputs and ``n_classes`` logits, with
    ``options.weights`` loaded and ``options.freeze`` applied."""
    options = options or ModelOptions()
    try:  # operator.index accepts numpy integers, refuses floats and strings
        valid = operator.index(n_classes) >= 1 and operator.index(in_channels) >= 1
    except TypeError:
        valid = False
    if not valid:
        raise UserError(f"build_model: n_classes ({n_classes!r}) and in_channels ({in_channels!r}) "
                        "must be positive integers")
    if len(image_size) != 2 or min(image_size) < 1:
        raise UserError(f"build_model: image_size must be (height, width) in pixels, got {image_size!r}")
    n_classes, in_channels, image_size = int(n_classes), int(in_channels), (int(image_size[0]), int(image_size[1]))
    if name.startswith(TIMM_PREFIX):
        from .timm_models import timm_model  # imports timm, only now

        model = timm_model(name[len(TIMM_PREFIX):], n_classes, in_channels, image_size, options)
    elif name in MODELS:
        if options.pretrained == "imagenet" and name not in PRETRAINED_MODELS:
            raise UserError(f"pretrained: imagenet is available for {', '.join(PRETRAINED_MODELS)} and timm:<name> "
                            f"models only, not {name}; use pretrained: auto or none")
        model = MODELS[name](n_classes, in_channels, image_size, options)
    else:
        raise UserError(f"Unknown model '{name}'. Only {', '.join(MODELS)} and timm:<name> are supported.")
    if options.weights is not None:
        model.load_weights(read_state_dict(options.weights), options.weights)
    model.freeze(options.freeze)
    densify(model, in_channels, image_size)  # convs on maps of a few pixels run as one matrix product
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (frozen ones excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["MODELS", "FeatureModel", "ModelOptions", "build_model", "count_parameters"]
