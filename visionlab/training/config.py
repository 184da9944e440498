"""The training config: one typed record whose keys are the command line's flag names.

YAML gives values, flags override them, unknown keys and bad values are errors naming the key
and the valid choices. The resolved config is written as ``config.yaml`` next to every run.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import UserError

# batch_size and lr "auto" (resolved by TrainConfig.resolve_auto once the training split is known)
AUTO_BATCH, AUTO_BIG_BATCH, AUTO_STEPS = 128, 256, 100  # the bigger batch once an epoch has AUTO_STEPS of it
# small networks on small images go on to 512 (AUTO_SMALL_BATCH) once an epoch has AUTO_STEPS of that
AUTO_SMALL_BATCH, SMALL_NETS, SMALL_PIXELS = 512, ("mlp", "lenet"), 32 * 32
BASE_LR, MAX_LR_SCALE = 2e-3, 4  # lr per AUTO_BATCH images, scaled linearly with the batch from 1x to 4x


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    # data
    data: str = "digits"  # dataset: built-in name or path (see `visionlab data`)
    image_size: int | None = Field(None, ge=4, le=4096)  # square side in px; None: native
    channels: Literal["auto", "1", "3"] = "auto"  # auto keeps grayscale as 1 channel
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # validation share (of train if there is a test split)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # test share when the source has no test split
    classes: list[str] | None = None  # class names in label order, replacing the found ones
    strict: bool = False  # unusable files are errors instead of skips
    merge_splits: bool = False  # pool the source's own splits, then split by the fractions (80/10/10)
    max_train_images: int | None = Field(None, ge=1)  # cap on training images (stratified), e.g. for --quick
    # model
    model: str = "lenet"  # mlp | cnn2 | cnn3 | cnn | lenet | resnet18 | timm:<name>
    hidden: list[int] = [256, 128]  # mlp hidden widths
    activation: Literal["relu", "gelu", "tanh", "leaky_relu", "sigmoid"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # dropout probability in the classifier
    batch_norm: bool = False  # batch-norm in the small CNNs
    pretrained: Literal["auto", "imagenet", "none"] = "auto"  # ImageNet weights for resnet18 / timm
    weights: str | None = None  # local state dict (.safetensors or .pt) in torchvision's key layout
    freeze: str = "none"  # none | backbone | until:<layer> (e.g. until:layer3)
    small_input: Literal["auto", "true", "false"] = "auto"  # resnet18 3x3 stride-1 stem for < 64 px
    # optimisation
    augment: str | list[str] = "none"  # none | light | standard | strong | a list like [crop:4, flip]
    epochs: int = Field(10, ge=1)  # passes over the training set
    batch_size: int | Literal["auto"] = "auto"  # images per step; auto: 256 when the training split has
    #   at least 25,600 images (100 steps an epoch), else 128; mlp and lenet on images of at most
    #   32x32 pixels: 512 from 51,200 images
    lr: float | Literal["auto"] = "auto"  # peak learning rate; auto: 2e-3 (Adam with one-cycle suits the small
    #   nets) per 128 images of batch, linearly, at least 2e-3 and at most 8e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # sgd momentum (nesterov)
    schedule: Literal["onecycle", "cosine", "step", "triangle", "none"] = "onecycle"  # per-step lr schedule
    weight_decay: float = Field(0.0, ge=0.0)  # L2 (adam, sgd) or decoupled (adamw)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    class_weights: Literal["none", "balanced"] = "none"  # balanced: loss weights n / (k * count)
    grad_clip: float | None = Field(None, gt=0.0)  # max global gradient norm
    lookahead: bool = False  # airbench's weight averaging over the last 70% of steps (optim.Lookahead)
    early_stopping: int = Field(0, ge=0)  # stop after this many epochs without val-accuracy gain; 0 = off
    checkpoint_interval: float | Literal["auto"] = "auto"  # resume checkpoints: at most every this many
    #   seconds of training (0: after every epoch); auto: after every epoch unless writing one would cost
    #   more than 5% of the time since the last (see checkpoint.Cadence). The last epoch is always written.
    # engine
    device: Literal["auto", "cpu", "cuda"] = "auto"
    devices: int = Field(1, ge=1, le=1024)  # data-parallel processes on this machine (one per GPU); see distributed.py
    sync_bn: bool = False  # with several GPUs: batch-norm statistics over the global batch (SyncBatchNorm)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 where the device has it
    channels_last: bool = True  # NHWC memory layout: faster convolutions on CPU and tensor cores
    compile: bool = False  # torch.compile the model (pays off on long GPU runs)
    deterministic: bool = False  # bit-identical repeated CPU runs (deterministic kernels)
    seed: int = 0  # drives split, initialisation, shuffling and augmentation
    eval_batch_size: int | None = Field(None, ge=1)  # images per inference step; None: 256 on a CPU and 1024
    #   on a GPU up to 32x32 px, fewer above (2^18 and 2^20 pixels a batch: at 128 px 16 and 64)
    top_k: int = Field(5, ge=1)  # top-k accuracy reported besides top-1
    tta: Literal["none", "flip", "flip-translate"] = "none"  # test-time augmentation: average the logits of
    #   the image and its mirror (flip), and of both shifted one pixel (flip-translate); never flips digits
    # outputs
    out: str | None = None  # run folder; default runs/<model>-<dataset>-<time>
    wandb: Literal["off", "offline", "online"] = "off"  # Weights & Biases logging
    wandb_project: str = "visionlab"
    tensorboard: bool = False  # also write TensorBoard event files to <out>/tensorboard

    @field_validator("checkpoint_interval", "lr", mode="before")
    @classmethod
    def _number_or_auto(cls, value, info):
        if value == "auto":
            return value
        number = _number(value)
        accept, rule = NUMBER_RULES[info.field_name]
        if number is None or not accept(number):  # the rules also refuse nan
            raise ValueError(f"must be {rule} or auto")
        return number

    @field_validator("batch_size", mode="before")
    @classmethod
    def _images_or_auto(cls, value):
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError("must be a whole number of images >= 1, or auto")

    def resolve_auto(self, train_images: int, image_pixels: int) -> None:
        """batch_size and lr 'auto' -> numbers, for a training split of ``train_images`` images of
        ``image_pixels`` (height x width) each.

        A step has a fixed cost (on this 2-core CPU about 1.2 ms: oneDNN's per-call work and the
        small layers), so a big split trains faster in bigger batches: at 256 (measured 2026-11-22),
        lenet on MNIST 28,600 -> 33,600 images/s, the mlp 78,000 -> 122,000, the CIFAR-10 cnn 5,900
        -> 6,350 and lenet 21,000 -> 25,100. The lr grows with the batch (the linear scaling rule).
        Test accuracy at 256 and 4e-3 against 128 and 2e-3, mean over seeds: MNIST, 2 epochs, lenet
        -0.04 points (4 seeds), cnn -0.07, mlp -0.04 (2 seeds); CIFAR-10, 5 epochs, cnn +0.01, lenet
        -0.2 (2 seeds), each within the spread between seeds. A small split keeps 128, so that its
        epochs have steps enough.

        The small networks on small images, where that fixed cost is the largest share of a step
        (lenet on MNIST: 1.2 of 5.4 ms at 256), go on to 512: on 2026-12-06's host lenet 44,000 ->
        50,000 images/s, the mlp 166,000 -> 264,000 (on the earlier host lenet was no faster, 36,600
        -> 35,300). Test accuracy at 512 and 8e-3 against 256 and 4e-3 on MNIST: 10 epochs (the
        default) lenet -0.01, mlp +0.03 points (2 seeds); 2 epochs lenet -0.07 (4 seeds), mlp -0.14
        (2 seeds). Not the cnn: its 28x28 activations at 512 (26 MB) outgrow the caches, and it
        trained slower (13,400 -> 11,700 images/s); nor larger images, whose steps are mostly
        arithmetic.
        """
        if self.batch_size == "auto":
            small = self.model in SMALL_NETS and image_pixels <= SMALL_PIXELS
            sizes = (AUTO_SMALL_BATCH, AUTO_BIG_BATCH) if small else (AUTO_BIG_BATCH,)
            self.batch_size = next((size for size in sizes if train_images >= AUTO_STEPS * size), AUTO_BATCH)
        if self.lr == "auto":
            self.lr = BASE_LR * min(max(self.batch_size / AUTO_BATCH, 1), MAX_LR_SCALE)

    def model_options(self):
        from ..models import ModelOptions

        return ModelOptions(hidden=list(self.hidden), activation=self.activation, dropout=self.dropout,
                            batch_norm=self.batch_norm, pretrained=self.pretrained, weights=self.weights,
                            freeze=self.freeze, small_input=self.small_input)


NUMBER_RULES = {  # field -> (test, what it asks for): the number-or-auto keys
    "checkpoint_interval": (lambda x: x >= 0, "a number of seconds >= 0 (0: every epoch)"),
    "lr": (lambda x: 0 < x < math.inf, "a number > 0,"),
}


def _number(value) -> float | None:
    """A YAML or flag value as a float; None for text, booleans and anything else."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _one_line(exc: ValidationError, where: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(config)"
    if err["type"] == "extra_forbidden":
        valid = ", ".join(TrainConfig.model_fields)
        return f"{where}unknown key '{key}'; valid keys: {valid}"
    message = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
    return f"{where}bad value for '{key}': {message} (got {err.get('input')!r})"


def make_config(values: dict, where: str = "") -> TrainConfig:
    """Validate a dict (keys may use '-' or '_') into a TrainConfig; one clear line on error."""
    clean = {str(k).replace("-", "_"): v for k, v in values.items()}
    try:
        return TrainConfig(**clean)
    except ValidationError as exc:
        raise UserError(_one_line(exc, where)) from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"{path}: cannot read config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config is a mapping of keys to values, got {type(data).__name__}")
    return data


def resume_config_file(out: str | None) -> Path:
    """``--resume``: the run folder's config.yaml, or one line saying why there is nothing to resume."""
    if not out:
        raise UserError("--resume needs --out RUN_DIR (the run to continue)")
    path = Path(out) / "config.yaml"
    if not path.exists():
        raise UserError(f"{out}: nothing to resume (no config.yaml); run without --resume to start")
    return path


def load_config(path: str | Path | None, overrides: dict) -> TrainConfig:
    """YAML values (if a file is given), then the overrides (flags that were set)."""
    values = read_yaml(path) if path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return make_config(values, where=f"{path}: " if path else "")


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
