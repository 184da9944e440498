"""The quality score: a visionlab classifier trained on the same real data judges the samples.

An Inception-free FID for 28x28 digits: a LeNet (visionlab's ``lenet``) is trained once on the
real training split, on the generator's [-1, 1] pixel scale, and cached in the run folder. Each
epoch, ``quality_samples`` images generated from a fixed latent batch go through it once, and
the reduction is a pure function of its outputs (features, probabilities):

    frechet_distance   ||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^1/2) between Gaussians fitted to
                       the classifier's penultimate features (64-d) of generated and real test images
    coverage           fraction of classes predicted for at least a fifth of their uniform share
                       of the samples (mode collapse drops classes)
    class_entropy      entropy of the predicted-class histogram / log(n_classes): 1 = uniform
    confidence         mean max class probability: sharp, recognisable digits score near 1

``real_frechet_distance`` scores as many real validation images the same way: the floor that
sampling noise alone gives, so a generator's distance can be read against it.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from .train import fixed_latents, sample, to_unit_range

log = logging.getLogger(__name__)
CLASSIFIER_FILE = "classifier.safetensors"
CLASSIFIER_BATCH = 128  # images per classifier training step
CLASSIFIER_LR = 2e-3  # peak one-cycle learning rate: the training engine's default for the small nets
CLASSIFIER_MIN_STEPS = 200  # a small source (digits: 12 batches an epoch) gets more epochs, up to this
COVERAGE_SHARE = 0.2  # a class counts as covered with at least 0.2 / n_classes of the predictions
BATCH = 512  # images per classifier step and inference chunk


def build_classifier(n_classes: int):
    """visionlab's lenet for (B, 1, 28, 28) inputs in [-1, 1]: features (B, 64), logits (B, n_classes)."""
    from ..models import build_model

    return build_model("lenet", n_classes, 1, (28, 28))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, n_classes: int, epochs: int, seed: int):
    """Adam with visionlab's one-cycle schedule on uint8 images (N, 28, 28, 1); at least
    CLASSIFIER_MIN_STEPS steps, so that a small source still gives a usable judge."""
    from ..training.optim import make_optimizer, make_scheduler

    with torch.random.fork_rng(devices=[]):  # leaves the global RNG as it was: cached or not, G is the same
        torch.manual_seed(seed)
        model = build_classifier(n_classes).to(images.device)
    steps_per_epoch = math.ceil(len(images) / CLASSIFIER_BATCH)
    epochs = max(epochs, math.ceil(CLASSIFIER_MIN_STEPS / steps_per_epoch))
    optimizer = make_optimizer(model, "adam", CLASSIFIER_LR, 0.0, 0.9)
    scheduler = make_scheduler(optimizer, "onecycle", CLASSIFIER_LR, epochs * steps_per_epoch)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(images), generator=generator, device=images.device)
        for idx in perm.split(CLASSIFIER_BATCH):
            loss = F.cross_entropy(model(to_unit_range(images[idx])), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


def load_or_train_classifier(out: Path, dataset, config, device: torch.device):
    """The cached judge in out/classifier.safetensors if it was trained on this source, else a new one."""
    from ..training import checkpoint

    path = out / CLASSIFIER_FILE
    key = {"source": dataset.source, "classes": dataset.classes, "train_images": len(dataset.train),
           "seed": config.seed, "epochs": config.classifier_epochs}
    n_classes = len(dataset.classes)
    if path.exists():
        tensors, meta = checkpoint.read(path)
        if meta.get("key") == key:
            model = build_classifier(n_classes).to(device)
            checkpoint.load_weights_into(model, tensors, path)
            return model.eval(), meta
        log.info("%s was trained on other data; training a new one", path)
    train = torch.from_numpy(np.array(dataset.train.images)).to(device)
    labels = torch.as_tensor(dataset.train.labels, dtype=torch.long, device=device)
    model = train_classifier(train, labels, n_classes, config.classifier_epochs, config.seed)
    test = to_unit_range(torch.from_numpy(np.array(dataset.test.images)).to(device))
    _, probs = features_and_probs(model, test)
    accuracy = float((probs.argmax(1) == np.asarray(dataset.test.labels)).mean()) if len(test) else math.nan
    meta = {"key": key, "test_accuracy": accuracy}
    checkpoint.save_weights(path, model, meta)
    log.info("quality classifier (lenet): test accuracy %.4f", accuracy)
    if accuracy < 2.0 / n_classes:
        log.warning("the quality classifier is barely above chance (%.3f): its scores mean little", accuracy)
    return model, meta


@torch.inference_mode()
def features_and_probs(model, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """One pass over (N, 1, 28, 28) images in [-1, 1]: features (N, D) float64 and class probabilities (N, K)."""
    model.eval()
    feats, probs = [], []
    for chunk in images.split(BATCH):
        f = model.forward_features(chunk)
        feats.append(f.double().cpu())
        probs.append(torch.softmax(model.forward_head(f).float(), 1).cpu())
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D)."""
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017):
    ||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^1/2).

    Tr((S1 S2)^1/2) is computed as Tr((S1^1/2 S2 S1^1/2)^1/2), the same number (the two matrices
    are similar), with symmetric eigendecompositions instead of ``scipy.linalg.sqrtm``: sqrtm of
    the non-symmetric product warns and returns complex noise when a covariance is singular,
    which it is for a collapsed generator (dead ReLU features), exactly the case to score."""
    from scipy import linalg

    w, v = linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # S1^1/2, symmetric
    inner = linalg.eigvalsh(root1 @ sigma2 @ root1)  # eigenvalues of a symmetric PSD matrix
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def reduce_scores(features: np.ndarray, probs: np.ndarray, real_stats) -> dict:
    """The quality numbers of one batch of images, from the classifier's outputs alone."""
    n_classes = probs.shape[1]
    counts = np.bincount(probs.argmax(1), minlength=n_classes)
    share = counts / max(counts.sum(), 1)
    nonzero = share[share > 0]
    return {"frechet_distance": frechet_distance(*gaussian_stats(features), *real_stats),
            "coverage": float((share >= COVERAGE_SHARE / n_classes).mean()),
            "class_entropy": float(abs((nonzero * np.log(nonzero)).sum()) / math.log(n_classes)),
            "confidence": float(probs.max(1).mean()),
            "class_share": [round(float(s), 4) for s in share]}


def score_images(model, images: torch.Tensor, real_stats) -> dict:
    """reduce_scores of (N, 1, 28, 28) images in [-1, 1]: the model runs once over them."""
    if len(images) < 2:
        raise UserError("the quality score needs at least 2 images")
    return reduce_scores(*features_and_probs(model, images), real_stats)


def reference_stats(model, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Feature mean and covariance of the real reference images (N, 1, 28, 28) in [-1, 1]."""
    return gaussian_stats(features_and_probs(model, images)[0])


def make_scorer(model, real_stats, config, device: torch.device):
    """score(G) -> quality dict: G's images from a fixed latent batch of config.quality_samples
    (the same every epoch, so epochs differ only by G), against reference_stats of real images."""
    z = fixed_latents(config.quality_samples, config.latent, config.seed + 2, device)

    def score(G) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in
                score_images(model, sample(G, z), real_stats).items()}

    return score


def plot_quality(history: list[dict], path: Path, real_distance: float | None = None) -> None:
    """Frechet distance (log scale) and coverage / class entropy / confidence against epochs."""
    from ..evaluation.plots import plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.22)
    axes[0].plot(epochs, [h["frechet_distance"] for h in history], "o-", color="#1f77b4", label="generated")
    if real_distance is not None:
        axes[0].axhline(real_distance, color="#2ca02c", linestyle="--", label="real images (floor)")
    axes[0].set_yscale("log")
    axes[0].set_title("classifier-feature Frechet distance (lower is better)")
    for key, color in (("coverage", "#2ca02c"), ("class_entropy", "#9467bd"), ("confidence", "#ff7f0e")):
        axes[1].plot(epochs, [h[key] for h in history], "o-", color=color, label=key)
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title("class coverage, entropy, confidence (higher is better)")
    for ax in axes:
        ax.set_xlabel("epoch (0 = untrained)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    fig.savefig(path, dpi=100)
    plt.close(fig)
