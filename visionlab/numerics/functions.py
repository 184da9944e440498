"""The numerics behind a classifier's loss, in plain NumPy: stable softmax / log-softmax /
log-sum-exp, binary cross-entropy (on probabilities and on logits), mean squared error, their
gradients for binary classification, the L2-regularised gradient-descent step, and entropy,
cross-entropy and KL divergence (CE = H + KL).

Every function takes array-likes, broadcasts like NumPy and returns float64. Logarithms are
natural (nats). Shapes: ``x`` is (..., K) logits with the classes on ``axis``; ``z``, ``p``, ``y``
are same-shape (or broadcastable) arrays of logits, predicted probabilities and targets in [0, 1]
(soft targets allowed). Losses take ``reduction`` as torch does: "mean" (default), "sum" or
"none" (per element). Gradients are per element: the derivative of each element's loss with
respect to its own input; for reduction="mean" divide by the number of elements.
"""
from __future__ import annotations

import numpy as np

REDUCTIONS = ("mean", "sum", "none")
EPS = 1e-12  # bce's clip: -log(1e-12) = 27.6 nats is the most one prediction can cost


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _reduce(losses: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "mean":
        return np.float64(losses.mean())
    if reduction == "sum":
        return np.float64(losses.sum())
    if reduction == "none":
        return losses
    raise ValueError(f"Invalid reduction {reduction!r}. Only {', '.join(REDUCTIONS)} are supported.")


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x * log(y) with 0 * log(anything) = 0: the limit of p log p as p -> 0, and the convention
    that a zero-probability outcome contributes nothing to H, CE or KL."""
    x, y = np.broadcast_arrays(_f64(x), _f64(y))
    safe_y = np.where(x == 0, 1.0, y)  # log(1) = 0; avoids log(0) = -inf, then 0 * -inf = nan
    with np.errstate(divide="ignore"):  # x > 0, y = 0 is a genuine -inf (infinite surprise)
        return np.where(x == 0, 0.0, x * np.log(safe_y))


# ---- softmax family -----------------------------------------------------------------------------

def logsumexp(x, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """log(sum_k exp(x_k)) along ``axis``, computed as m + log(sum_k exp(x_k - m)), m = max_k x_k.

    (..., K) -> (...) (or (..., 1) with keepdims). After the shift every exponent is <= 0, so
    exp cannot overflow, and the largest term is exp(0) = 1, so the sum cannot underflow to 0.
    It follows that the result is >= max(x) and <= max(x) + log(K). A row of all -inf gives -inf.
    """
    x = _f64(x)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)  # an all -inf (or inf) row: shift by 0, let exp decide
    with np.errstate(divide="ignore"):  # sum == 0 only for an all -inf row: log(0) = -inf is right
        out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def softmax(x, axis: int = -1) -> np.ndarray:
    """exp(x_k) / sum_j exp(x_j) along ``axis``, with the max subtracted first. (..., K) -> (..., K).

    softmax(x) = softmax(x - c) for any constant c; c = max(x) makes every exponent <= 0 (no
    overflow) and the denominator >= 1 (no 0 / 0).
    """
    x = _f64(x)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis: int = -1) -> np.ndarray:
    """x_k - logsumexp(x) along ``axis``: the log-probabilities, (..., K) -> (..., K), all <= 0.

    Better than log(softmax(x)): a probability that underflows to 0 still has a finite log here
    (e.g. -1e4 rather than -inf), which is what a cross-entropy loss needs.
    """
    x = _f64(x)
    return x - logsumexp(x, axis=axis, keepdims=True)


def naive_softmax(x, axis: int = -1) -> np.ndarray:
    """exp(x) / sum(exp(x)) without the max subtraction: WRONG for |x| beyond about 709.

    Kept to show the failure: exp overflows to inf above log(float64 max) = 709.78, and
    inf / inf = nan; below about -745 every exp underflows to 0 and 0 / 0 = nan. NumPy's
    overflow / invalid warnings are silenced here because producing them is the point.
    """
    x = _f64(x)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        e = np.exp(x)
        return e / np.sum(e, axis=axis, keepdims=True)


def naive_logsumexp(x, axis: int = -1) -> np.ndarray:
    """log(sum(exp(x))) without the shift: inf above about 709, -inf below about -745."""
    x = _f64(x)
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        return np.log(np.sum(np.exp(x), axis=axis))


def sigmoid(z) -> np.ndarray:
    """1 / (1 + exp(-z)), elementwise, for any z.

    For z >= 0 that formula is safe (exp(-z) <= 1); for z < 0 it would compute exp(|z|), which
    overflows, so there we use the equal exp(z) / (1 + exp(z)). Both branches only ever
    exponentiate -|z|.
    """
    z = _f64(z)
    e = np.exp(-np.abs(z))  # in (0, 1]: never overflows
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# ---- binary losses ------------------------------------------------------------------------------

def bce(p, y, eps: float = EPS, reduction: str = "mean") -> np.ndarray:
    """Binary cross-entropy on probabilities: -(y log p + (1 - y) log(1 - p)).

    p is clipped to [eps, 1 - eps] first: at p = 0 or 1 a wrong label would give log(0) = -inf
    (an infinite loss, and inf * 0 = nan for the right one), and one such sample would make the
    whole batch's loss inf. The clip caps a single loss at about -log(eps) (27.63 nats for 1e-12;
a hair more at the top end, where 1 - eps rounds in float64). The price: the loss is flat
    outside the clip, so its gradient there is 0 (see ``bce_grad_p``); ``bce_with_logits`` has
    neither problem and is the one to train with.
    """
    p = np.clip(_f64(p), eps, 1.0 - eps)
    y = _f64(y)
    return _reduce(-(y * np.log(p) + (1.0 - y) * np.log1p(-p)), reduction)


def bce_with_logits(z, y, reduction: str = "mean") -> np.ndarray:
    """Binary cross-entropy on a logit z (p = sigmoid(z)), in the stable form
    max(z, 0) - z y + log(1 + exp(-|z|)).

    Derivation: -log sigmoid(z) = log(1 + exp(-z)) and -log(1 - sigmoid(z)) = z + log(1 + exp(-z)),
    so the loss is (1 - y) z + log(1 + exp(-z)); rewriting log(1 + exp(-z)) = max(-z, 0) +
    log(1 + exp(-|z|)) leaves only exp(-|z|) <= 1. Exact for |z| up to float64's range, and >= 0
    for y in [0, 1].
    """
    z, y = _f64(z), _f64(y)
    return _reduce(np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z))), reduction)


def mse(p, y, reduction: str = "mean") -> np.ndarray:
    """Mean squared error (p - y)^2 (per element with reduction="none")."""
    return _reduce((_f64(p) - _f64(y)) ** 2, reduction)


# ---- gradients for binary classification --------------------------------------------------------

def bce_with_logits_grad(z, y) -> np.ndarray:
    """d bce_with_logits / d z = sigmoid(z) - y, per element.

    The chain rule through the sigmoid, dp/dz = p (1 - p), cancels BCE's 1 / (p (1 - p)): the
    gradient is just the error, and stays near -1 or +1 when the model is confidently wrong.
    """
    return sigmoid(z) - _f64(y)


def mse_sigmoid_grad(z, y) -> np.ndarray:
    """d (sigmoid(z) - y)^2 / d z = 2 (p - y) p (1 - p), p = sigmoid(z), per element.

    The factor p (1 - p) -> 0 as p -> 0 or 1, so a confidently wrong prediction (p near 0 for
    y = 1) gets almost no gradient: the reason classifiers are trained with cross-entropy.
    """
    p = sigmoid(z)
    return 2.0 * (p - _f64(y)) * p * (1.0 - p)


def bce_grad_p(p, y, eps: float = EPS) -> np.ndarray:
    """d bce(p, y, eps) / d p = (p - y) / (p (1 - p)) = -y / p + (1 - y) / (1 - p), per element.

    This is the derivative of the clipped loss ``bce`` computes: 0 where p lies outside
    [eps, 1 - eps] (the loss is flat there), so a prediction clipped at 0 or 1 gets no gradient.
    """
    p, y = np.broadcast_arrays(_f64(p), _f64(y))
    inside = (p >= eps) & (p <= 1.0 - eps)
    q = np.clip(p, eps, 1.0 - eps)
    return np.where(inside, (q - y) / (q * (1.0 - q)), 0.0)


def l2_gd_step(w, grad, lr: float, weight_decay: float) -> np.ndarray:
    """One gradient-descent step on loss(w) + (weight_decay / 2) ||w||^2:
    w - lr (grad + weight_decay w).

    ``grad`` is d loss / d w (same shape as w); the penalty adds weight_decay * w, so each step
    also shrinks w by the factor (1 - lr weight_decay). Same as torch.optim.SGD(weight_decay=...)
    without momentum.
    """
    w = _f64(w)
    return w - lr * (_f64(grad) + weight_decay * w)


# ---- information theory -------------------------------------------------------------------------

def entropy(p, axis: int = -1) -> np.ndarray:
    """H(p) = -sum_k p_k log p_k along ``axis``, with 0 log 0 = 0. (..., K) -> (...)."""
    p = _f64(p)
    return -np.sum(_xlogy(p, p), axis=axis)


def cross_entropy(p, q, axis: int = -1) -> np.ndarray:
    """CE(p, q) = -sum_k p_k log q_k: the expected code length of p's outcomes under q's code.
    (..., K), (..., K) -> (...). Terms with p_k = 0 are 0; p_k > 0 with q_k = 0 gives inf."""
    return -np.sum(_xlogy(_f64(p), _f64(q)), axis=axis)


def kl_divergence(p, q, axis: int = -1) -> np.ndarray:
    """KL(p || q) = sum_k p_k log(p_k / q_k) >= 0, with 0 log(0 / q) = 0. (..., K) -> (...).

    Computed from its own definition (not as CE - H) so that CE = H + KL is a check, not a
    tautology. inf where some p_k > 0 has q_k = 0.
    """
    p, q = np.broadcast_arrays(_f64(p), _f64(q))
    pos = p > 0
    with np.errstate(divide="ignore"):  # q_k = 0 < p_k: log(p / 0) = inf, KL is inf
        terms = np.where(pos, p * (np.log(np.where(pos, p, 1.0)) - np.log(np.where(pos, q, 1.0))), 0.0)
    return np.sum(terms, axis=axis)
