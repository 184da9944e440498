"""The ``visionlab scratch`` subcommand: parse, call ``run_scratch``, print one line."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    """Add ``scratch`` to the main parser's subcommands."""
    p = subparsers.add_parser("scratch", help="convolution, pooling and a small network in plain NumPy: "
                                              "figures, gradient check, scratch.html")
    p.add_argument("image", nargs="?", help="an image file to convolve (default: a test image of --data)")
    p.add_argument("--data", default="digits", help="built-in name or path; the network trains on it if its "
                                                    "images are at most 28x28, else on digits (default digits)")
    p.add_argument("--out", default="runs/scratch", help="output folder (default runs/scratch)")
    p.add_argument("--seed", type=int, default=0, help="split, initialisation and shuffling seed (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .run import run_scratch

    result = run_scratch(Path(args.out), image=Path(args.image) if args.image else None, data=args.data,
                         seed=args.seed)
    net = result["network"]
    print(f"scratch: {result['html']} (NumPy net test accuracy {net['test_accuracy']:.2%} on {net['data']}, "
          f"{result['seconds']['total']:.1f} s)")
    return 0
