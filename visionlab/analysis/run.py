"""``analyze_run``: every analysis of one finished training run, into RUN/analysis/.

    RUN/analysis/
      analysis.json          the summary returned by analyze_run (figure paths relative to RUN)
      tsne_2d.png  tsne_3d.png  tsne_3d.json (plotly, for the report)
      distance_ratio.png  confident_mistakes.png
      feature_maps.png  feature_maps_errors.png   (conv models only)

Everything reads RUN/predictions.npz; only the feature maps run the model, on a few images.
Resumable: an analysis.json newer than predictions.npz, made with the same parameters, is
returned as it is.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..evaluation import load_record, load_run
from .centroids import find_mistakes, plot_confident_mistakes, plot_distance_ratio, summarize
from .curves import overfit_flag, read_history
from .feature_maps import feature_map_figures
from .tsne import MIN_POINTS, TSNEConfig, embed_tsne, plot_tsne, plotly_tsne_3d, stratified_subsample
from ..files import write_text

log = logging.getLogger(__name__)
N_CONFIDENT = 16  # mistakes in the gallery
FIGURE_FILES = ("tsne_2d.png", "tsne_3d.png", "tsne_3d.json", "distance_ratio.png", "confident_mistakes.png",
                "feature_maps.png", "feature_maps_errors.png")


def analyze_run(run_dir: Path, test_images: np.ndarray, classes: list[str], *, names: list[str] | None = None,
                tsne_max_points: int = 5000, seed: int = 0, feature_map_images: int = 4,
                device: str = "cpu") -> dict:
    """t-SNE, centroid distances of the mistakes, feature maps and the overfit flag of one run.

    test_images: (N, H, W, C) uint8, the test split the record's ``indices`` point into; names:
    a label per test image (file paths) for the mistakes list, or None.
    """
    run_dir = Path(run_dir)
    out = run_dir / "analysis"
    record_path, result_path = run_dir / "predictions.npz", out / "analysis.json"
    if not record_path.exists():
        raise UserError(f"{run_dir}: no predictions.npz; train (or evaluate) the run first")
    params = {"tsne_max_points": tsne_max_points, "seed": seed, "feature_map_images": feature_map_images}
    cached = _cached(result_path, record_path, params)
    if cached is not None:
        log.info("%s: analysis up to date, reused", run_dir)
        return cached
    record = load_record(record_path)
    if record["logits"].shape[1] != len(classes):
        raise UserError(f"{run_dir}: the record has {record['logits'].shape[1]} classes, {len(classes)} were given")
    out.mkdir(exist_ok=True)
    for stale in FIGURE_FILES:  # from an earlier analysis; this one may not draw them all
        (out / stale).unlink(missing_ok=True)
    name = run_dir.name
    figures: dict[str, Path] = {}
    tsne, tsne_figures = _tsne(record, classes, out, tsne_max_points, seed, name)
    figures.update(tsne_figures)
    mistakes = find_mistakes(record)
    misclassification = summarize(mistakes, record, classes, names, N_CONFIDENT)
    figures["distance_ratio"] = plot_distance_ratio(
        mistakes, out / "distance_ratio.png", f"{name}: where the {len(mistakes.rows):,} mistakes sit in feature space")
    if len(mistakes.rows):
        shown = mistakes.rows[:N_CONFIDENT]
        figures["confident_mistakes"] = plot_confident_mistakes(
            np.asarray(test_images[record["indices"][shown]]), mistakes, classes, out / "confident_mistakes.png",
            f"{name}: the {len(shown)} most confident mistakes (distances to the train class centroids)")
    figures.update(_feature_maps(run_dir, record, test_images, classes, out, feature_map_images, seed, device))
    result = {"tsne": tsne, "misclassification": misclassification, "overfit": _overfit(run_dir),
              "figures": {k: str(Path(v).relative_to(run_dir)) for k, v in figures.items()}, "params": params}
    write_text(result_path, json.dumps(result, indent=1))  # written last: a killed analysis leaves no analysis.json
    return result


def _cached(result_path: Path, record_path: Path, params: dict) -> dict | None:
    if not result_path.exists() or result_path.stat().st_mtime < record_path.stat().st_mtime:
        return None
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        return None
    return result if result.get("params") == params else None


def _tsne(record: dict, classes: list[str], out: Path, max_points: int, seed: int, name: str) -> tuple[dict, dict]:
    labels, preds, n_total = record["labels"], record["logits"].argmax(axis=1), len(record["labels"])
    rows = stratified_subsample(labels, max_points, seed)
    summary = {"n_points": int(len(rows)), "n_test": int(n_total), "subsampled": bool(len(rows) < n_total),
               "pca_dims": None, "perplexity": None, "seconds": 0.0, "kl_2d": None, "kl_3d": None}
    if len(rows) < MIN_POINTS:
        log.info("%s: %d test images, too few for t-SNE", name, len(rows))
        return summary, {}
    result = embed_tsne(record["features"][rows], TSNEConfig(random_state=seed))
    summary.update(pca_dims=result.pca_dims, perplexity=round(result.perplexity, 2),
                   seconds=round(result.seconds, 2), kl_2d=round(result.kl_2d, 4), kl_3d=round(result.kl_3d, 4),
                   timings=result.timings)
    what = f"{len(rows):,} test images" + (f" (stratified sample of {n_total:,})" if len(rows) < n_total else "")
    wrong = labels[rows] != preds[rows]
    figures = {}
    for dims, embedding in ((2, result.embedding_2d), (3, result.embedding_3d)):
        figures[f"tsne_{dims}d"] = plot_tsne(embedding, labels[rows], wrong, classes, out / f"tsne_{dims}d.png",
                                             f"{name}: {dims}-D t-SNE of penultimate features, {what}")
    text = plotly_tsne_3d(result.embedding_3d, labels[rows], preds[rows], record["indices"][rows], classes,
                          f"{name}: 3-D t-SNE of penultimate features, {what}")
    (out / "tsne_3d.json").write_text(text)
    figures["tsne_3d_plotly"] = out / "tsne_3d.json"
    return summary, figures


def _feature_maps(run_dir: Path, record: dict, test_images: np.ndarray, classes: list[str], out: Path,
                  n_images: int, seed: int, device: str) -> dict:
    if n_images <= 0:
        return {}
    if not (run_dir / "model.safetensors").exists():
        log.info("%s: no model.safetensors, no feature maps", run_dir)
        return {}
    model, _, _, engine = load_run(run_dir, device=device)
    if not model.conv_layer_names():
        log.info("%s: %s has no conv layers, no feature maps", run_dir, model.arch)
        return {}
    return feature_map_figures(model, engine, record, test_images, classes, out, n_images, seed)


def _overfit(run_dir: Path) -> dict:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return overfit_flag([])
    best = None
    if (run_dir / "metrics.json").exists():
        best = json.loads((run_dir / "metrics.json").read_text()).get("best_epoch")
    return overfit_flag(read_history(path), best)
