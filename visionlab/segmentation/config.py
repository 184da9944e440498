"""The segmentation training config: one typed record whose keys are ``visionlab segment train``'s
flag names (dashes as underscores). YAML (--config) gives values, flags override them, unknown
keys and bad values are one line naming the key; the resolved config is written as config.yaml.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import UserError


class SegConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    # data
    data: str  # dataset folder: images/ + masks/, or the Cityscapes or IDD layout
    layout: Literal["auto", "folders", "cityscapes", "idd"] = "auto"
    classes: str | None = None  # class-map YAML; None: the layout's built-in (Cityscapes 19, IDD level 3)
    image_size: tuple[int, int] | None = None  # (H, W) px every pair is resized to on decode; None: native
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # val share of a dataset without a val split
    # augmentation (joint image + mask, on the device)
    crop: tuple[int, int] | None = None  # (h, w) px training crop; None: the whole (scaled) image
    scale: tuple[float, float] = (0.75, 1.5)  # random zoom range
    flip: bool = True  # mirror left-right half the time (streets look the same mirrored)
    jitter: float = Field(0.2, ge=0.0, le=1.0)  # brightness/contrast/saturation within 1 +- jitter
    # model
    model: str = "deeplabv3plus"  # deeplabv3plus | deeplabv3 | deeplabv3-resnet50
    encoder: Literal["resnet18", "resnet34"] = "resnet18"  # deeplabv3plus encoder
    decoder_channels: int = Field(128, ge=8)  # deeplabv3plus ASPP/decoder width (smp's default 256)
    pretrained: Literal["auto", "imagenet", "none"] = "auto"  # ImageNet encoder weights
    # optimisation
    epochs: int = Field(30, ge=1)  # passes over the training set
    batch_size: int = Field(16, ge=2)  # images per step (batch-norm needs two)
    lr: float = Field(2e-3, gt=0.0)  # peak learning rate of the schedule
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # sgd momentum
    weight_decay: float = Field(1e-4, ge=0.0)
    schedule: Literal["onecycle", "cosine", "step", "none"] = "onecycle"  # per-step lr schedule
    grad_clip: float | None = Field(None, gt=0.0)  # max global gradient norm
    # engine
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 where the device has it
    channels_last: bool = True  # NHWC activations: faster convolutions with bf16 on CPU and GPU
    seed: int = 0  # drives the split, initialisation, shuffling and augmentation
    eval_batch_size: int = Field(32, ge=1)  # images per inference step
    # outputs
    out: str | None = None  # run folder; default runs/segment-<model>-<data>-<time>
    wandb: Literal["off", "offline", "online"] = "off"  # Weights & Biases logging
    wandb_project: str = "visionlab"
    tensorboard: bool = False  # also write TensorBoard event files to <out>/tensorboard

    @field_validator("image_size", "crop")
    @classmethod
    def _positive(cls, value):
        if value is not None and min(value) < 8:
            raise ValueError("sizes are (height, width) of at least 8 px")
        return value


def make_seg_config(values: dict, where: str = "") -> SegConfig:
    """Validate a dict (keys may use '-' or '_') into a SegConfig; one clear line on error."""
    clean = {str(k).replace("-", "_"): v for k, v in values.items()}
    try:
        return SegConfig(**clean)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(config)"
        if err["type"] == "extra_forbidden":
            raise UserError(f"{where}unknown key '{key}'; valid keys: {', '.join(SegConfig.model_fields)}") from None
        raise UserError(f"{where}bad value for '{key}': {err['msg']} (got {err.get('input')!r})") from None
