"""resnet18: torchvision's ResNet-18 with a new head, optional ImageNet weights, small-input stem.

The module is torchvision's ``ResNet`` itself (subclassed, not wrapped), so its state dict has
torchvision's key layout and a torchvision checkpoint loads as is. Where the weights come from:

    weights: PATH         that file (``base.read_state_dict``: safetensors, or weights_only torch.load)
    pretrained: imagenet  torchvision's IMAGENET1K_V1, downloaded and hash-checked by torchvision;
                          offline, an error saying what to do instead
    pretrained: auto      the same file when it is in torch hub's cache or downloads within
                          AUTO_DOWNLOAD_S seconds; otherwise one warning and training from scratch
    pretrained: none      from scratch, never touching the network
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import ResNet18_Weights
from torchvision.models.resnet import BasicBlock, ResNet

from ..errors import UserError
from .base import FeatureModel, ModelOptions, adapt_conv_weight, adapt_stats, read_state_dict

logger = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]  # the statistics IMAGENET1K_V1 was trained with, RGB
IMAGENET_STD = [0.229, 0.224, 0.225]
AUTO_DOWNLOAD_S = 20.0  # pretrained: auto gives up on a download not finished in this many seconds (45 MB)
SMALL_INPUT_BELOW = 64  # small_input: auto uses the small stem when min(H, W) is below this


class ResNet18(FeatureModel, ResNet):
    """torchvision ResNet-18 for ``in_channels`` inputs and ``n_classes`` outputs.

    ``small_input``: conv1 becomes a 3x3 stride-1 conv and the max-pool an identity, so a 32x32
    image reaches layer4 at 4x4 instead of 1x1 (the CIFAR ResNet stem).
    """

    def __init__(self, n_classes: int, in_channels: int, small_input: bool):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=n_classes)
        self.arch = "resnet18"
        self.in_channels = in_channels
        self.small_input = small_input
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        elif in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision does
        self.feature_dim = self.fc.in_features  # 512
        # 'conv1' is the stem after bn1 + relu (before the max-pool); layerN is each stage's output.
        self._feature_layers = {"conv1": "relu", **{f"layer{i}": f"layer{i}" for i in range(1, 5)}}
        self._stage_params = {"conv1": ["conv1", "bn1"], **{f"layer{i}": [f"layer{i}"] for i in range(1, 5)}}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4); (B, 64, H, W) small_input
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, H/32, W/32); H/8 small_input
        return torch.flatten(self.avgpool(x), 1)  # (B, 512)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def _adapt_state_dict(self, state):
        """RGB conv1 filters are fitted to other channel counts; 7x7 ones cannot serve the 3x3
        small-input stem, which then keeps its fresh initialisation."""
        w = state.get("conv1.weight")
        if w is None or w.shape == self.conv1.weight.shape:
            return state, set()
        if w.shape[1] == 3 and self.in_channels != 3:
            state["conv1.weight"] = w = adapt_conv_weight(w, self.in_channels)
        if self.small_input and w.shape[2:] != self.conv1.weight.shape[2:]:
            del state["conv1.weight"]
            return state, {"conv1.weight"}
        return state, set()


def _download(url: str, dst: Path, timeout_s: float) -> None:
    """torch hub's download (hash-checked, written to a temporary file then renamed) in a daemon
    thread we stop waiting for after ``timeout_s``, so a dead network or proxy cannot stall the
    build. A download still running then may finish later and fill the cache for the next run."""
    errors: list[BaseException] = []
    match = torch.hub.HASH_REGEX.search(dst.name)

    def run():
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(dst), match.group(1) if match else None, progress=False)
        except BaseException as exc:  # reported to the caller, which decides
            errors.append(exc)

    thread = threading.Thread(target=run, name="resnet18-weights", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"download not finished within {timeout_s:g} s")
    if errors:
        raise errors[0]


def imagenet_state(pretrained: str, weights=ResNet18_Weights.IMAGENET1K_V1, arch: str = "resnet18",
                   hint: str | None = None) -> tuple[dict[str, torch.Tensor] | None, str]:
    """(state dict or None, note) of torchvision's ``weights`` for ``pretrained`` auto | imagenet | none.

    Shared with the segmentation encoders. ``hint``: what to do when ``imagenet`` cannot download."""
    filename = Path(urlparse(weights.url).path).name
    note = f"ImageNet {arch} weights (torchvision {weights.name}, {filename})"
    if pretrained == "none":
        return None, "from scratch (pretrained: none)"
    if pretrained == "imagenet":
        try:
            return weights.get_state_dict(progress=False, check_hash=True, weights_only=True), note
        except Exception as exc:
            hint = hint or f"use pretrained: none, or weights: PATH with a local copy of {weights.url}"
            raise UserError(f"{arch}: the ImageNet weights could not be downloaded ({exc}); {hint}") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    try:
        if not cached.is_file():
            _download(weights.url, cached, AUTO_DOWNLOAD_S)
        return read_state_dict(cached), note
    except Exception as exc:  # auto means "if available": any failure falls back to scratch
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        logger.warning("ImageNet weights unavailable (%s); training %s from scratch", reason, arch)
        return None, f"from scratch: ImageNet weights unavailable ({reason})"


def resnet18(n_classes: int, in_channels: int, image_size: tuple[int, int], options: ModelOptions) -> ResNet18:
    small = options.small_input == "true" or (options.small_input == "auto" and min(image_size) < SMALL_INPUT_BELOW)
    model = ResNet18(n_classes, in_channels, small_input=small)
    if options.weights is not None:  # build_model loads the file; it replaces the ImageNet weights
        return model
    state, note = imagenet_state(options.pretrained)
    if state is not None:
        model.load_weights(state, f"torchvision {ResNet18_Weights.IMAGENET1K_V1.name}", drop_head=True)
        model.normalization = adapt_stats(IMAGENET_MEAN, IMAGENET_STD, in_channels)
        if small and options.freeze != "none":
            logger.warning("resnet18: the small-input stem (conv1) starts from random weights, and freeze: %s "
                           "keeps it random; use small_input: false to keep the pretrained stem", options.freeze)
    model.pretrained_used, model.pretrained_note = state is not None, note
    return model
