"""Semantic segmentation: DeepLabV3+ / DeepLabV3 on street scenes, trained with visionlab's engine.

    from visionlab.segmentation import make_street_dataset, make_seg_config, train, evaluate_run
    make_street_dataset("streets", layout="cityscapes", n_train=200, n_val=50)
    result = train(make_seg_config({"data": "streets", "epochs": 10, "out": "runs/seg"}))
    result["miou"], result["per_class_iou"]
    evaluate_run("runs/seg", data="idd-root")       # cross-dataset, through a class mapping

Modules: classes (class maps, Cityscapes/IDD built in), layouts + data (readers, decode-once
cache), synthetic (generated street scenes), models, augment (joint image + mask), metrics,
loop (training), evaluate, visuals, report, command (``visionlab segment``). Heavy imports (torch models,
segmentation-models-pytorch, matplotlib) happen inside the functions that need them.
"""
import importlib

# Names load on first use (PEP 562): `visionlab --help` and every other command build their parser
# from ``command``, which must not pay for these modules' imports (pydantic models, numpy readers).
_HOME = {"ClassMap": "classes", "cityscapes": "classes", "cross_map": "classes", "idd_level3": "classes",
         "load_class_map": "classes", "SegConfig": "config", "make_seg_config": "config", "SegDataConfig": "data",
         "SegDataset": "data", "load_segmentation": "data", "make_street_dataset": "synthetic"}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)


def train(config, resume: bool = False) -> dict:
    """Train a segmentation model and evaluate it (see loop.py); imported on first use."""
    from .loop import train as run

    return run(config, resume)


def evaluate_run(run_dir, data=None, class_map=None, split="val", out=None, device="auto") -> dict:
    """Evaluate a finished run on its val split or on another dataset (see evaluate.py)."""
    from .evaluate import evaluate_run as run

    return run(run_dir, data=data, class_map=class_map, split=split, out=out, device=device)


def build_seg_model(name, n_classes, encoder="resnet18", pretrained="auto", decoder_channels=256):
    """A segmentation model by name (see models.py)."""
    from .models import build_seg_model as build

    return build(name, n_classes, encoder, pretrained, decoder_channels)


__all__ = ["ClassMap", "SegConfig", "SegDataConfig", "SegDataset", "build_seg_model", "cityscapes", "cross_map",
           "evaluate_run", "idd_level3", "load_class_map", "load_segmentation", "make_seg_config",
           "make_street_dataset", "train"]
