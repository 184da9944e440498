"""t-SNE of the test set's penultimate features (from the predictions record), in 2-D and 3-D.

One stratified subsample of at most ``max_points`` images, PCA to 50 dimensions, then openTSNE:
the perplexity-based kNN affinities are computed once and shared by both embeddings. 2-D uses
FFT-interpolated gradients; openTSNE's interpolation only exists for 1-D and 2-D, so 3-D uses
Barnes-Hut. ``TSNEConfig`` trades a little accuracy for speed in both (wider FFT boxes, a larger
Barnes-Hut angle, fewer 3-D iterations) so that 2-D + 3-D of 10,000 points take under 30 s on
two CPU cores with the same clusters and neighbourhoods (benchmarks/bench_tsne.py measures both).

Figures: ``tsne_2d.png`` and ``tsne_3d.png`` (matplotlib) and ``tsne_3d.json``, a plotly figure
for the HTML report. Class names are passed to both libraries as data, never formatted into markup.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..evaluation.plots import mathsafe  # noqa: E402

log = logging.getLogger(__name__)
MIN_POINTS = 10  # fewer test images than this: no t-SNE (nothing to see, perplexity degenerate)
SMALL_N = 1000  # up to this many points: Barnes-Hut in 2-D too, one thread (180 points: 0.4 s, not 30 s)


@dataclass
class TSNEConfig:
    """How the embeddings are computed. The speed settings (interval width, theta, iteration
    counts) were chosen with benchmarks/bench_tsne.py: 10,000 points, two CPU cores."""

    pca_dims: int = 50  # PCA components before the kNN search (fewer when D or n is smaller)
    perplexity: float = 30.0  # effective number of neighbours; lowered to (n - 1) / 3 for tiny sets
    exaggeration: float = 12.0  # early exaggeration factor (clusters form, then spread)
    exaggeration_iter: int = 150  # iterations with exaggeration, each embedding
    iter_2d: int = 500  # iterations after exaggeration, 2-D (FFT gradients)
    iter_3d: int = 250  # iterations after exaggeration, 3-D (Barnes-Hut, ~4x the cost of a 2-D one)
    # openTSNE's FFT grid has max(min_intervals, extent / interval_width) boxes a side, and its
    # numpy FFT costs grow with the square of that: width 2 instead of openTSNE's 1 makes 2-D
    # about 4x faster at 10,000 points for a slightly more compact map with the same clusters
    interval_width_2d: float = 2.0  # embedding units per FFT box
    min_intervals_2d: int = 30  # FFT boxes a side at least (openTSNE: 50)
    theta_3d: float = 1.0  # Barnes-Hut opening angle in 3-D (openTSNE: 0.5): 2-3x faster, coarser far field
    n_jobs: int | None = None  # threads for kNN and gradients; None: OMP_NUM_THREADS if set (a study
    #   worker's share of the cores), else all cores
    random_state: int = 0  # seeds the kNN index, PCA and the initialisation


def _omp_threads() -> int:
    """OMP_NUM_THREADS when set to a count (a parallel study worker's share of the cores), else -1 (all)."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return -1


@dataclass
class TSNEResult:
    embedding_2d: np.ndarray  # (n, 2)
    embedding_3d: np.ndarray  # (n, 3)
    pca_dims: int  # dimensions the kNN search ran in
    perplexity: float  # the perplexity used (after lowering for tiny sets)
    kl_2d: float  # KL divergence of the final 2-D embedding
    kl_3d: float
    seconds: float  # PCA + affinities + both embeddings
    timings: dict[str, float]  # seconds of each step: pca, affinities, embed_2d, embed_3d


def stratified_subsample(labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Sorted row indices of at most ``cap`` samples, each class in proportion to its count.

    Per-class quotas are cap * count / n, floored, with the leftover places going to the largest
    fractional parts, so the total is exactly ``cap`` and no class is dropped unless cap < classes.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if cap >= n:
        return np.arange(n)
    classes, counts = np.unique(labels, return_counts=True)
    quota = cap * counts / n
    take = np.floor(quota).astype(int)
    leftover = cap - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:leftover]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == c), k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def embed_tsne(features: np.ndarray, config: TSNEConfig = TSNEConfig()) -> TSNEResult:
    """(n, D) features -> 2-D and 3-D t-SNE embeddings sharing one affinity matrix."""
    from openTSNE import TSNEEmbedding
    from openTSNE.affinity import PerplexityBasedNN
    from openTSNE.initialization import pca as pca_init
    from openTSNE.initialization import random as random_init
    from sklearn.decomposition import PCA

    start = last = time.perf_counter()
    timings = {}

    def lap(step: str) -> None:
        nonlocal last
        timings[step], last = round(time.perf_counter() - last, 3), time.perf_counter()

    n, dims = features.shape
    if n < MIN_POINTS:
        raise ValueError(f"t-SNE needs at least {MIN_POINTS} points, got {n}")
    x = np.asarray(features, np.float64)
    n_components = min(config.pca_dims, dims, n)
    if dims > n_components:
        x = PCA(n_components, random_state=config.random_state).fit_transform(x)
    lap("pca")
    perplexity = min(config.perplexity, (n - 1) / 3)
    jobs = config.n_jobs or _omp_threads()
    affinities = PerplexityBasedNN(x, perplexity=perplexity, n_jobs=jobs,
                                   random_state=config.random_state)
    lap("affinities")
    small = n <= SMALL_N  # FFT's interpolation grid and thread start-up cost seconds for nothing here
    fft = {"ints_in_interval": config.interval_width_2d, "min_num_intervals": config.min_intervals_2d}
    # small sets get openTSNE's accurate defaults (theta 0.5, full iterations): a few seconds at most
    runs = {2: ("bh", config.iter_2d, {}) if small else ("fft", config.iter_2d, fft),
            3: ("bh", config.iter_2d, {"theta": 0.5}) if small else ("bh", config.iter_3d, {"theta": config.theta_3d})}
    n_jobs = 1 if small else jobs
    embeddings, kls = {}, {}
    for d, (method, n_iter, extra) in runs.items():
        # PCA initialisation keeps the global layout reproducible (openTSNE rescales it to std 1e-4)
        init = pca_init(x, n_components=d, random_state=config.random_state) if x.shape[1] >= d else \
            random_init(n, n_components=d, random_state=config.random_state)
        emb = TSNEEmbedding(init, affinities, negative_gradient_method=method, n_jobs=n_jobs,
                            random_state=config.random_state, **extra)
        emb = emb.optimize(config.exaggeration_iter, exaggeration=config.exaggeration, momentum=0.5)
        emb = emb.optimize(n_iter, momentum=0.8)
        embeddings[d], kls[d] = np.asarray(emb, np.float32), float(emb.kl_divergence)
        lap(f"embed_{d}d")
    seconds = time.perf_counter() - start
    log.info("t-SNE of %d points (%d-D after PCA): %.1f s, KL 2-D %.3f, 3-D %.3f", n, x.shape[1], seconds,
             kls[2], kls[3])
    return TSNEResult(embeddings[2], embeddings[3], int(x.shape[1]), float(perplexity), kls[2], kls[3], seconds,
                      timings)


