"""``timm:<name>``: any timm model behind the visionlab feature interface (needs ``pip install timm``).

timm already splits ``forward_features`` (unpooled maps or tokens) from ``forward_head``;
``forward_head(x, pre_logits=True)`` gives the pooled (B, D) features and ``get_classifier()`` the
last Linear, which is exactly our split. timm is imported here, only when a timm model is asked for.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from ..errors import UserError
from .base import FeatureModel, ModelOptions, adapt_stats

logger = logging.getLogger(__name__)


class TimmModel(FeatureModel):
    """Wraps ``timm.create_model(...)`` as ``self.model``; its keys are the timm ones under ``model.``."""

    def __init__(self, arch: str, model: nn.Module, in_channels: int, image_size: tuple[int, int]):
        super().__init__()
        self.arch = arch
        self.model = model
        # One dry run finds D and which of timm's feature_info modules give (B, C, H, W) maps: a ViT's
        # blocks give (B, N, C) tokens and a Swin stage (B, H, W, C), neither a conv map we can show.
        # eval(): BatchNorm in train mode needs B > 1.
        modules = dict(model.named_modules())
        infos = [info for info in getattr(model, "feature_info", [])
                 if isinstance(info, dict) and info.get("module") in modules]
        self._feature_layers = {info["module"]: f"model.{info['module']}" for info in infos}
        was_training = model.training
        model.eval()
        with torch.no_grad():
            x = torch.zeros(1, in_channels, *image_size)
            maps = self.feature_maps(x)
            self.feature_dim = self.forward_features(x).shape[1]
        model.train(was_training)
        keep = {info["module"] for info in infos if torch.is_tensor(out := maps.get(info["module"]))
                and out.ndim == 4 and out.shape[1] == info.get("num_chs")}
        self._feature_layers = {name: path for name, path in self._feature_layers.items() if name in keep}
        self._stage_params = {}  # freeze: until:<layer> is resnet18 / small-net only; backbone works

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)  # (B, D)

    def get_classifier(self) -> nn.Module:
        return self.model.get_classifier()

    def _adapt_state_dict(self, state):
        """A weights file in timm's own layout gets our ``model.`` prefix."""
        if state and not all(k.startswith("model.") for k in state):
            state = {f"model.{k}": v for k, v in state.items()}
        return state, set()


def _create(timm, name: str, pretrained: bool, n_classes: int, in_channels: int) -> nn.Module:
    return timm.create_model(name, pretrained=pretrained, num_classes=n_classes, in_chans=in_channels)


def timm_model(name: str, n_classes: int, in_channels: int, image_size: tuple[int, int], options: ModelOptions) -> TimmModel:
    """Build ``timm:<name>`` (``name`` without the prefix); ``pretrained`` as for resnet18."""
    try:
        import timm
    except ImportError:
        raise UserError(f"timm:{name} needs the timm package: pip install timm") from None
    if not timm.is_model(name):
        raise UserError(f"Unknown timm model '{name}'; list the valid ones with timm.list_models('*{name}*')")
    pretrained = options.pretrained != "none" and options.weights is None  # build_model loads weights
    note = f"timm pretrained weights ({name})" if pretrained else "from scratch"
    try:
        model = _create(timm, name, pretrained, n_classes, in_channels)
    except Exception as exc:
        if not pretrained:
            raise UserError(f"timm:{name} could not be built ({exc})") from None
        if options.pretrained == "imagenet":
            raise UserError(f"timm:{name}: the pretrained weights could not be loaded ({exc}); use pretrained: none, "
                            "or weights: PATH with a local state dict") from None
        # timm downloads through huggingface_hub, whose own timeouts (HF_HUB_DOWNLOAD_TIMEOUT) bound the wait.
        logger.warning("Pretrained weights unavailable (%s); training timm:%s from scratch", exc, name)
        model, pretrained, note = _create(timm, name, False, n_classes, in_channels), False, f"from scratch ({exc})"
    wrapped = TimmModel(f"timm:{name}", model, in_channels, image_size)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if pretrained and "mean" in cfg and "std" in cfg:
        wrapped.normalization = adapt_stats(list(cfg["mean"]), list(cfg["std"]), in_channels)
    wrapped.pretrained_used, wrapped.pretrained_note = pretrained, note
    return wrapped
