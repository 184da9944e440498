"""A small convolutional network in NumPy, forward and backward propagation written out by hand.

    x (N, C, H, W) -> conv KxK, F filters, same padding -> ReLU -> max pool 2
      -> flatten (N, F * H/2 * W/2) -> dense -> logits (N, n_classes) -> softmax cross-entropy

Parameters live in a plain dict of float64 arrays; ``loss_and_grads`` returns a dict of the same
keys, which ``gradient_check`` compares with central differences and SGD with momentum follows.
Training is written out as ``train_one_epoch``, ``evaluate`` and a short ``fit``; inputs are
standardised with the training images' mean and std (one scalar each).
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .conv import conv2d, conv2d_backward, maxpool2d, maxpool2d_backward

log = logging.getLogger(__name__)
PARAMS = ("conv_w", "conv_b", "dense_w", "dense_b")


@dataclass
class NetConfig:
    filters: int = 16  # convolution filters (output channels); 8 reach ~96% on digits, 16 ~97%
    kernel: int = 3  # convolution kernel side in pixels; padding keeps the image size
    epochs: int = 8  # passes over the training images (10 gave the same digits accuracy)
    batch_size: int = 32  # images per SGD step
    lr: float = 0.05  # peak SGD step size
    warmup: float = 0.1  # share of all steps spent ramping the step size up from 0; then cosine to 0
    momentum: float = 0.9  # SGD momentum coefficient
    weight_decay: float = 1e-4  # L2 penalty on the weights (not the biases), added to the gradient
    seed: int = 0  # initialisation and shuffling


def init_params(shape: tuple[int, int, int], n_classes: int, config: NetConfig, rng) -> dict:
    """Random weights for inputs of shape (C, H, W); H and W must be even (one 2x2 pool).

    Weights have std 1 / sqrt(3 * fan_in), the scale of PyTorch's default uniform init. He init
    (sqrt(2 / fan_in)) made the first steps at lr 0.05 unstable on MNIST, whose dense layer has
    3,136 inputs against digits' 256.
    """
    c, h, w = shape
    k, f = config.kernel, config.filters
    n_features = f * (h // 2) * (w // 2)
    return {
        "conv_w": rng.normal(0.0, np.sqrt(1.0 / (3 * c * k * k)), (f, c, k, k)),
        # 0.01, not 0: a zero bias puts every all-zero input window exactly on ReLU's kink, where
        # the derivative is undefined and a numerical gradient check cannot agree with any choice
        "conv_b": np.full(f, 0.01),
        "dense_w": rng.normal(0.0, np.sqrt(1.0 / (3 * n_features)), (n_features, n_classes)),
        "dense_b": np.zeros(n_classes),
    }


def forward(params: dict, x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """x (N, C, H, W) float64 -> logits (N, n_classes) and what backward needs."""
    pad = params["conv_w"].shape[-1] // 2
    z, conv_cache = conv2d(x, params["conv_w"], params["conv_b"], 1, pad)  # (N, F, H, W)
    a = np.maximum(z, 0.0)  # ReLU
    p, pool_cache = maxpool2d(a, 2)  # (N, F, H/2, W/2)
    flat = p.reshape(len(x), -1)  # (N, F*H/2*W/2)
    logits = flat @ params["dense_w"] + params["dense_b"]  # (N, n_classes)
    return logits, (conv_cache, z, pool_cache, p.shape, flat)


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient with respect to the logits: (softmax - onehot) / N."""
    shifted = logits - logits.max(axis=1, keepdims=True)  # exp cannot overflow
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(labels)
    loss = -log_probs[np.arange(n), labels].mean()
    dlogits = np.exp(log_probs)
    dlogits[np.arange(n), labels] -= 1.0
    return float(loss), dlogits / n


def backward(params: dict, dlogits: np.ndarray, cache: tuple) -> dict:
    """The forward pass in reverse, each step the chain rule for one layer."""
    conv_cache, z, pool_cache, pooled_shape, flat = cache
    grads = {"dense_w": flat.T @ dlogits, "dense_b": dlogits.sum(axis=0)}  # (D, K), (K,)
    dflat = dlogits @ params["dense_w"].T  # (N, D)
    da = maxpool2d_backward(dflat.reshape(pooled_shape), pool_cache)  # (N, F, H, W)
    dz = da * (z > 0)  # ReLU passes the gradient where it was active
    _, grads["conv_w"], grads["conv_b"] = conv2d_backward(dz, conv_cache, need_dx=False)  # the image's: unused
    return grads


