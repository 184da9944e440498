"""Segmentation benchmark: DeepLabV3+ from scratch on the synthetic street scenes, on this CPU.

usage: python benchmarks/bench_segment.py [--size 128x256] [--n-train 300] [--n-val 60] [--epochs 10]
                                          [--batch-size 16] [--lr 0.003] [--encoder resnet18] [--threads 0]

1. Generate the synthetic Cityscapes-layout dataset (and an IDD-layout one from another seed).
2. `visionlab segment train` (library call, same code path as the command): DeepLabV3+ with a
   ResNet-18 encoder from scratch (pretrained: none, as offline), bf16 autocast where the CPU has
   it, joint scale/crop/flip/jitter augmentation; the Cityscapes 19-class map (8 occur).
3. Cross-dataset: the trained model evaluated on the IDD-layout set through the built-in map.
Target (issue [6/8]): val mIoU >= 0.8 within a few minutes of training.
Reports mIoU per epoch, training seconds, images/s; writes benchmarks/results/segment.json.

--threads: torch intra-op threads (0: torch's default, one per core). On a CPU shared with other
busy processes, one thread can be several times faster than two: OpenMP's threads wait for each
other at every operator, and a co-tenant that holds a core makes every such wait long.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, save_results  # noqa: E402

sys.path.insert(0, str(ROOT))
TARGET_MIOU = 0.8


def size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=size, default=(128, 256), help="scene size HxW (default 128x256)")
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-val", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--decoder-channels", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, help="keep the run folder here (default: a temporary folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    from visionlab.segmentation import evaluate_run, make_seg_config, make_street_dataset, train

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        data = make_street_dataset(tmp / "streets-cs", "cityscapes", args.n_train, args.n_val, args.size, seed=0)
        idd = make_street_dataset(tmp / "streets-idd", "idd", 0, args.n_val, args.size, seed=1)
        generate_s = time.perf_counter() - start
        out = args.out or tmp / "run"
        config = make_seg_config({
            "data": str(data), "model": "deeplabv3plus", "encoder": args.encoder, "pretrained": "none",
            "decoder_channels": args.decoder_channels, "epochs": args.epochs, "batch_size": args.batch_size,
            "lr": args.lr, "scale": [0.75, 1.5], "flip": True, "jitter": 0.2, "device": "cpu", "out": str(out)})
        start = time.perf_counter()
        result = train(config)
        wall = time.perf_counter() - start
        history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        cross = evaluate_run(out, data=str(idd))
    reached = next((h["epoch"] for h in history if h["val_miou"] >= TARGET_MIOU), None)
    record = {
        "machine": machine(), "threads": torch.get_num_threads(), "settings": {k: str(v) for k, v in vars(args).items()},
        "precision": result["precision"], "generate_seconds": round(generate_s, 1),
        "train_seconds": result["train_seconds"], "train_wall_seconds": round(wall, 1),
        "train_images_per_second": result["train_images_per_second"], "val_miou": result["miou"],
        "val_pixel_accuracy": result["pixel_accuracy"], "per_class_iou": {k: v for k, v in result["per_class_iou"].items()
                                                                         if v is not None},
        "miou_per_epoch": [round(h["val_miou"], 4) for h in history],
        "seconds_per_epoch": [round(h["train_seconds"], 1) for h in history],
        "target_reached_at_epoch": reached,
        "train_seconds_to_target": round(sum(h["train_seconds"] for h in history[:reached]), 1) if reached else None,
        "cross_dataset_idd": {"miou": cross["miou"], "shared_target_miou": cross["cross_dataset"]["target_miou_shared"]},
        "params": result["params"],
    }
    path = save_results("segment", record)
    print(f"\nmachine: {record['machine']}, {record['threads']} torch thread(s), {record['precision']}\n")
    print("| epoch | val mIoU | train s |")
    print("|---|---|---|")
    for h in history:
        print(f"| {h['epoch']} | {h['val_miou']:.4f} | {h['train_seconds']:.1f} |")
    print(f"\nval mIoU {result['miou']:.4f} (target {TARGET_MIOU}: "
          f"{'met at epoch %d, %.0f s of training' % (reached, record['train_seconds_to_target']) if reached else 'NOT met'}); "
          f"{result['train_seconds']:.0f} s of training ({result['train_seconds'] / 60:.1f} min), "
          f"{result['train_images_per_second']:.1f} img/s; cross-dataset on IDD layout: mIoU {cross['miou']:.4f}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
