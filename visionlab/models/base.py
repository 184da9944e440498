"""What every visionlab model shares: its options, its feature interface, freezing and weight files.

Every model is an ``nn.Module`` built on ``FeatureModel``, which splits the network the way timm
does: ``forward_features(x) -> (B, D)`` penultimate features (t-SNE and class centroids use
these), ``forward_head(features) -> (B, n_classes)`` logits, and ``forward`` is exactly one after
the other. ``feature_maps`` returns named conv maps through forward hooks, so no model has to
write a second forward pass for visualisation.

Weight files are read by ``read_state_dict`` only: ``.safetensors``, or ``torch.load`` with
``weights_only=True`` (never ``False``, no fallback), so a file can hold tensors but never code.
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError

logger = logging.getLogger(__name__)

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid}
PRETRAINED = ("auto", "imagenet", "none")
SMALL_INPUT = ("auto", "true", "false")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


@dataclass
class ModelOptions:
    """Options of ``build_model``; a model ignores the ones that do not apply to it."""

    hidden: list[int] = field(default_factory=lambda: [256, 128])  # mlp: width of each hidden layer
    activation: str = "relu"  # mlp, cnn2, cnn3, lenet: relu | gelu | tanh | leaky_relu | sigmoid
    dropout: float = 0.0  # probability, in [0, 1): after each mlp hidden layer, before the head of cnn/lenet
    batch_norm: bool = False  # cnn2, cnn3, lenet: BatchNorm2d after every conv
    pretrained: str = "auto"  # resnet18, timm: auto (if cached or quick to download) | imagenet | none
    weights: str | None = None  # a local .safetensors / .pt / .pth state dict in the model's key layout
    freeze: str = "none"  # none | backbone (all but the head) | until:<layer> (a conv_layer_names() entry)
    small_input: str = "auto"  # resnet18: 3x3 stride-1 stem, no max-pool; auto = when min(H, W) < 64

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise UserError(f"Invalid activation '{self.activation}'. Only {', '.join(ACTIVATIONS)} are supported.")
        if isinstance(self.hidden, int) or any(not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in self.hidden):
            raise UserError(f"Invalid hidden {self.hidden!r}: a list of positive layer widths, e.g. [256, 128].")
        self.hidden = list(self.hidden)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise UserError(f"Invalid dropout {self.dropout!r}: a probability in [0, 1).")
        if not isinstance(self.batch_norm, bool):
            raise UserError(f"Invalid batch_norm {self.batch_norm!r}: true or false.")
        if self.pretrained not in PRETRAINED:
            raise UserError(f"Invalid pretrained '{self.pretrained}'. Only {', '.join(PRETRAINED)} are supported.")
        if isinstance(self.small_input, bool):  # YAML reads `small_input: true` as a bool
            self.small_input = str(self.small_input).lower()
        if self.small_input not in SMALL_INPUT:
            raise UserError(f"Invalid small_input '{self.small_input}'. Only {', '.join(SMALL_INPUT)} are supported.")
        if not isinstance(self.freeze, str) or not (self.freeze in ("none", "backbone") or self.freeze.startswith("until:")):
            raise UserError(f"Invalid freeze '{self.freeze}'. Only none, backbone and until:<layer> are supported.")
        if self.weights is not None:
            self.weights = str(self.weights)
            if not self.weights.lower().endswith(WEIGHT_SUFFIXES):
                raise UserError(f"Invalid weights '{self.weights}': a file ending in {', '.join(WEIGHT_SUFFIXES)}.")
            if self.pretrained == "imagenet":
                raise UserError("pretrained: imagenet and weights: PATH both given; choose one.")


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise UserError(f"Invalid activation '{name}'. Only {', '.join(ACTIVATIONS)} are supported.")
    return ACTIVATIONS[name]()


def adapt_stats(mean: list[float], std: list[float], in_channels: int) -> tuple[list[float], list[float]]:
    """RGB normalisation statistics for an ``in_channels`` input: gray gets the average of the three
    (timm's convention); other counts cycle R, G, B, matching how ``adapt_conv_weight`` repeats them."""
    if in_channels == 1:
        return [sum(mean) / 3], [sum(std) / 3]
    return [mean[c % 3] for c in range(in_channels)], [std[c % 3] for c in range(in_channels)]


def adapt_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(O, 3, k, k) RGB filters -> (O, in_channels, k, k) giving the same response to a gray image.

    One channel: the sum over R, G, B, which is what the RGB filters see when the gray channel is
    repeated three times, at a third of the cost. Other counts: R, G, B cycled and scaled by 3 / C.
    """
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    return weight[:, [c % 3 for c in range(in_channels)]] * (3 / in_channels)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local weight file, never running anything stored in it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif path.suffix.lower() in (".pt", ".pth"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise UserError(f"{path}: unknown weights format; use one of {', '.join(WEIGHT_SUFFIXES)}")
    except UserError:
        raise
    except Exception as exc:  # any parse failure means a bad file; weights_only means nothing in it ran
        if isinstance(exc, pickle.UnpicklingError):  # what weights_only raises on anything but tensors
            raise UserError(f"{path}: refused: the file holds pickled objects other than tensors, which could "
                            "run code; save a plain state dict (torch.save(model.state_dict())) or a .safetensors "
                            "file") from None
        first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: cannot read weights file ({first_line})") from None
    if isinstance(state, dict):  # checkpoints often wrap the state dict: {'model': ..., 'optimizer': ...}
        state = next((state[k] for k in ("state_dict", "model") if isinstance(state.get(k), dict)), state)
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise UserError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _first(keys, n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


class FeatureModel(nn.Module):
    """The interface every visionlab model provides on top of ``nn.Module``.

    A model sets ``feature_dim`` (D), ``normalization`` ((mean, std) its weights need, or None for
    the dataset's own statistics), ``_feature_layers`` (layer name -> dotted path of the module whose
    output is that conv map) and ``_stage_params`` (layer name -> parameter prefixes that
    ``freeze: until:<layer>`` freezes, in forward order), and implements ``forward_features`` and
    ``get_classifier`` (the head module, timm's name for it).
    """

    arch: str = "model"  # the build_model name, for messages
    feature_dim: int
    normalization: tuple[list[float], list[float]] | None = None
    pretrained_used: bool = False  # True when the weights came from ImageNet or a weights file
    pretrained_note: str = "from scratch"  # where the initial weights came from, for the report
    _feature_layers: dict[str, str] = {}
    _stage_params: dict[str, list[str]] = {}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, D)
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, n_classes)
        return self.get_classifier()(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, n_classes) logits
        return self.forward_head(self.forward_features(x))

    def conv_layer_names(self) -> list[str]:
        return list(self._feature_layers)

    def feature_maps(self, x: torch.Tensor, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
        """{layer name: (B, C, H, W) map} for ``layers`` (default: all), from one forward pass.

        Runs in the model's current mode and keeps the autograd graph (Grad-CAM needs it): callers
        wanting plain maps use ``model.eval()`` and ``torch.inference_mode()``.
        """
        names = self.conv_layer_names() if layers is None else list(layers)
        unknown = [n for n in names if n not in self._feature_layers]
        if unknown:
            raise UserError(f"Unknown layer(s) {', '.join(unknown)}; valid: {', '.join(self._feature_layers) or '(none)'}")
        maps: dict[str, torch.Tensor] = {}
        post = getattr(self, "_map_post", {})  # name -> module applied to the hooked output
        hooks = [self.get_submodule(self._feature_layers[n]).register_forward_hook(
            lambda module, inputs, output, n=n: maps.__setitem__(n, post[n](output) if n in post else output))
            for n in names]
        try:
            self.forward_features(x)
        finally:
            for hook in hooks:
                hook.remove()
        return maps

    def train(self, mode: bool = True):
        """As ``nn.Module.train``, but a BatchNorm whose parameters are all frozen stays in eval mode:
        a frozen layer must not keep updating its running statistics either."""
        super().train(mode)
        if mode:
            for m in self.modules():
                params = list(m.parameters(recurse=False))
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and params and not any(p.requires_grad for p in params):
                    m.eval()
        return self

    def freeze(self, spec: str) -> None:
        """Apply ``ModelOptions.freeze``: none | backbone | until:<layer>."""
        if spec == "none":
            return
        if spec == "backbone":
            keep = {id(p) for p in self.get_classifier().parameters()}
            frozen = [p for p in self.parameters() if id(p) not in keep]
        else:
            layer = spec.removeprefix("until:")
            stages = list(self._stage_params)
            if layer not in stages:
                valid = ", ".join(["none", "backbone"] + [f"until:{s}" for s in stages])
                raise UserError(f"Invalid freeze '{spec}' for {self.arch}. Only {valid} are supported.")
            prefixes = tuple(f"{p}." for s in stages[: stages.index(layer) + 1] for p in self._stage_params[s])
            frozen = [p for name, p in self.named_parameters() if name.startswith(prefixes)]
        for p in frozen:
            p.requires_grad_(False)
        self.train(self.training)  # puts the frozen BatchNorm layers into eval mode now

    def _adapt_state_dict(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], set[str]]:
        """Hook for a model to fit foreign weights to itself: returns the state and the keys it chose
        to leave at their fresh initialisation."""
        return state, set()

    def load_weights(self, state: dict[str, torch.Tensor], source: str, drop_head: bool | None = None) -> None:
        """Load ``state`` (read from ``source``) strictly, except the head: dropped when ``drop_head``,
        or when None, when its shapes differ (another class count). Any other mismatch is an error."""
        state, fresh = self._adapt_state_dict(dict(state))
        own = self.state_dict()
        head = next(name for name, m in self.named_modules() if m is self.get_classifier())
        head_keys = {k for k in own if k.startswith(f"{head}.")}
        if drop_head is None:
            drop_head = any(k in state and state[k].shape != own[k].shape for k in head_keys)
        if drop_head:
            state = {k: v for k, v in state.items() if k not in head_keys}
            fresh |= head_keys
        missing = {k for k in own.keys() - state.keys() - fresh if not k.endswith("num_batches_tracked")}
        unexpected = state.keys() - own.keys() - (head_keys if drop_head else set())
        mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                      for k in sorted(state.keys() & own.keys()) if state[k].shape != own[k].shape]
        found = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatch (file vs model)": mismatched}
        problems = [f"{what}: {_first(keys)}" for what, keys in found.items() if keys]
        if problems:
            raise UserError(f"{source}: weights do not fit {self.arch}; " + "; ".join(problems))
        self.load_state_dict(state, strict=False)
        if drop_head:
            logger.info("%s: head %s not loaded (new head for this class count)", source, head)
        self.pretrained_used, self.pretrained_note = True, f"weights from {source}"
