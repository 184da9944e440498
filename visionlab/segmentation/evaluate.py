"""Evaluating a segmentation model: compute once, reduce, present.

    model --infer (once)--> predictions.npz --confusion matrices--> metrics.json --> figures/, segment.html

``predictions.npz`` is the record every later step reads (none runs the model again):

    preds          (N, H, W) uint8   predicted train ids
    masks          (N, H, W) uint8   ground-truth train ids (255 = ignore)
    per_image_cm   (N, K, K) int64   each image's confusion matrix; their sum is the split's

``evaluate_run`` evaluates a finished run again, on its own val split or on another dataset
whose mask ids are mapped into the model's classes (built in for Cityscapes <-> IDD, or a
--class-map YAML), and sets the two per-class IoU columns side by side.
"""
from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import torch
import yaml

from ..errors import UserError, check_writable_dir
from . import classes as C
from .augment import JointAugment
from .metrics import image_ious, per_image_confusion, segmentation_metrics
from ..files import load_npz, save_npz

log = logging.getLogger(__name__)
RECORD = "predictions.npz"
RECORD_KEYS = ("preds", "masks", "per_image_cm")


def environment() -> dict:
    """What reproduces a result: package and torch versions, the git revision when there is one."""
    from .. import __version__

    try:
        revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, timeout=5,
                                  capture_output=True, text=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        revision = None
    return {"visionlab_version": __version__, "git_revision": revision, "torch_version": torch.__version__}


