"""``visionlab segment train|evaluate``: a thin shell over ``train`` and ``evaluate_run``.

    visionlab segment train --data DATA [--model deeplabv3plus] [--image-size 128x256] [--crop 128x128] ...
    visionlab segment train --out RUN --resume
    visionlab segment evaluate RUN [--data OTHER] [--class-map MAP.yaml] [--split val] [--out DIR]
    visionlab segment synth OUT [--layout cityscapes|idd|folders] [--train 300] [--val 60] [--size 128x256]

``register(subparsers)`` adds the command to the main parser; ``run(args)`` returns the exit
code. Bad input raises ``UserError`` (one line, exit 2 in the main CLI).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..errors import UserError

log = logging.getLogger(__name__)

TRAIN_FLAGS = {  # flag -> (type, help); each is also a SegConfig key (dashes become underscores)
    "data": (str, "dataset folder: images/ + masks/, or the Cityscapes or IDD layout"),
    "layout": (str, "auto | folders | cityscapes | idd (default auto)"),
    "classes": (str, "class-map YAML (default: the layout's built-in classes)"),
    "model": (str, "deeplabv3plus | deeplabv3 | deeplabv3-resnet50 (default deeplabv3plus)"),
    "encoder": (str, "deeplabv3plus encoder: resnet18 | resnet34 (default resnet18)"),
    "pretrained": (str, "auto | imagenet | none: ImageNet encoder weights (default auto)"),
    "epochs": (int, "passes over the training set (default 30)"),
    "batch-size": (int, "images per step (default 16)"),
    "lr": (float, "peak learning rate (default 0.002)"),
    "seed": (int, "one seed for split, initialisation, shuffling and augmentation (default 0)"),
    "device": (str, "auto | cpu | cuda (default auto)"),
    "precision": (str, "auto | bf16 | fp16 | fp32 (default auto: bf16 where supported)"),
    "wandb": (str, "off | offline | online (default off)"),
}


def size(text: str) -> tuple[int, int]:
    """'128x256' -> (128, 256) (height x width); '128' -> (128, 128)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH in pixels like 128x256, got '{text}'")
    return parts[0], parts[1]


def scale_range(text: str) -> tuple[float, float]:
    """'0.5-2' -> (0.5, 2.0)."""
    lo, sep, hi = text.partition("-")
    try:
        return (float(lo), float(hi)) if sep else (float(lo), float(lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a zoom range LO-HI like 0.5-2, got '{text}'") from None


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``segment`` (with ``train`` and ``evaluate``) to the main CLI's subparsers."""
    parser = subparsers.add_parser("segment", help="semantic segmentation: train DeepLabV3(+) and evaluate it")
    actions = parser.add_subparsers(dest="segment_action", required=True, parser_class=type(parser))

    p = actions.add_parser("train", help="train a segmentation model; writes a run folder with metrics and a report")
    for flag, (kind, text) in TRAIN_FLAGS.items():
        p.add_argument(f"--{flag}", type=kind, help=text)
    p.add_argument("--image-size", type=size, metavar="HxW", help="resize every pair on decode (default: native)")
    p.add_argument("--crop", type=size, metavar="HxW", help="training crop (default: the whole image)")
    p.add_argument("--scale", type=scale_range, metavar="LO-HI", help="random zoom range (default 0.75-1.5)")
    p.add_argument("--config", help="YAML whose keys are these flags' names (batch_size: 16, ...)")
    p.add_argument("--out", help="run folder (default runs/segment-<model>-<data>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.set_defaults(func=run)

    p = actions.add_parser("evaluate", help="evaluate a run again, or on another dataset through a class mapping")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", help="another dataset (default: the run's own val split)")
    p.add_argument("--class-map", help="YAML: the model's class names with the other dataset's mask ids "
                                       "(default: built in for Cityscapes <-> IDD)")
    p.add_argument("--split", default="val", choices=["train", "val"], help="which split to evaluate (default val)")
    p.add_argument("--out", help="output folder (default RUN_DIR/eval-<data>-<split>)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", action="store_true", help="print the metrics record as one JSON object")
    p.set_defaults(func=run)

    p = actions.add_parser("synth", help="write a synthetic street-scene dataset (known masks) in a real layout")
    p.add_argument("out", metavar="OUT", help="folder to create")
    p.add_argument("--layout", default="cityscapes", choices=["cityscapes", "idd", "folders"])
    p.add_argument("--train", type=int, default=300, help="training scenes (default 300)")
    p.add_argument("--val", type=int, default=60, help="validation scenes (default 60)")
    p.add_argument("--size", type=size, default=(128, 256), metavar="HxW", help="scene size (default 128x256)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
    return parser


def run(args) -> int:
    return {"train": _train, "evaluate": _evaluate, "synth": _synth}[args.segment_action](args)


def _synth(args) -> int:
    from ..errors import check_writable_dir
    from .synthetic import make_street_dataset

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose a new folder for the synthetic dataset")
    check_writable_dir(out)
    make_street_dataset(out, layout=args.layout, n_train=args.train, n_val=args.val, size=args.size, seed=args.seed)
    print(f"synthetic {args.layout} dataset: {out} ({args.train} train + {args.val} val scenes, "
          f"{args.size[0]}x{args.size[1]})")
    return 0


def _train(args) -> int:
    from ..training.config import read_yaml, resume_config_file
    from .config import make_seg_config
    from .loop import train

    overrides = {k.replace("-", "_"): getattr(args, k.replace("-", "_")) for k in TRAIN_FLAGS}
    overrides.update(image_size=args.image_size, crop=args.crop, scale=args.scale, out=args.out)
    config_file = args.config
    if args.resume:
        config_file = resume_config_file(args.out)
    values = read_yaml(config_file) if config_file else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "data" not in values:
        raise UserError("segment train needs --data DATASET_FOLDER (or data: in --config)")
    result = train(make_seg_config(values, where=f"{config_file}: " if config_file else ""), resume=args.resume)
    print(f"val mIoU {result['miou'] or 0:.4f}  pixel accuracy {result['pixel_accuracy'] or 0:.4f}  "
          f"({result['epochs']} epochs, {result['train_seconds']:.1f} s, {result['train_images_per_second']:.1f} img/s)"
          f"\nrun folder: {result['out']}")
    return 0


def _evaluate(args) -> int:
    from .evaluate import evaluate_run

    result = evaluate_run(Path(args.run_dir), data=args.data, class_map=args.class_map, split=args.split,
                          out=args.out, device=args.device)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "image_names"}))
        return 0
    line = (f"mIoU {result['miou'] or 0:.4f}  pixel accuracy {result['pixel_accuracy'] or 0:.4f}  "
            f"({result['n_images']} {result['split']} images of {result['data']})")
    cross = result.get("cross_dataset")
    if cross:
        line += (f"\nshared classes ({len(cross['shared_classes'])}): mIoU {cross['source_miou_shared'] or 0:.4f} on "
                 f"the training data, {cross['target_miou_shared'] or 0:.4f} here")
    print(f"{line}\nwritten to {result['out']}")
    return 0
