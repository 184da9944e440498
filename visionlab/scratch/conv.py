"""2D convolution and pooling in NumPy, forward and backward, the way the frameworks define them.

Shapes are NCHW throughout: x (N, C, H, W), weights (F, C, KH, KW), bias (F,). Everything is
computed in float64. ``conv2d`` is cross-correlation, as in ``torch.nn.functional.conv2d``
(the kernel is not flipped); zero padding is added on all four sides; one stride for both axes.

    conv2d_loop      the definition written out: one dot product per output value (slow, clear)
    conv2d           the same result via im2col: every receptive field becomes a row of one
                     matrix, and the convolution becomes a single matrix product (fast)
    maxpool2d        max over each window; the gradient goes to the (first) maximum
    avgpool2d        mean over each window; the gradient is shared equally

Each forward returns ``(out, cache)`` and each ``*_backward(dout, cache)`` returns the gradients
of the inputs, so layers chain as in any framework. Output side: (H + 2P - K) // S + 1.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "avgpool2d", "avgpool2d_backward", "col2im", "conv2d", "conv2d_backward", "conv2d_loop",
    "conv2d_loop_backward", "im2col", "maxpool2d", "maxpool2d_backward", "output_size",
]


def output_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Output side of a convolution or pooling window sliding over ``size`` pixels."""
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"kernel {kernel} does not fit in {size} pixels with padding {padding}")
    return out


def _pad(x: np.ndarray, padding: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))) if padding else x


# ---------------------------------------------------------------- direct loops (for clarity)

def conv2d_loop(x, w, b, stride: int = 1, padding: int = 0):
    """out[n, f, i, j] = b[f] + sum over (c, u, v) of w[f, c, u, v] * xpad[n, c, i*S + u, j*S + v]."""
    x, w, b = (np.asarray(a, dtype=np.float64) for a in (x, w, b))
    n, _, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = output_size(h, kh, stride, padding), output_size(wd, kw, stride, padding)
    xp = _pad(x, padding)  # (N, C, H + 2P, W + 2P)
    out = np.empty((n, f, oh, ow))
    for i_n in range(n):
        for i_f in range(f):
            for i in range(oh):
                for j in range(ow):
                    window = xp[i_n, :, i * stride:i * stride + kh, j * stride:j * stride + kw]  # (C, KH, KW)
                    out[i_n, i_f, i, j] = np.sum(window * w[i_f]) + b[i_f]
    return out, (x, w, b, stride, padding)


def conv2d_loop_backward(dout, cache):
    """Each output value received ``dout``; send it back along the same products that made it."""
    x, w, _, stride, padding = cache
    _, f, oh, ow = dout.shape
    kh, kw = w.shape[2:]
    xp = _pad(x, padding)
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i_n in range(x.shape[0]):
        for i_f in range(f):
            for i in range(oh):
                for j in range(ow):
                    rows, cols = slice(i * stride, i * stride + kh), slice(j * stride, j * stride + kw)
                    g = dout[i_n, i_f, i, j]
                    dw[i_f] += g * xp[i_n, :, rows, cols]
                    dxp[i_n, :, rows, cols] += g * w[i_f]
    db = dout.sum(axis=(0, 2, 3))
    dx = dxp[:, :, padding:padding + x.shape[2], padding:padding + x.shape[3]]  # drop the padding
    return dx, dw, db


# ---------------------------------------------------------------- im2col (for speed)

def _windows(xp: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """A view (no copy) of every KH x KW window: (N, C, OH, OW, KH, KW)."""
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1, padding: int = 0) -> np.ndarray:
    """(N, C, H, W) -> (N * OH * OW, C * KH * KW): one row per output position, one column per weight."""
    n, c = x.shape[:2]
    win = _windows(_pad(x, padding), kh, kw, stride)  # (N, C, OH, OW, KH, KW), a strided view
    oh, ow = win.shape[2:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)  # the one copy


def col2im(cols: np.ndarray, x_shape, kh: int, kw: int, stride: int = 1, padding: int = 0) -> np.ndarray:
    """The adjoint of im2col: add every row back into the pixels it was read from.

    Windows overlap when stride < kernel, so values are summed, not written. We loop over the
    KH * KW kernel offsets (9 for 3x3), each a strided slice covering the whole batch at once;
    np.add.at with fancy indices does the same but is many times slower.
    """
    n, c, h, w = x_shape
    oh, ow = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    cols = cols.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)  # (N, C, KH, KW, OH, OW)
    xp = np.zeros((n, c, h + 2 * padding, w + 2 * padding))
    for u in range(kh):
        for v in range(kw):
            xp[:, :, u:u + stride * oh:stride, v:v + stride * ow:stride] += cols[:, :, u, v]
    return xp[:, :, padding:padding + h, padding:padding + w]