def loss_and_grads(params: dict, x: np.ndarray, labels: np.ndarray, weight_decay: float = 0.0):
    """Loss (cross-entropy + weight_decay/2 * |weights|^2) and its gradient for every parameter."""
    logits, cache = forward(params, x)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    grads = backward(params, dlogits, cache)
    for name in ("conv_w", "dense_w"):
        loss += 0.5 * weight_decay * float(np.sum(params[name] ** 2))
        grads[name] = grads[name] + weight_decay * params[name]
    return loss, grads


def gradient_check(params: dict, x, labels, *, eps: float = 1e-6, max_entries: int = 40, seed: int = 0) -> dict:
    """Relative error between backprop and central differences, per parameter array.

    For each array, up to ``max_entries`` entries (chosen at random, all if fewer) are nudged by
    +-eps and (L(p + eps) - L(p - eps)) / 2eps is compared with the analytic gradient there:
    |g_analytic - g_numeric| / (|g_analytic| + |g_numeric|), norms over the checked entries.
    A norm ratio rather than a per-entry maximum, so a near-zero entry cannot blow it up.
    Around 1e-7 or less means the backward pass is right; 1e-2 means it is wrong.
    """
    rng = np.random.default_rng(seed)
    _, grads = loss_and_grads(params, x, labels, 1e-3)
    errors = {}
    for name in PARAMS:
        p = params[name].flat  # writes through .flat nudge the parameter in place
        idx = rng.choice(params[name].size, size=min(max_entries, params[name].size), replace=False)
        numeric = np.empty(len(idx))
        for i, j in enumerate(idx):
            old = p[j]
            p[j] = old + eps
            up, _ = loss_and_grads(params, x, labels, 1e-3)
            p[j] = old - eps
            down, _ = loss_and_grads(params, x, labels, 1e-3)
            p[j] = old
            numeric[i] = (up - down) / (2 * eps)
        analytic = grads[name].reshape(-1)[idx]
        denom = np.linalg.norm(analytic) + np.linalg.norm(numeric)
        errors[name] = float(np.linalg.norm(analytic - numeric) / denom) if denom > 0 else 0.0
    return errors


@contextmanager
def one_blas_thread():
    """Run NumPy's BLAS on one thread. These matrices are small (at most a few 10k x 16), so a
    second thread saves little, and on a busy 2-core machine threads that wait for each other
    made every step 3-4 times slower."""
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def predict_logits(params: dict, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits (N, n_classes) in batches: a batch's im2col matrix then stays in cache (batches of
    500 MNIST images were 40% slower per image than batches of 64)."""
    return np.concatenate([forward(params, x[i:i + batch_size])[0] for i in range(0, len(x), batch_size)])


def filter_activity(params: dict, x: np.ndarray) -> np.ndarray:
    """(F,) share of positions of x (N, C, H, W) where each conv filter's ReLU fires; 0 is dead."""
    pad = params["conv_w"].shape[-1] // 2
    fired = [(conv2d(x[i:i + 64], params["conv_w"], params["conv_b"], 1, pad)[0] > 0).mean(axis=(0, 2, 3))
             for i in range(0, len(x), 64)]
    return np.average(fired, axis=0, weights=[min(64, len(x) - i) for i in range(0, len(x), 64)])


