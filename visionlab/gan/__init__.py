"""GANs on 28x28 one-channel images: the classic fully connected GAN and a small DCGAN, trained with
BCE-with-logits and Adam (2e-4, beta1 0.5), with per-batch loss logs, fixed-latent sample grids,
atomic checkpoints with resume, and a quality score from a visionlab classifier (Frechet distance
of its features, class coverage). An add-on: the core package never imports it.

    from visionlab.gan import GANConfig, run_gan
    record = run_gan(GANConfig(data="mnist", epochs=5, out="runs/gan-mnist"))
"""
from .config import GANConfig
from .models import ARCHS, Discriminator, Generator, build_gan
from .quality import frechet_distance, score_images
from .run import run_gan

__all__ = ["ARCHS", "Discriminator", "GANConfig", "Generator", "build_gan", "frechet_distance", "run_gan",
           "score_images"]