def conv2d(x, w, b, stride: int = 1, padding: int = 0):
    """Same result as ``conv2d_loop``, as one matrix product: (N*OH*OW, C*KH*KW) @ (C*KH*KW, F)."""
    x, w, b = (np.asarray(a, dtype=np.float64) for a in (x, w, b))
    n, _, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = output_size(h, kh, stride, padding), output_size(wd, kw, stride, padding)
    cols = im2col(x, kh, kw, stride, padding)  # (N*OH*OW, C*KH*KW)
    out = cols @ w.reshape(f, -1).T + b  # (N*OH*OW, F)
    out = out.reshape(n, oh, ow, f).transpose(0, 3, 1, 2)  # (N, F, OH, OW), a strided view
    return out, (x.shape, w, stride, padding, cols)


def conv2d_backward(dout, cache, need_dx: bool = True):
    """The forward was out = cols @ W.T + b, so dW = dout.T @ cols, dcols = dout @ W, db = sum(dout).

    need_dx=False skips dx (returned as None): a first layer has no use for the image's gradient.
    """
    x_shape, w, stride, padding, cols = cache
    f, _, kh, kw = w.shape
    d = dout.transpose(0, 2, 3, 1).reshape(-1, f)  # (N*OH*OW, F), rows in im2col's order
    dw = (d.T @ cols).reshape(w.shape)  # (F, C, KH, KW)
    db = d.sum(axis=0)  # (F,)
    dx = col2im(d @ w.reshape(f, -1), x_shape, kh, kw, stride, padding) if need_dx else None  # (N, C, H, W)
    return dx, dw, db


# ---------------------------------------------------------------- pooling (no padding, floor mode)
# Pooling loops over the K*K offsets inside a window; each offset is one strided slice of the whole
# batch, (N, C, OH, OW), so the work per offset is vectorised and the loop is 4 steps for K = 2.

def _offsets(x_shape, kernel: int, stride: int):
    """Yield (u, v, index) for every offset in a window, with the slice that reads it everywhere."""
    oh, ow = output_size(x_shape[2], kernel, stride), output_size(x_shape[3], kernel, stride)
    for u in range(kernel):
        for v in range(kernel):
            yield u * kernel + v, (slice(None), slice(None), slice(u, u + stride * oh, stride),
                                   slice(v, v + stride * ow, stride))


def maxpool2d(x, kernel: int = 2, stride: int | None = None):
    """(N, C, H, W) -> (N, C, OH, OW); stride defaults to the kernel (non-overlapping windows)."""
    x = np.asarray(x, dtype=np.float64)
    stride = stride or kernel
    out, arg = None, None
    for k, where in _offsets(x.shape, kernel, stride):
        val = x[where]  # (N, C, OH, OW): this offset of every window
        if out is None:
            out, arg = val.copy(), np.zeros(val.shape, dtype=np.intp)
            continue
        np.copyto(arg, k, where=val > out)  # strict: the first maximum in row-major order wins, as in torch
        np.maximum(out, val, out=out)
    return out, (x.shape, kernel, stride, arg)


def maxpool2d_backward(dout, cache):
    """Only the winning pixel of each window affected the output, so only it gets the gradient."""
    x_shape, kernel, stride, arg = cache
    dx = np.zeros(x_shape)
    for k, where in _offsets(x_shape, kernel, stride):
        dx[where] += np.where(arg == k, dout, 0.0)  # += : overlapping windows share pixels
    return dx


def avgpool2d(x, kernel: int = 2, stride: int | None = None):
    """(N, C, H, W) -> (N, C, OH, OW): the mean of each window."""
    x = np.asarray(x, dtype=np.float64)
    stride = stride or kernel
    out = sum(x[where] for _, where in _offsets(x.shape, kernel, stride))
    return out / (kernel * kernel), (x.shape, kernel, stride)


def avgpool2d_backward(dout, cache):
    """Every pixel of a window contributed 1 / K^2 of its mean."""
    x_shape, kernel, stride = cache
    dx = np.zeros(x_shape)
    share = dout / (kernel * kernel)
    for _, where in _offsets(x_shape, kernel, stride):
        dx[where] += share
    return dx