def evaluate(params: dict, x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy)."""
    logits = predict_logits(params, x)
    loss, _ = softmax_cross_entropy(logits, labels)
    return loss, float((logits.argmax(axis=1) == labels).mean())


def lr_schedule(peak: float, n_steps: int, warmup: float) -> np.ndarray:
    """(n_steps,) learning rates: linear from ~0 to peak over the first warmup share of steps, then
    cosine down to ~0. Without the warm-up, the first large steps pushed 5 of 16 conv filters on
    MNIST to a negative bias for good (dead ReLUs); the cosine tail makes the last epochs quiet."""
    n_warm = max(1, int(warmup * n_steps))
    lrs = peak * 0.5 * (1.0 + np.cos(np.pi * np.arange(n_steps) / n_steps))
    lrs[:n_warm] *= np.arange(1, n_warm + 1) / n_warm
    return lrs


def train_one_epoch(params: dict, velocity: dict, x, labels, config: NetConfig, rng, lrs) -> tuple[float, float]:
    """One pass of SGD with momentum over shuffled batches, step i at rate lrs[i];
    returns the mean (loss, accuracy) over the batches seen."""
    order = rng.permutation(len(x))
    total_loss, correct = 0.0, 0
    for step, start in enumerate(range(0, len(x), config.batch_size)):
        batch = order[start:start + config.batch_size]
        logits, cache = forward(params, x[batch])
        loss, dlogits = softmax_cross_entropy(logits, labels[batch])
        grads = backward(params, dlogits, cache)
        for name in PARAMS:
            g = grads[name] + (config.weight_decay * params[name] if name.endswith("_w") else 0.0)
            velocity[name] = config.momentum * velocity[name] - lrs[step] * g
            params[name] += velocity[name]
        total_loss += loss * len(batch)
        correct += int((logits.argmax(axis=1) == labels[batch]).sum())
    return total_loss / len(x), correct / len(x)


def fit(config: NetConfig, params: dict, train: tuple, val: tuple, rng) -> list[dict]:
    """Train params in place on (x, labels), x float64 (N, C, H, W); returns the per-epoch history."""
    x, labels = train
    velocity = {name: np.zeros_like(p) for name, p in params.items()}
    steps_per_epoch = -(-len(x) // config.batch_size)
    lrs = lr_schedule(config.lr, steps_per_epoch * config.epochs, config.warmup).reshape(config.epochs, -1)
    history = []
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        train_loss, train_acc = train_one_epoch(params, velocity, x, labels, config, rng, lrs[epoch - 1])
        val_loss, val_acc = evaluate(params, *val)
        history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                        "val_loss": val_loss, "val_accuracy": val_acc,
                        "seconds": round(time.perf_counter() - start, 3)})
        log.info("epoch %d: train loss %.4f acc %.4f, val loss %.4f acc %.4f",
                 epoch, train_loss, train_acc, val_loss, val_acc)
    return history


def to_inputs(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, C, H, W) float64 in [0, 1], cropped to even sides for the 2x2 pool."""
    x = images.astype(np.float64).transpose(0, 3, 1, 2) / 255.0
    h, w = x.shape[2] // 2 * 2, x.shape[3] // 2 * 2
    return x[:, :, :h, :w]


def train_digits(config: NetConfig | None = None) -> dict:
    """Train the network on scikit-learn's 8x8 digits through visionlab's data layer."""
    from ..data import DataConfig, load_dataset

    config = config or NetConfig()
    return train_on(load_dataset(DataConfig(source="digits", seed=config.seed)), config)


def _subset(n: int, limit: int | None, rng) -> np.ndarray:
    """Sorted indices of a seeded random subset of at most ``limit`` of n items (all if no limit)."""
    return np.arange(n) if limit is None or n <= limit else np.sort(rng.choice(n, size=limit, replace=False))


def train_on(ds, config: NetConfig, max_train: int | None = None, max_val: int | None = None) -> dict:
    """Train on a loaded ``visionlab.data.Dataset`` and evaluate on its (whole) test split.

    ``max_train`` and ``max_val`` cap the training images and the validation images scored after
    every epoch (seeded random subsets) to keep a NumPy run short.
    The result's ``mean`` and ``std`` standardise inputs: feed ``(to_inputs(images) - mean) / std``.
    """
    rng = np.random.default_rng(config.seed)
    keep, keep_val = _subset(len(ds.train), max_train, rng), _subset(len(ds.val), max_val, rng)
    x = to_inputs(ds.train.images[keep])  # (N, C, H, W)
    mean, std = float(x.mean()), float(x.std()) or 1.0  # centred inputs keep the first SGD steps tame
    train = ((x - mean) / std, np.asarray(ds.train.labels[keep]))
    val = ((to_inputs(ds.val.images[keep_val]) - mean) / std, np.asarray(ds.val.labels[keep_val]))
    params = init_params(x.shape[1:], len(ds.classes), config, rng)
    initial = {name: p.copy() for name, p in params.items()}
    start = time.perf_counter()
    with one_blas_thread():
        history = fit(config, params, train, val, rng)
        seconds = time.perf_counter() - start
        test_loss, test_acc = evaluate(params, (to_inputs(ds.test.images) - mean) / std, np.asarray(ds.test.labels))
    log.info("NumPy net: test accuracy %.4f after %d epochs (%.1f s)", test_acc, config.epochs, seconds)
    return {"params": params, "initial_params": initial, "history": history, "test_loss": test_loss,
            "test_accuracy": test_acc, "train_seconds": seconds, "n_train": len(keep),
            "n_train_available": len(ds.train), "n_val": len(keep_val), "mean": mean, "std": std}
