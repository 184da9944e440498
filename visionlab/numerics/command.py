"""The ``visionlab numerics`` subcommand: a thin shell over ``write_numerics_page``.

``register(subparsers)`` adds it to the main parser's subparsers; ``run(args)`` writes the page
and prints one line. An --out that cannot be written is a ``UserError`` (exit code 2).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import check_writable_dir

DEFAULT_OUT = "runs/numerics"


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``numerics [--out DIR]`` to an argparse subparsers object; return its parser."""
    p = subparsers.add_parser("numerics", help="figures of stable softmax, BCE vs MSE gradients, CE = H + KL")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from .page import write_numerics_page  # matplotlib: only when the command runs

    out = Path(args.out)
    check_writable_dir(out)
    print(f"numerics: {write_numerics_page(out)}")
    return 0