def class_colors(n_classes: int) -> list[str]:
    """Distinguishable hex colours: tab10 / tab20, else an interleaved sweep of turbo."""
    if n_classes <= 10:
        cmap = plt.get_cmap("tab10")
        return [matplotlib.colors.to_hex(cmap(i)) for i in range(n_classes)]
    if n_classes <= 20:
        cmap = plt.get_cmap("tab20")
        return [matplotlib.colors.to_hex(cmap(i)) for i in range(n_classes)]
    sweep = plt.get_cmap("turbo")(np.linspace(0.03, 0.97, n_classes))
    half = (n_classes + 1) // 2  # neighbours in label order get colours from opposite halves of the sweep
    order = np.ravel(np.column_stack([np.arange(half), np.arange(half) + half]))[:n_classes] % n_classes
    return [matplotlib.colors.to_hex(sweep[i]) for i in order]


def _text(name: str, n: int = 24) -> str:
    """A class name as matplotlib text: shortened, and '$' escaped so it is never read as math."""
    name = name if len(name) <= n else name[: n - 1] + "…"
    return name.replace("$", r"\$")


def _marker_size(n: int, dims: int) -> float:
    return float(np.clip((12000 if dims == 2 else 20000) / max(n, 1), 2.5, 25))


def plot_tsne(embedding: np.ndarray, labels: np.ndarray, wrong: np.ndarray, classes: list[str], path: Path,
              title: str) -> Path:
    """Scatter of a (n, 2) or (n, 3) embedding coloured by true class; misclassified points get a black x.

    labels: (n,) true classes; wrong: (n,) bool.
    """
    dims = embedding.shape[1]
    colors, size = class_colors(len(classes)), _marker_size(len(labels), dims)
    fig = plt.figure(figsize=(10, 7.5))
    ax = fig.add_subplot(projection="3d" if dims == 3 else None)
    coords = lambda rows: [embedding[rows, i] for i in range(dims)]  # noqa: E731
    for k, name in enumerate(classes):
        rows = labels == k
        if rows.any():
            ax.scatter(*coords(rows), s=size, color=colors[k], label=_text(name), linewidths=0,
                       alpha=0.8, **({"depthshade": False} if dims == 3 else {}))
    if wrong.any():
        alpha = 0.75 if wrong.mean() < 0.2 else 0.4  # a weak model's crosses would hide the colours
        ax.scatter(*coords(wrong), s=size * 3 + 6, marker="x", color="black", linewidths=0.6, alpha=alpha,
                   label=f"misclassified ({int(wrong.sum()):,})")
    ax.set_title(mathsafe(title), fontsize=11)
    if dims == 3:
        ax.view_init(elev=22, azim=40)
        ax.set_box_aspect(None, zoom=1.12)  # the default leaves a wide empty margin around the box
        ax.set_xticklabels([]), ax.set_yticklabels([]), ax.set_zticklabels([])  # t-SNE axes have no units
    else:
        ax.set_xticks([]), ax.set_yticks([])
    n_labels = len(ax.get_legend_handles_labels()[1])
    if n_labels <= 41:  # beyond that a legend is unreadable; the plotly figure names every point
        legend = ax.legend(loc="upper left", bbox_to_anchor=(1.02 if dims == 2 else 1.08, 1.0), frameon=False,
                           fontsize=9 if n_labels <= 21 else 7, ncol=1 if n_labels <= 21 else 2,
                           handletextpad=0.3)
        for handle in legend.legend_handles:  # legend markers at one readable size, whatever the point size
            handle.set_sizes([40])
            handle.set_alpha(1)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plotly_tsne_3d(embedding: np.ndarray, labels: np.ndarray, preds: np.ndarray, indices: np.ndarray,
                   classes: list[str], title: str) -> str:
    """The 3-D embedding as plotly JSON: one Scatter3d trace per class, one for the misclassified.

    Coordinates go in as rounded lists (plain JSON arrays any plotly.js reads); class names go in
    unchanged as data; plotly's to_json escapes '<' so the JSON can sit inside a <script> tag.
    """
    import plotly.graph_objects as go

    colors = class_colors(len(classes))
    xyz = np.round(embedding.astype(np.float64), 3)
    traces = []
    for k, name in enumerate(classes):
        rows = np.flatnonzero(labels == k)
        traces.append(go.Scatter3d(
            x=xyz[rows, 0].tolist(), y=xyz[rows, 1].tolist(), z=xyz[rows, 2].tolist(), mode="markers", name=name,
            marker={"size": 2.5, "color": colors[k]}, hoverinfo="text",
            text=[f"{name} (test #{i})" for i in indices[rows].tolist()]))
    wrong = np.flatnonzero(labels != preds)
    traces.append(go.Scatter3d(
        x=xyz[wrong, 0].tolist(), y=xyz[wrong, 1].tolist(), z=xyz[wrong, 2].tolist(), mode="markers",
        name=f"misclassified ({len(wrong)})", marker={"size": 3.5, "color": "black", "symbol": "x"},
        hoverinfo="text", text=[f"test #{i}: true {classes[t]}, predicted {classes[p]}"
                                for i, t, p in zip(indices[wrong].tolist(), labels[wrong], preds[wrong])]))
    axis = {"showticklabels": False, "title": {"text": ""}}
    fig = go.Figure(traces, layout={"title": {"text": title}, "legend": {"itemsizing": "constant"},
                                    "scene": {"xaxis": axis, "yaxis": axis, "zaxis": axis},
                                    "margin": {"l": 0, "r": 0, "b": 0, "t": 40}, "height": 650})
    return fig.to_json()