def write_record(path: Path, preds: np.ndarray, masks: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    record = {"preds": np.asarray(preds, np.uint8), "masks": np.asarray(masks, np.uint8)}
    record["per_image_cm"] = per_image_confusion(torch.from_numpy(record["masks"]), torch.from_numpy(record["preds"]),
                                                 n_classes).numpy()
    save_npz(path, compressed=True, **record)
    return record


def load_seg_record(path: Path) -> dict[str, np.ndarray]:
    record = load_npz(path, "predictions record")
    if set(RECORD_KEYS) - set(record):
        raise UserError(f"{path}: not a visionlab segmentation record (needs {', '.join(RECORD_KEYS)})")
    return record


def present(out: Path, record: dict, split, class_map: C.ClassMap, title: str,
            history: list[dict] | None = None) -> tuple[dict, dict]:
    """Metrics and figures from a record and the split it was made from: (metrics, figures)."""
    from . import visuals

    names = list(class_map.names)
    cm = record["per_image_cm"].sum(axis=0)
    metrics = segmentation_metrics(cm, names)
    per_class, per_image = image_ious(record["per_image_cm"])
    fig = out / "figures"
    fig.mkdir(exist_ok=True)
    images = np.asarray(split.images)
    figures = {
        "overlays": visuals.plot_overlays(images, record["masks"], record["preds"], class_map, fig / "overlays.png",
                                          f"{title}: image, ground truth, prediction"),
        "failures": visuals.plot_failures(images, record["masks"], record["preds"], per_class, per_image, class_map,
                                          fig / "failures.png", f"{title}: lowest-IoU images", names=split.names),
        "iou_bars": visuals.plot_iou_bars(metrics["per_class_iou"], class_map, fig / "iou_bars.png",
                                          f"{title}: per-class IoU (mIoU {metrics['miou'] or 0:.3f})"),
        "confusion": visuals.plot_confusion_present(cm, names, fig / "confusion.png", title),
    }
    if history:
        figures["curves"] = visuals.plot_curves(history, fig / "curves.png", title)
    worst = np.argsort(np.nan_to_num(per_image, nan=np.inf))[:8]
    metrics["lowest_iou_images"] = [{"index": int(i), "image": split.names[i],
                                     "miou": None if np.isnan(per_image[i]) else round(float(per_image[i]), 4)}
                                    for i in worst]
    return metrics, {k: str(v.relative_to(out)) for k, v in figures.items() if v is not None}


def evaluate_trained(out: Path, model, dataset, engine, history: list[dict], config) -> dict:
    """After training: best weights -> predictions.npz on the val split -> metrics.json, figures, report."""
    from ..training import checkpoint
    from . import report
    from .loop import infer, to_device

    tensors, meta = checkpoint.read(out / "model.safetensors")
    checkpoint.load_weights_into(model, tensors, out / "model.safetensors")
    val = to_device(dataset.val, engine.device)
    preds = infer(model, val.images, engine, config.eval_batch_size).cpu().numpy()
    record = write_record(out / RECORD, preds, dataset.val.masks, dataset.classes.n_classes)
    metrics, figures = present(out, record, dataset.val, dataset.classes, config.model, history)
    info = json.loads((out / "run.json").read_text())
    result = {
        "model": config.model, "encoder": config.encoder if config.model == "deeplabv3plus" else None,
        "data": dataset.source, "layout": dataset.layout, "class_map": dataset.classes.name, "split": "val",
        "n_images": len(dataset.val), "classes": list(dataset.classes.names), "epochs": len(history),
        "best_epoch": meta.get("epoch"),
        "augment": JointAugment(config.crop, config.scale, config.flip, config.jitter).describe(),
        "train_seconds": round(sum(h["train_seconds"] for h in history), 3),
        "train_images_per_second": round(float(np.median([h["images_per_second"] for h in history])), 2),
        **metrics, "params": info["params"], "pretrained_used": info["pretrained_used"],
        "pretrained_note": info["pretrained_note"], "precision": info["precision"], "device": info["device"],
        "seed": config.seed, "image_names": dataset.val.names, "figures": figures, **environment(),
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    report.write_report(out, result)
    log.info("%s: val mIoU %.4f, pixel accuracy %.4f (best epoch %s)", out, result["miou"] or 0,
             result["pixel_accuracy"] or 0, result["best_epoch"])
    return {**result, "out": str(out)}


def load_seg_run(run_dir: Path, device: str = "auto"):
    """(model with its best weights, config, run info, class map, engine) of a finished run."""
    from ..training import checkpoint
    from ..training.loop import Engine, autocast_for
    from ..training.run import resolve_device, resolve_precision
    from .config import make_seg_config
    from .models import build_seg_model

    for name in ("config.yaml", "run.json", "model.safetensors"):
        if not (run_dir / name).exists():
            raise UserError(f"{run_dir}: not a finished segmentation run (no {name}); train one with "
                            "visionlab segment train")
    config = make_seg_config(yaml.safe_load((run_dir / "config.yaml").read_text()), where=f"{run_dir}/config.yaml: ")
    info = json.loads((run_dir / "run.json").read_text())
    class_map = C.from_dict(info["classes"], f"{run_dir}/run.json")
    model = build_seg_model(config.model, class_map.n_classes, config.encoder, "none", config.decoder_channels)
    tensors, _ = checkpoint.read(run_dir / "model.safetensors")
    checkpoint.load_weights_into(model, tensors, run_dir / "model.safetensors")
    dev = resolve_device(device)
    model.to(dev, memory_format=torch.channels_last if config.channels_last else torch.preserve_format).eval()
    engine = Engine(dev, torch.tensor(info["mean"], device=dev).view(1, -1, 1, 1),
                    torch.tensor(info["std"], device=dev).view(1, -1, 1, 1),
                    autocast_for(dev, resolve_precision(config.precision, dev)), config.channels_last)
    return model, config, info, class_map, engine


def target_map(model_classes: C.ClassMap, class_map_path: str | None):
    """For load_segmentation: (target id kind, target's own class map) -> a map into the model's classes."""
    def map_for(id_kind: str, own: C.ClassMap) -> C.ClassMap:
        if class_map_path:
            return C.align(C.load_class_map(class_map_path), model_classes, class_map_path)
        mapped = C.cross_map(model_classes, id_kind)
        if mapped is not None:
            return mapped
        if list(own.names) == list(model_classes.names):
            return own
        raise UserError(f"no built-in mapping from {id_kind} masks (classes {', '.join(own.names[:6])}...) to the "
                        f"model's classes ({', '.join(model_classes.names[:6])}...); give --class-map YAML naming "
                        "the model's classes with the target's mask ids")
    return map_for


def evaluate_run(run_dir, data: str | None = None, class_map: str | None = None, split: str = "val",
                 out=None, device: str = "auto") -> dict:
    """Evaluate a finished run on its own val split, or on another dataset (cross-dataset)."""
    from . import report, visuals
    from .data import SegDataConfig, load_segmentation
    from .loop import infer

    run_dir = Path(run_dir)
    model, config, info, model_classes, engine = load_seg_run(run_dir, device)
    source = data or config.data
    out = Path(out) if out else run_dir / f"eval-{Path(source).name or 'data'}-{split}"
    check_writable_dir(out)
    dataset = load_segmentation(SegDataConfig(source, "auto" if data else config.layout, tuple(info["image_shape"]),
                                              None, config.val_fraction, config.seed),
                                map_for=target_map(model_classes, class_map) if data or class_map else
                                (lambda kind, own: C.ClassMap(model_classes.name, model_classes.names,
                                                              model_classes.colors, own.ids)))
    if split not in ("train", "val"):
        raise UserError(f"Invalid split '{split}'. Only train and val are supported.")
    part = getattr(dataset, split)
    if len(part) == 0:
        raise UserError(f"{source}: the {split} split is empty; choose --split train or val")
    preds = infer(model, torch.from_numpy(np.array(part.images)).to(engine.device), engine,
                  config.eval_batch_size).cpu().numpy()
    record = write_record(out / RECORD, preds, part.masks, model_classes.n_classes)
    title = f"{config.model} on {Path(source).name}"
    metrics, figures = present(out, record, part, dataset.classes, title)
    result = {"run": str(run_dir), "model": config.model, "trained_on": config.data, "data": source,
              "layout": dataset.layout, "id_kind": dataset.id_kind, "class_map": dataset.classes.name, "split": split,
              "n_images": len(part), "classes": list(model_classes.names), **metrics, "image_names": part.names,
              "figures": figures, **environment()}
    source_metrics = run_dir / "metrics.json"
    if data and source_metrics.exists():
        result["cross_dataset"] = cross_table(json.loads(source_metrics.read_text()), result)
        path = visuals.plot_cross_dataset(result["cross_dataset"], model_classes, out / "figures" / "cross_dataset.png")
        figures["cross_dataset"] = str(path.relative_to(out))
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    report.write_report(out, result)
    return {**result, "out": str(out)}


def cross_table(source: dict, target: dict) -> dict:
    """Per-class IoU on the training dataset's val split and on the target, side by side."""
    rows = [{"class": name, "source_iou": source["per_class_iou"].get(name), "target_iou": iou}
            for name, iou in target["per_class_iou"].items()]
    shared = [r for r in rows if r["source_iou"] is not None and r["target_iou"] is not None]
    mean = lambda key: round(float(np.mean([r[key] for r in shared])), 6) if shared else None  # noqa: E731
    return {"source": source.get("data"), "target": target["data"], "mapping": target["class_map"], "rows": rows,
            "source_miou": source.get("miou"), "target_miou": target["miou"],
            "shared_classes": [r["class"] for r in shared],
            "source_miou_shared": mean("source_iou"), "target_miou_shared": mean("target_iou")}
