"""Segmentation models: one ``build_seg_model(name, ...)`` over a plain dict of builders.

    model = build_seg_model("deeplabv3plus", n_classes=19, encoder="resnet18", pretrained="auto")
    logits = model(x)        # (B, 3, H, W) normalised float -> (B, n_classes, H, W), H and W
                             # multiples of model.stride (loop.py pads other sizes)

    deeplabv3plus        segmentation-models-pytorch's DeepLabV3+ (ResNet-18/34 encoder, output
                         stride 16, a light decoder: ``decoder_channels``)
    deeplabv3            torchvision's DeepLabV3 on MobileNetV3-Large (the CPU-sized one)
    deeplabv3-resnet50   torchvision's DeepLabV3 on ResNet-50 (the paper's; slow on a CPU)

Encoder weights follow visionlab's ``pretrained`` rule (models/resnet.py): ``imagenet`` must get
torchvision's ImageNet file, ``auto`` uses it when cached or quick to download and otherwise logs
one line and trains from scratch, ``none`` never touches the network. The smp encoders are
torchvision ResNets (same modules, same keys), so torchvision's ImageNet files, in the torch hub
cache the rest of visionlab uses, load into them as they are; smp's own download path (the
Hugging Face hub) is never used.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..models.resnet import IMAGENET_MEAN, IMAGENET_STD
from ..models.resnet import imagenet_state as resnet_imagenet_state

ENCODERS = ("resnet18", "resnet34")  # deeplabv3plus encoders


class TorchvisionSeg(nn.Module):
    """torchvision's segmentation models return {'out': logits}; visionlab's return the logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]  # (B, K, H, W), already upsampled to the input size


def imagenet_weights(arch: str):
    """torchvision's ImageNet weights enum for an encoder or backbone name."""
    from torchvision import models

    weights = {"resnet18": models.ResNet18_Weights, "resnet34": models.ResNet34_Weights,
               "resnet50": models.ResNet50_Weights, "mobilenet_v3_large": models.MobileNet_V3_Large_Weights}
    return weights[arch].IMAGENET1K_V1


def imagenet_state(arch: str, pretrained: str) -> tuple[dict[str, torch.Tensor] | None, str]:
    """(ImageNet state dict or None, a note for run.json): models/resnet.py's rule for this backbone."""
    if pretrained == "none":
        return None, "from scratch (pretrained: none)"
    weights = imagenet_weights(arch)
    hint = f"use --pretrained none, or put {weights.url} in {Path(torch.hub.get_dir()) / 'checkpoints'}"
    return resnet_imagenet_state(pretrained, weights, arch, hint)


def deeplabv3plus(n_classes: int, encoder: str, pretrained: str, decoder_channels: int) -> nn.Module:
    if encoder not in ENCODERS:
        raise UserError(f"Invalid encoder '{encoder}'. Only {', '.join(ENCODERS)} are supported.")
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise UserError("deeplabv3plus needs segmentation-models-pytorch: pip install 'visionlab[segment]'") from None
    model = smp.DeepLabV3Plus(encoder_name=encoder, encoder_weights=None, classes=n_classes,
                              decoder_channels=decoder_channels)
    state, note = imagenet_state(encoder, pretrained)
    if state is not None:
        model.encoder.load_state_dict(state)  # smp's ResNetEncoder drops the fc.* keys itself
    model.stride = 32  # smp checks that H and W divide by 2 ** encoder_depth
    return _tag(model, state is not None, note)


def deeplabv3(n_classes: int, encoder: str, pretrained: str, decoder_channels: int,
              backbone: str = "mobilenet_v3_large") -> nn.Module:
    """torchvision's DeepLabV3 (ASPP head, no aux head); ``encoder`` and ``decoder_channels``
    do not apply and are ignored."""
    from torchvision.models import segmentation

    build = {"mobilenet_v3_large": segmentation.deeplabv3_mobilenet_v3_large,
             "resnet50": segmentation.deeplabv3_resnet50}[backbone]
    net = build(weights=None, weights_backbone=None, num_classes=n_classes, aux_loss=False)
    state, note = imagenet_state(backbone, pretrained)
    if state is not None:
        # the backbone is the ImageNet net's feature extractor: mobilenet's 'features.*' lose
        # their prefix, ResNet keys keep theirs; the classifier and fc have no place here
        state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith(("classifier.", "fc."))}
        missing, unexpected = net.backbone.load_state_dict(state, strict=False)
        if missing:
            raise UserError(f"{backbone}: the ImageNet weights lack backbone keys ({', '.join(missing[:3])} ...)")
    model = TorchvisionSeg(net)
    model.stride = 8 if backbone == "resnet50" else 16  # any size works; multiples keep every stage aligned
    return _tag(model, state is not None, note)


def _tag(model: nn.Module, used: bool, note: str) -> nn.Module:
    model.pretrained_used, model.pretrained_note = used, note
    model.normalization = (IMAGENET_MEAN, IMAGENET_STD) if used else None  # None: the dataset's statistics
    return model


MODELS = {
    "deeplabv3plus": deeplabv3plus,
    "deeplabv3": deeplabv3,
    "deeplabv3-resnet50": lambda n, e, p, d: deeplabv3(n, e, p, d, backbone="resnet50"),
}


def check_model_name(name: str) -> None:
    if name not in MODELS:
        raise UserError(f"Unknown model '{name}'. Only {', '.join(MODELS)} are supported.")


def build_seg_model(name: str, n_classes: int, encoder: str = "resnet18", pretrained: str = "auto",
                    decoder_channels: int = 256) -> nn.Module:
    """The model ``name`` for n_classes; its attributes: n_classes, stride (inputs are padded to a
    multiple of it), normalization ((mean, std) its weights need, or None), pretrained_used/_note."""
    check_model_name(name)
    if pretrained not in ("auto", "imagenet", "none"):
        raise UserError(f"Invalid pretrained '{pretrained}'. Only auto, imagenet and none are supported.")
    if n_classes < 1:
        raise UserError(f"a segmentation model needs at least one class, got {n_classes}")
    model = MODELS[name](n_classes, encoder, pretrained, decoder_channels)
    model.n_classes = n_classes
    return model
