"""The GAN config: one typed record, checked when it is made; written into ``gan.json``.

The defaults are the classic recipe (Goodfellow et al. 2014 as trained by Radford et al. 2015):
Adam at 2e-4 with beta1 0.5 for both networks, batches of 128, a 100-dimensional latent.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

DEVICES = ("auto", "cpu", "cuda")
ARCH_NAMES = ("mlp", "dcgan")  # models.ARCHS has these keys (tests/test_gan.py checks)


@dataclass
class GANConfig:
    data: str = "digits"  # dataset: built-in name or path; resized to 28x28, one channel
    out: str | None = None  # output folder; None: runs/gan-<data>
    arch: str = "mlp"  # mlp (fully connected) | dcgan (convolutional)
    epochs: int = 15  # passes over the training split (MNIST, mlp: clean digits by 15, about 3 min on 2 cores)
    batch_size: int = 128  # real images per step (and as many generated ones)
    lr: float = 2e-4  # Adam learning rate, generator and discriminator alike
    beta1: float = 0.5  # Adam's first-moment decay; 0.9 makes GAN training oscillate
    latent: int = 100  # dimensions of the generator's standard-normal input
    seed: int = 0  # drives initialisation, shuffling, noise, the fixed grid latents and the split
    device: str = "auto"  # auto (cuda if visible) | cpu | cuda
    grid: int = 16  # samples in each progress grid (a square number: 16 -> 4x4)
    quality_samples: int = 2000  # generated images scored per epoch
    classifier_epochs: int = 1  # epochs of the judging classifier (lenet; MNIST: 98.7% after 1); cached in out
    max_train_images: int | None = None  # cap on training images (the first of a seeded shuffle), for tests

    def __post_init__(self):
        from .models import check_arch  # torch: imported when a config is made, not by the CLI parser

        check_arch(self.arch)
        if self.device not in DEVICES:
            raise UserError(f"Invalid device '{self.device}'. Only {', '.join(DEVICES)} are supported.")
        for name in ("epochs", "batch_size", "latent", "quality_samples", "classifier_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"Invalid {name} {value!r}: a positive integer.")
        if self.batch_size < 2:
            raise UserError("Invalid batch_size 1: the dcgan generator's BatchNorm needs at least 2 images.")
        if self.max_train_images is not None and self.max_train_images < 2:
            raise UserError(f"Invalid max_train_images {self.max_train_images!r}: at least 2.")
        side = round(self.grid ** 0.5)
        if self.grid < 1 or side * side != self.grid:
            raise UserError(f"Invalid grid {self.grid!r}: a square number of samples (4, 9, 16, 25, ...).")
        if not self.lr > 0 or not 0 <= self.beta1 < 1:
            raise UserError(f"Invalid lr {self.lr!r} or beta1 {self.beta1!r}: lr > 0 and 0 <= beta1 < 1.")
        if self.out is None:
            self.out = str(default_out(self.data))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def default_out(data: str) -> Path:
    """runs/gan-<data>: the source's name without folders or extensions (mnist-png.tar.gz -> mnist-png)."""
    return Path("runs") / f"gan-{Path(data).name.split('.')[0] or 'data'}"
