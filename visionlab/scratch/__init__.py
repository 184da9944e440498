"""Convolution, pooling and a small network written from scratch in NumPy, checked against torch.

    conv.py     conv2d (direct loops and im2col), max and average pooling, forward and backward
    net.py      conv -> ReLU -> max pool -> dense -> softmax cross-entropy, backprop by hand,
                gradient check, SGD with momentum, train_digits
    figure.py   an image through standard kernels and pooling; training curves; learned filters
    run.py      run_scratch: image and data -> scratch.json, the figures, scratch.html
    command.py  the ``visionlab scratch`` subcommand (``register(subparsers)``)

Nothing in the rest of visionlab imports this package. ``run_scratch`` is loaded on first use, so
that registering the subcommand does not import matplotlib.
"""
from .conv import (avgpool2d, avgpool2d_backward, col2im, conv2d, conv2d_backward, conv2d_loop,
                   conv2d_loop_backward, im2col, maxpool2d, maxpool2d_backward)
from .net import NetConfig, gradient_check, train_digits, train_on

__all__ = [
    "NetConfig", "avgpool2d", "avgpool2d_backward", "col2im", "conv2d", "conv2d_backward", "conv2d_loop",
    "conv2d_loop_backward", "gradient_check", "im2col", "maxpool2d", "maxpool2d_backward", "run_scratch",
    "train_digits", "train_on",
]


def __getattr__(name: str):
    if name == "run_scratch":  # deferred: run.py imports matplotlib
        from .run import run_scratch

        return run_scratch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
