"""The numerics page: four figures computed by ``visionlab.numerics.functions``, the numbers behind
them in numerics.json, and numerics.html, a self-contained page (figures inlined as base64).

    (a) grad_bce_vs_mse.png    |d loss / d logit| of BCE and of MSE-through-a-sigmoid, y = 1
    (b) softmax_overflow.png   softmax with and without the max subtraction as inputs grow
    (c) logsumexp.png          logsumexp([a, a]) - a, stable and naive, for a in [-1e4, 1e4]
    (d) ce_identity.png        cross-entropy = entropy + KL on random distributions
"""
from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import functions as F  # noqa: E402

log = logging.getLogger(__name__)

EXP_MAX = float(np.log(np.finfo(np.float64).max))  # 709.78: exp(x) is inf above this
# exp(x) rounds to 0 below log(smallest subnormal / 2) = -745.13; above it, down to -708.4, exp(x)
# is subnormal: nonzero but with few significant bits.
EXP_MIN = float(np.log(np.finfo(np.float64).smallest_subnormal) - np.log(2.0))
TITLES = {
    "grad_bce_vs_mse": "(a) BCE vs MSE: gradient against the predicted probability",
    "softmax_overflow": "(b) Softmax with and without the max subtraction",
    "logsumexp": "(c) Log-sum-exp with and without the max shift",
    "ce_identity": "(d) Cross-entropy = entropy + KL divergence",
}
SOFTMAX_BASE = np.array([1.0, 0.9, 0.5, 0.0, -1.0])  # (K,) logits, scaled by s in figure (b)
N_PAIRS = 1000  # random (p, q) pairs checked in figure (d)
N_CLASSES = 10  # K of those distributions

CAPTIONS = {
    "grad_bce_vs_mse": (
        "Gradient magnitude with respect to the logit for a positive example (y = 1). Cross-entropy's "
        "gradient is 1 - p: largest when the model is confidently wrong (p near 0). Squared error through "
        "a sigmoid has gradient 2(1 - p)\u00b2p, which vanishes as p \u2192 0, so a confidently wrong "
        "prediction barely learns. Right: the same on log axes."),
    "softmax_overflow": (
        "Softmax of s \u00b7 [1, 0.9, 0.5, 0, \u22121] as the scale s grows. Subtracting the max first "
        "(solid) stays a distribution at every scale; the naive formula (markers) agrees until "
        "exp overflows float64 at inputs above 709.8, then returns nan (red band)."),
    "logsumexp": (
        "logsumexp([a, a]) \u2212 a, which is exactly log 2. The shifted form gets it for every a; "
        "the naive log(sum(exp)) returns \u2212inf below a \u2248 \u2212745.1 (exp underflows to 0) and "
        "+inf above a \u2248 709.8 (exp overflows), and just above \u2212745 it is already wrong by up to "
        "{naive_error:.2f} nats (the spike): there exp(a) is subnormal and has few significant bits."),
    "ce_identity": (
        "Cross-entropy = entropy + KL divergence. Left: H(p) and KL(p\u2016q) stacked for eight random "
        "pairs, with CE(p, q) (black tick) on top. Right: CE against H + KL for {n} random pairs of "
        "{k}-class distributions, computed separately; the largest gap is {gap:.1e} nats."),
}


def _grad_figure(path: Path) -> dict:
    z = np.linspace(-12.0, 12.0, 481)  # logits; p = sigmoid(z) spans 6e-6 .. 1 - 6e-6
    p = F.sigmoid(z)
    g_bce = np.abs(F.bce_with_logits_grad(z, 1.0))  # 1 - p
    g_mse = np.abs(F.mse_sigmoid_grad(z, 1.0))  # 2 (1 - p)^2 p
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
    for ax, log_axes in zip(axes, (False, True)):
        ax.plot(p, g_bce, label="BCE on logits: 1 − p", color="#1f77b4", lw=2)
        ax.plot(p, g_mse, label="MSE through sigmoid: 2(1 − p)²p", color="#d62728", lw=2)
        ax.set_xlabel("predicted probability p of the true class (y = 1)")
        ax.set_ylabel("|d loss / d logit|")
        if log_axes:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title("log axes: MSE's gradient ≈ 2p as p → 0")
        else:
            ax.axvspan(0, 0.1, color="0.9")
            ax.text(0.012, 0.55, "confidently\nwrong", fontsize=9, color="0.3")
            ax.set_xlim(0, 1)
            ax.set_title("gradient for a positive example")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right" if not log_axes else "lower left", fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"y": 1.0, "p": p, "grad_bce": g_bce, "grad_mse": g_mse}


