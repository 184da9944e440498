"""The two GAN architectures for 28x28 one-channel images: the classic fully connected GAN and a
small DCGAN.

    G = Generator("mlp", latent=100)   # (B, 100) noise -> (B, 1, 28, 28) images in [-1, 1] (Tanh)
    D = Discriminator("mlp")           # (B, 1, 28, 28) images -> (B,) logits (BCE-with-logits)

The discriminator returns logits, not probabilities: ``binary_cross_entropy_with_logits``
folds the sigmoid into the loss with the log-sum-exp trick, where sigmoid then log saturates to
log(0) = -inf as soon as D is confident. Architectures live in the plain dict ``ARCHS``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError

SIDE = 28  # image side in pixels; both architectures are built for 28x28
PIXELS = SIDE * SIDE  # 784
SLOPE = 0.2  # LeakyReLU negative slope in every discriminator (Radford et al.)
# dcgan: channels of the 14x14 maps (the 7x7 ones have twice as many). 32, not the usual 64:
# a quarter of the convolution work, so an MNIST epoch takes about a minute on a 2-core CPU
DCGAN_WIDTH = 32


def mlp_generator(latent: int) -> nn.Sequential:
    """latent -> 256 -> 512 -> 1024 -> 784: Linear + BatchNorm + ReLU, then Tanh onto [-1, 1].

    BatchNorm is the one addition to the plain Linear/ReLU stack, as in the DCGAN paper and the
    usual Keras/PyTorch versions of this GAN: without it this generator collapsed onto a single
    blob within the first MNIST epoch (every sample the same, judged one class) for each seed
    tried, and stayed there; with it, all ten digits appear within two epochs."""
    widths = [latent, 256, 512, 1024]
    layers: list[nn.Module] = []
    for c_in, c_out in zip(widths, widths[1:]):  # the BN shift makes the Linear bias redundant
        layers += [nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]
    layers += [nn.Linear(widths[-1], PIXELS), nn.Tanh(), nn.Unflatten(1, (1, SIDE, SIDE))]  # (B, 1, 28, 28)
    return nn.Sequential(*layers)


def mlp_discriminator() -> nn.Sequential:
    """784 -> 512 -> 256 -> 1 with LeakyReLU(0.2); the last Linear gives the logit."""
    return nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, 512), nn.LeakyReLU(SLOPE, inplace=True),
                         nn.Linear(512, 256), nn.LeakyReLU(SLOPE, inplace=True), nn.Linear(256, 1))


def dcgan_generator(latent: int) -> nn.Sequential:
    """latent -> (2W, 7, 7) -> (W, 14, 14) -> (1, 28, 28): stride-2 transposed convs, BatchNorm
    and ReLU between them (the DCGAN recipe), Tanh at the output."""
    w = DCGAN_WIDTH
    return nn.Sequential(
        nn.Linear(latent, 2 * w * 7 * 7, bias=False), nn.Unflatten(1, (2 * w, 7, 7)),  # (B, 2W, 7, 7)
        nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
        nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1, bias=False),  # (B, W, 14, 14)
        nn.BatchNorm2d(w), nn.ReLU(inplace=True),
        nn.ConvTranspose2d(w, 1, 4, stride=2, padding=1), nn.Tanh())  # (B, 1, 28, 28)


def dcgan_discriminator() -> nn.Sequential:
    """(1, 28, 28) -> (W, 14, 14) -> (2W, 7, 7) -> logit: stride-2 convs with LeakyReLU(0.2).
    No BatchNorm: real and fake images go through D in one batch, and batch statistics
    over that mix would let D tell them apart by the batch, not by the image."""
    w = DCGAN_WIDTH
    return nn.Sequential(
        nn.Conv2d(1, w, 4, stride=2, padding=1), nn.LeakyReLU(SLOPE, inplace=True),  # (B, W, 14, 14)
        nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.LeakyReLU(SLOPE, inplace=True),  # (B, 2W, 7, 7)
        nn.Flatten(), nn.Linear(2 * w * 7 * 7, 1))


ARCHS = {  # name -> (generator builder(latent), discriminator builder())
    "mlp": (mlp_generator, mlp_discriminator),
    "dcgan": (dcgan_generator, dcgan_discriminator),
}


def check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise UserError(f"Unknown GAN architecture '{arch}'. Only {', '.join(ARCHS)} are supported.")


def init_weights(module: nn.Module) -> None:
    """DCGAN's initialisation for conv layers and 2-d BatchNorm: N(0, 0.02) weights, BN scale
    N(1, 0.02). Linear layers and the MLP's BatchNorm1d keep PyTorch's defaults."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """(B, latent) standard-normal noise -> (B, 1, 28, 28) images in [-1, 1]."""

    def __init__(self, arch: str = "mlp", latent: int = 100):
        super().__init__()
        check_arch(arch)
        self.arch, self.latent = arch, latent
        self.net = ARCHS[arch][0](latent)
        self.net.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """(B, 1, 28, 28) images in [-1, 1] -> (B,) logits of 'real'."""

    def __init__(self, arch: str = "mlp"):
        super().__init__()
        check_arch(arch)
        self.arch = arch
        self.net = ARCHS[arch][1]()
        self.net.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def build_gan(arch: str, latent: int) -> tuple[Generator, Discriminator]:
    """A fresh (generator, discriminator) pair; initialisation draws from torch's global RNG."""
    check_arch(arch)
    return Generator(arch, latent), Discriminator(arch)
