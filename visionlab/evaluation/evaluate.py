"""Evaluation of a run: the best weights over the test set once, then metrics and figures.

``evaluate_run`` is called at the end of training; ``reevaluate`` evaluates a saved run again
(also on another dataset with the same classes); ``predict_images`` classifies a user's files
with the run's exact preprocessing. The run's ``tta`` key (see tta.py) applies to all three:
with TTA, predictions.npz also holds ``logits_no_tta`` (the plain view's logits) and metrics.json
``tta`` (the views applied) and ``test_accuracy_no_tta``.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ..errors import UserError
from .metrics import classification_metrics, softmax
from .painter import Painter
from .record import class_centroids, save_record
from .tta import resolve_tta, views

log = logging.getLogger(__name__)
CENTROID_IMAGES = 10_000  # train images behind the class centroids (a stratified subsample)


def _infer_split(model, images, engine, batch_size: int | None, features: bool = True, tta: str = "none"):
    """(logits, features or None, plain-view logits or None when tta is none) as numpy arrays."""
    from ..training.loop import infer

    images = np.asarray(images)
    if not (images.flags.writeable and images.flags.c_contiguous):  # a read-only cache memmap: one copy
        images = np.array(images)
    x = torch.from_numpy(images).to(engine.device)
    logits, feats, plain = infer(model, x, engine, batch_size, features=features,
                                 views=None if tta == "none" else (lambda b: views(b, tta)))
    return (logits.cpu().numpy(), (feats.cpu().numpy() if feats is not None else None),
            (plain.cpu().numpy() if plain is not None else None))


def write_predictions(out: Path, model, engine, test_images, test_labels, train_images, train_labels,
                      n_classes: int, batch_size: int | None, seed: int, tta: str = "none", on_test=None) -> dict:
    """One pass over the test set (with the views of ``tta``, already resolved for the classes) and
    a plain pass over a train subsample for centroids -> predictions.npz. Returns the record plus
    ``test_seconds``, the test pass's wall time (not saved). ``on_test(logits, labels)`` is called
    between the two passes (on a GPU evaluate_run queues the figures there, for a painter to draw
    meanwhile)."""
    from ..training.run import subsample

    start = time.perf_counter()
    logits, features, plain = _infer_split(model, test_images, engine, batch_size, tta=tta)
    test_seconds = time.perf_counter() - start  # the arrays are on the host: the device has finished
    if on_test is not None:
        on_test(logits.astype(np.float32), np.asarray(test_labels, np.int64))
    sub_images, sub_labels = subsample(train_images, train_labels, CENTROID_IMAGES, seed)
    _, train_features, _ = _infer_split(model, sub_images, engine, batch_size)
    centroids, counts = class_centroids(train_features, np.asarray(sub_labels), n_classes)
    record = {"logits": logits.astype(np.float32), "labels": np.asarray(test_labels, np.int64),
              "features": features.astype(np.float32), "indices": np.arange(len(test_labels), dtype=np.int64),
              "train_centroids": centroids, "train_counts": counts.astype(np.int64)}
    if plain is not None:
        record["logits_no_tta"] = plain.astype(np.float32)
    save_record(out / "predictions.npz", **record)
    return {**record, "test_seconds": test_seconds}


def tta_metrics(record: dict, tta: str) -> dict:
    """metrics.json fields on test-time augmentation: the views applied, and without them."""
    if "logits_no_tta" not in record:
        return {"tta": tta}
    plain = float((record["logits_no_tta"].argmax(1) == record["labels"]).mean()) if len(record["labels"]) else 0.0
    return {"tta": tta, "test_accuracy_no_tta": plain}


def queue_figures(painter: Painter, out: Path, logits: np.ndarray, labels: np.ndarray, indices: np.ndarray,
                  confusion, images: np.ndarray, classes: list[str], history: list[dict] | None, name: str,
                  seed: int) -> dict:
    """Queue the confusion matrix, curves and a sample grid (half of them errors when there are
    errors) of the test ``logits`` on ``painter``; returns their file names, drawn once
    ``painter.results()`` has returned. ``images[indices[i]]`` is the image of ``logits[i]``."""
    figures = {"confusion_matrix": "confusion_matrix.png"}
    painter.draw("plot_confusion", confusion, classes, out / "confusion_matrix.png", name)
    if history:
        figures["curves"] = "curves.png"
        painter.draw("plot_curves", history, out / "curves.png", name)
    probs = softmax(logits)
    preds = probs.argmax(1)
    rng = np.random.default_rng(seed)
    wrong, right = np.flatnonzero(preds != labels), np.flatnonzero(preds == labels)
    pick = np.concatenate([rng.permutation(wrong)[:16], rng.permutation(right)[:32 - min(16, len(wrong))]])
    pick = np.sort(pick)
    if len(pick):
        figures["predictions"] = "predictions.png"
        painter.draw("plot_prediction_grid", np.asarray(images[indices[pick]]), labels[pick], preds[pick],
                     probs[pick].max(1), classes, out / "predictions.png", f"{name}: test predictions (errors in red)")
    return figures


def figure_title(config) -> str:
    """The run as its figures name it: the model, and its augmentation unless none (a study's
    'cnn' and 'cnn + standard aug' must not both read 'cnn')."""
    augment = config.augment if isinstance(config.augment, str) else ", ".join(map(str, config.augment))
    return config.model if augment == "none" else f"{config.model} + {augment} aug"


def _predict_and_draw(out: Path, model, engine, test, train_images, train_labels, classes: list[str],
                      history: list[dict] | None, config, tta: str, painter: Painter | None):
    """write_predictions, the test metrics and the figures (queued on ``painter``). Returns
    (record, metrics, figures) once every figure is drawn.

    On a GPU the figures are queued between write_predictions' two passes, so that the painter
    draws them while the train pass and the save run. On a CPU both passes run first, on every
    thread, and the figures after them: the painter's drawings and this process's threads would
    share the same cores, and with every core's thread busy each parallel region waits for the
    descheduled one (measured: lenet's 10k-image train pass took 0.68 s instead of 0.1 s). Leaving
    the painter a core instead cost the pass a thread for its whole length to overlap 0.3-0.5 s
    of drawing: ResNet-18's pass over 10k CIFAR-10 images takes 32-33 s on one thread here, 21 s
    on two."""
    painter = painter or Painter(None)
    metrics, figures = {}, {}

    def on_test(logits, labels):
        metrics.update(classification_metrics(logits, labels, classes, config.top_k))
        figures.update(queue_figures(painter, out, logits, labels, np.arange(len(labels)), metrics["confusion_matrix"],
                                     test.images, classes, history, figure_title(config), config.seed))

    overlap = engine.device.type != "cpu"
    record = write_predictions(out, model, engine, test.images, test.labels, train_images, train_labels,
                               len(classes), config.eval_batch_size, config.seed, tta=tta,
                               on_test=on_test if overlap else None)
    if not overlap:
        on_test(record["logits"], record["labels"])
    painter.results()
    return record, metrics, figures


def evaluate_run(out: Path, *, model, dataset, engine, history: list[dict], train_split,
                 painter: Painter | None = None) -> dict:
    """After training: best weights -> predictions.npz -> figures -> metrics.json (written last: a
    run folder with metrics.json is complete). ``painter``: draws the figures in its own process."""
    from ..training import checkpoint
    from ..training.config import TrainConfig

    config = TrainConfig(**yaml.safe_load((out / "config.yaml").read_text()))
    run_info = json.loads((out / "run.json").read_text())
    tensors, meta = checkpoint.read(out / "model.safetensors")
    checkpoint.load_weights_into(model, tensors, out / "model.safetensors")
    tta = resolve_tta(config.tta, dataset.classes)
    record, metrics, figures = _predict_and_draw(out, model, engine, dataset.test, *train_split, dataset.classes,
                                                 history, config, tta, painter)
    best = max(history, key=lambda h: (h["val_accuracy"] if np.isfinite(h["val_accuracy"]) else -1))
    result = {
        "model": config.model, "augment": config.augment, "epochs": len(history), "params": run_info["params"],
        "batch_size": config.batch_size, "lr": config.lr,
        "train_seconds": round(sum(h["train_seconds"] for h in history), 3),
        "train_images_per_second": round(float(np.median([h["images_per_second"] for h in history])), 1),
        "best_epoch": meta.get("epoch", best["epoch"]), "val_accuracy": meta.get("val_accuracy", best["val_accuracy"]),
        **metrics, **tta_metrics(record, tta), "test_seconds": round(record["test_seconds"], 3),
        "classes": dataset.classes, "precision": run_info["precision"], "device": run_info["device"],
        "pretrained_used": run_info["pretrained_used"], "pretrained_note": run_info["pretrained_note"],
        "data": dataset.source, "seed": config.seed, "figures": figures,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    log.info("%s: test accuracy %.4f, macro F1 %.4f (best epoch %s)", out, result["test_accuracy"],
             result["test_macro_f1"], result["best_epoch"])
    return result


def load_run(run_dir: Path, device: str = "auto"):
    """(model with best weights, config, run info, engine) from a run folder."""
    from ..models import build_model
    from ..training import checkpoint
    from ..training.config import make_config
    from ..training.loop import Engine, autocast_for
    from ..training.run import keep_freed_memory, resolve_device, resolve_precision

    run_dir = Path(run_dir)
    for name in ("config.yaml", "run.json", "model.safetensors"):
        if not (run_dir / name).exists():
            raise UserError(f"{run_dir}: not a finished visionlab run (no {name}); train one with visionlab train")
    config = make_config(yaml.safe_load((run_dir / "config.yaml").read_text()), where=f"{run_dir}/config.yaml: ")
    info = json.loads((run_dir / "run.json").read_text())
    h, w, c = info["image_shape"]
    options = config.model_options()
    options.pretrained, options.weights = "none", None  # the run's own weights replace them
    model = build_model(config.model, len(info["classes"]), c, (h, w), options)
    tensors, _ = checkpoint.read(run_dir / "model.safetensors")
    checkpoint.load_weights_into(model, tensors, run_dir / "model.safetensors")
    dev = resolve_device(device)
    keep_freed_memory()  # inference allocates as training does: the same buffers every batch
    model.to(dev, memory_format=torch.channels_last if config.channels_last else torch.preserve_format).eval()
    engine = Engine(dev, torch.tensor(info["mean"], device=dev).view(1, -1, 1, 1),
                    torch.tensor(info["std"], device=dev).view(1, -1, 1, 1),
                    autocast_for(dev, resolve_precision(config.precision, dev)), config.channels_last)
    return model, config, info, engine


def reevaluate(run_dir: Path, data: str | None = None, device: str = "auto", painter: Painter | None = None) -> dict:
    """Evaluate a saved run on its test split, or on another dataset with the same classes.
    ``painter``: draws the figures in its own process."""
    from ..data import DataConfig, load_dataset

    run_dir = Path(run_dir)
    model, config, info, engine = load_run(run_dir, device)
    h, w, c = info["image_shape"]
    source = data or config.data
    dataset = load_dataset(DataConfig(source=source, image_size=config.image_size if data is None else (
        h if h == w else None), channels=str(c), val_fraction=config.val_fraction,
        test_fraction=config.test_fraction, seed=config.seed, merge_splits=config.merge_splits and data is None))
    if len(dataset.classes) != len(info["classes"]):
        raise UserError(f"{source} has {len(dataset.classes)} classes but the model was trained on "
                        f"{len(info['classes'])} ({', '.join(info['classes'][:10])})")
    if tuple(dataset.image_shape) != (h, w, c):
        raise UserError(f"{source} gives {dataset.image_shape} images, the model expects {(h, w, c)}; "
                        f"load it with image_size {h}")
    slug = "test" if data is None else Path(source).name.split(".")[0]
    out = run_dir / "evaluate" / slug
    out.mkdir(parents=True, exist_ok=True)
    tta = resolve_tta(config.tta, info["classes"])
    record, metrics, figures = _predict_and_draw(out, model, engine, dataset.test, dataset.train.images,
                                                 dataset.train.labels, info["classes"], None, config, tta, painter)
    result = {"run": str(run_dir), "data": dataset.source, **metrics, **tta_metrics(record, tta),
              "classes": info["classes"], "figures": figures}
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    return {**result, "out": str(out)}


def predict_images(run_dir: Path, paths: list[str], top_k: int = 3, device: str = "auto") -> list[dict]:
    """Classify image files with the run's preprocessing; top-k classes with probabilities each."""
    from ..data.decode import Target, decode_image

    model, config, info, engine = load_run(run_dir, device)
    h, w, c = info["image_shape"]
    results, arrays = [], []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise UserError(f"{path}: cannot read ({exc.strerror})") from None
        array, _, error = decode_image(data, Target(c, None, h) if h == w else Target(c, (h, w), None))
        if array is None:
            raise UserError(f"{path}: {error or f'is not {h}x{w}; the model takes {h}x{w} images'}")
        arrays.append(array)
    tta = resolve_tta(config.tta, info["classes"])
    logits, _, _ = _infer_split(model, np.stack(arrays), engine, config.eval_batch_size, features=False, tta=tta)
    probs = softmax(logits)
    k = min(top_k, len(info["classes"]))
    for path, p in zip(paths, probs):
        order = np.argsort(p)[::-1][:k]
        results.append({"path": str(path), "top": [{"class": info["classes"][i], "probability": round(float(p[i]), 4)}
                                                   for i in order]})
    return results