def _softmax_figure(path: Path) -> dict:
    scales = np.logspace(0, 4, 161)  # s = 1 .. 1e4, so the largest input reaches 1e4
    x = scales[:, None] * SOFTMAX_BASE  # (S, K)
    stable, naive = F.softmax(x), F.naive_softmax(x)  # (S, K) each
    broken = ~np.isfinite(naive).all(axis=1)  # (S,)
    first_broken = float(scales[broken][0]) if broken.any() else None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    fig.subplots_adjust(left=0.08, right=0.78, bottom=0.13, top=0.9)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(SOFTMAX_BASE)))
    for k, (base, color) in enumerate(zip(SOFTMAX_BASE, colors)):
        ax.plot(scales, stable[:, k], color=color, lw=2, label=f"input {base:g}·s")
        ax.plot(scales[::6], naive[::6, k], "o", color=color, ms=4, mfc="none")
    ax.plot([], [], "-", color="0.3", lw=2, label="stable (max subtracted)")
    ax.plot([], [], "o", color="0.3", ms=4, mfc="none", label="naive (nan not drawn)")
    overflow = EXP_MAX / SOFTMAX_BASE.max()  # the scale where the largest input passes 709.78
    ax.axvspan(overflow, scales[-1], color="#d62728", alpha=0.12)
    ax.text(overflow * 1.1, 0.5, "naive: nan\n(exp overflows\nabove 709.8)", color="#d62728", fontsize=10)
    ax.set_xscale("log")
    ax.set_xlabel("scale s (largest input = s)")
    ax.set_ylabel("softmax probability")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("softmax with (solid) and without (markers) the max subtraction")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"base": SOFTMAX_BASE, "scales": scales, "stable": stable, "naive": naive,
            "naive_first_nonfinite_scale": first_broken, "stable_all_finite": bool(np.isfinite(stable).all()),
            "stable_max_row_sum_error": float(np.abs(stable.sum(axis=1) - 1).max())}


def _logsumexp_figure(path: Path) -> dict:
    subnormal = np.linspace(-746.0, -700.0, 93)  # where the naive sum goes wrong before it goes -inf
    a = np.sort(np.concatenate([-np.logspace(4, -1, 200), subnormal, np.logspace(-1, 4, 200)]))  # -1e4 .. 1e4
    x = np.stack([a, a], axis=-1)  # (N, 2)
    stable, naive = F.logsumexp(x) - a, F.naive_logsumexp(x) - a  # exact value log 2
    fig, ax = plt.subplots(figsize=(9, 4.2))
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.13, top=0.9)
    ax.axvspan(-1e4, EXP_MIN, color="#1f77b4", alpha=0.1)
    ax.axvspan(EXP_MAX, 1e4, color="#d62728", alpha=0.1)
    ax.plot(a, stable, color="#1f77b4", lw=3, label="m + log Σ exp(x − m)  (stable)")
    ax.plot(a, np.where(np.isfinite(naive), naive, np.nan), color="#ff7f0e", lw=1.5, ls="--",
            label="log Σ exp(x)  (naive; gaps are ±inf)")
    ax.text(-9e3, 0.3, "naive: −inf\n(exp underflows to 0\nbelow −745.1)", ha="left", fontsize=9, color="#1f77b4")
    ax.text(9e3, 0.3, "naive: +inf\n(exp overflows\nabove 709.8)", ha="right", fontsize=9, color="#d62728")
    worst = np.nanargmax(np.where(np.isfinite(naive), naive, np.nan))
    ax.annotate("exp(a) subnormal:\nnaive already wrong", xy=(a[worst], naive[worst]), xytext=(-120, 1.15),
                fontsize=9, color="#ff7f0e", arrowprops={"arrowstyle": "->", "color": "#ff7f0e"})
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(-1e4, 1e4)
    ax.set_ylim(0, 1.4)
    ax.set_xlabel("a  (input [a, a], symmetric log axis)")
    ax.set_ylabel("logsumexp([a, a]) − a   (exact: log 2)")
    ax.set_title("log-sum-exp with and without the max shift")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower center", fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"a": a, "stable_minus_a": stable, "naive_minus_a": naive,
            "stable_max_error": float(np.abs(stable - np.log(2)).max()),
            "naive_max_finite_error": float(np.abs(naive[np.isfinite(naive)] - np.log(2)).max()),
            "naive_neg_inf_count": int((naive == -np.inf).sum()), "naive_pos_inf_count": int((naive == np.inf).sum())}


