"""Numerics of classification losses: stable softmax / log-softmax / log-sum-exp, binary
cross-entropy on probabilities and on logits, mean squared error, their gradients, the
L2-regularised gradient-descent step, and entropy / cross-entropy / KL divergence.

    functions.py  the pure NumPy functions (float64, broadcasting, shapes in each docstring)
    page.py       write_numerics_page: figures, numerics.json and a self-contained numerics.html
    command.py    the ``visionlab numerics`` subcommand (register(subparsers))

The core package never imports this one. ``page`` (matplotlib) is imported only when used.
"""
from .functions import (
    bce,
    bce_grad_p,
    bce_with_logits,
    bce_with_logits_grad,
    cross_entropy,
    entropy,
    kl_divergence,
    l2_gd_step,
    log_softmax,
    logsumexp,
    mse,
    mse_sigmoid_grad,
    naive_logsumexp,
    naive_softmax,
    sigmoid,
    softmax,
)


def write_numerics_page(out, seed: int = 0):
    """See ``visionlab.numerics.page.write_numerics_page`` (imported here on first use: matplotlib)."""
    from .page import write_numerics_page as write

    return write(out, seed=seed)


__all__ = [
    "bce", "bce_grad_p", "bce_with_logits", "bce_with_logits_grad", "cross_entropy", "entropy",
    "kl_divergence", "l2_gd_step", "log_softmax", "logsumexp", "mse", "mse_sigmoid_grad",
    "naive_logsumexp", "naive_softmax", "sigmoid", "softmax", "write_numerics_page",
]
