"""``visionlab gan``: the subcommand's flags, and a thin ``run`` that builds a GANConfig and calls
``run_gan``. ``register(subparsers)`` adds it to the main parser; the core never imports this package
until then.
"""
from __future__ import annotations

import argparse

from .config import ARCH_NAMES, DEVICES, GANConfig


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("gan", help="train a GAN on 28x28 one-channel images; sample grids and a quality score")
    p.add_argument("--data", default="digits", help="built-in name or path, resized to 28x28 gray (default digits)")
    p.add_argument("--out", help="output folder (default runs/gan-<data>)")
    # no argparse choices: an unknown name reaches GANConfig, whose error lists the valid ones
    p.add_argument("--arch", default="mlp", help=f"{' | '.join(ARCH_NAMES)} (default mlp)")
    p.add_argument("--epochs", type=int, default=GANConfig.epochs, help=f"default {GANConfig.epochs}")
    p.add_argument("--batch-size", type=int, default=GANConfig.batch_size, help=f"default {GANConfig.batch_size}")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from .run import run_gan

    config = GANConfig(data=args.data, out=args.out, arch=args.arch, epochs=args.epochs,
                       batch_size=args.batch_size, seed=args.seed, device=args.device)  # out None: runs/gan-<data>
    record = run_gan(config, resume=args.resume)
    q = record["final_quality"]
    print(f"output: {record['out']}")
    print(f"epoch {q['epoch']}: Frechet distance {q['frechet_distance']:.3f}, coverage {q['coverage']:.2f}, "
          f"class entropy {q['class_entropy']:.3f}, confidence {q['confidence']:.3f}")
    return 0