def _ce_figure(path: Path, rng: np.random.Generator) -> dict:
    p = rng.dirichlet(np.full(N_CLASSES, 0.3), size=N_PAIRS)  # (N, K), peaked
    p[:, 1:] *= rng.random((N_PAIRS, N_CLASSES - 1)) > 0.3  # about 30% exact zeros: exercises 0 log 0 = 0
    p /= p.sum(axis=1, keepdims=True)  # column 0 is never zeroed, so every row sums to > 0
    q = rng.dirichlet(np.full(N_CLASSES, 1.0), size=N_PAIRS)  # (N, K), q_k > 0
    ce, h, kl = F.cross_entropy(p, q), F.entropy(p), F.kl_divergence(p, q)  # (N,) each
    gap = float(np.abs(ce - (h + kl)).max())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
    idx = np.arange(8)
    axes[0].bar(idx, h[:8], color="#1f77b4", label="entropy H(p)")
    axes[0].bar(idx, kl[:8], bottom=h[:8], color="#ff7f0e", label="KL(p‖q)")
    axes[0].plot(idx, ce[:8], "_", color="black", ms=22, mew=2.5, label="cross-entropy CE(p, q)")
    axes[0].set_xticks(idx, [f"pair {i + 1}" for i in idx], fontsize=8)
    axes[0].set_ylabel("nats")
    axes[0].set_title("H + KL stacks up to CE")
    axes[0].set_ylim(0, float(ce[:8].max()) * 1.3)  # headroom for the legend
    axes[0].legend(loc="upper center", ncol=3, fontsize=8)
    lim = [0, float(max(ce.max(), (h + kl).max())) * 1.05]
    axes[1].plot(lim, lim, color="0.6", lw=1, label="y = x")
    axes[1].scatter(h + kl, ce, s=6, alpha=0.5, color="#2ca02c", label=f"{N_PAIRS} random pairs")
    axes[1].set_xlim(lim)
    axes[1].set_ylim(lim)
    axes[1].set_xlabel("H(p) + KL(p‖q)  (nats)")
    axes[1].set_ylabel("CE(p, q)  (nats)")
    axes[1].set_title(f"largest |CE − (H + KL)| = {gap:.1e}")
    axes[1].legend(loc="upper left", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"n_pairs": N_PAIRS, "n_classes": N_CLASSES, "max_abs_gap": gap, "p_zero_entries": int((p == 0).sum()),
            "examples": {"cross_entropy": ce[:8], "entropy": h[:8], "kl": kl[:8]}}


def _jsonable(obj):
    """Arrays to lists, and nan / inf to null: strict JSON has no non-finite numbers."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (np.ndarray, list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _html(figures: dict[str, Path], captions: dict[str, str]) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True)  # captions stay text
    template = env.from_string(_TEMPLATE)
    items = [{"name": name, "title": TITLES[name], "caption": captions[name],
              "data": base64.b64encode(path.read_bytes()).decode("ascii")} for name, path in figures.items()]
    return template.render(items=items)


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>visionlab numerics</title>
<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
figure{margin:2em 0}img{max-width:100%}figcaption{color:#444;line-height:1.4}</style></head>
<body><h1>Numerics of classification losses</h1>
<p>Each figure is computed by <code>visionlab.numerics.functions</code>; the numbers are in numerics.json.</p>
{% for item in items %}<figure id="{{ item.name }}"><h2>{{ item.title }}</h2>
<img src="data:image/png;base64,{{ item.data }}" alt="{{ item.title }}">
<figcaption>{{ item.caption }}</figcaption></figure>
{% endfor %}</body></html>
"""


def write_numerics_page(out: Path, seed: int = 0) -> Path:
    """Write the four figures, numerics.json and numerics.html into ``out``; return the html path.

    ``seed`` draws the random distributions of figure (d).
    """
    from .. import __version__

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = ("grad_bce_vs_mse", "softmax_overflow", "logsumexp", "ce_identity")
    figures = {name: out / f"{name}.png" for name in names}
    record = {
        "grad_bce_vs_mse": _grad_figure(figures["grad_bce_vs_mse"]),
        "softmax_overflow": _softmax_figure(figures["softmax_overflow"]),
        "logsumexp": _logsumexp_figure(figures["logsumexp"]),
        "ce_identity": _ce_figure(figures["ce_identity"], rng),
    }
    captions = dict(CAPTIONS, ce_identity=CAPTIONS["ce_identity"].format(
        n=N_PAIRS, k=N_CLASSES, gap=record["ce_identity"]["max_abs_gap"]),
        logsumexp=CAPTIONS["logsumexp"].format(naive_error=record["logsumexp"]["naive_max_finite_error"]))
    meta = {"visionlab_version": __version__, "seed": seed, "figures": {n: p.name for n, p in figures.items()},
            "captions": captions, "note": "non-finite values (nan, inf) are written as null"}
    (out / "numerics.json").write_text(json.dumps(_jsonable({**meta, **record}), allow_nan=False))
    html_path = out / "numerics.html"
    html_path.write_text(_html(figures, captions), encoding="utf-8")
    log.info("numerics page: %s", html_path)
    return html_path
