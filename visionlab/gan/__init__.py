"""GANs on 28x28 one-channel images: the classic fully connected GAN and a small DCGAN, trained with
BCE-with-logits and Adam (2e-4, beta1 0.5), with per-batch loss logs, fixed-latent sample grids,
atomic checkpoints with resume, and a quality score from a visionlab classifier (Frechet distance
of its features, class coverage). An add-on: the core package never imports it.

    from visionlab.gan import GANConfig, run_gan
    record = run_gan(GANConfig(data="mnist", epochs=5, out="runs/gan-mnist"))
"""
import importlib

_EXPORTS = {"GANConfig": "config", "ARCHS": "models", "Discriminator": "models", "Generator": "models",
            "build_gan": "models", "frechet_distance": "quality", "score_images": "quality", "run_gan": "run"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Exports load on first use, so that `visionlab --help` (which registers `gan`) needs no torch."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
