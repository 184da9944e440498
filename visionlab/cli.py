"""The ``visionlab`` command: a thin shell. Each subcommand parses its flags, builds a config and
calls one library function. A ``UserError`` becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from .errors import UserError

log = logging.getLogger("visionlab")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as for every other user mistake
        sys.stderr.write(f"visionlab: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("visionlab: %(message)s"))
    root = logging.getLogger("visionlab")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-size", type=int, help="square side in pixels (default: native if uniform, else 128)")
    p.add_argument("--channels", choices=["auto", "1", "3"], default="auto", help="default: auto (grayscale stays 1)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="validation share (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="test share when the source has no test split")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--strict", action="store_true", help="any unusable file is an error")
    p.add_argument("--classes", help="comma-separated class names, in label order, replacing the found ones")
    p.add_argument("--cache-dir", help="default: $VISIONLAB_HOME or ~/.cache/visionlab")


def _data_config(args):
    from .data import DataConfig

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    return DataConfig(source=args.source, image_size=args.image_size, channels=args.channels,
                      val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                      strict=args.strict, classes=classes, cache_dir=args.cache_dir)


def cmd_data(args) -> int:
    from .data import load_dataset

    summary = load_dataset(_data_config(args)).summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary))
    return 0


def format_summary(s: dict) -> str:
    """The data summary as a table for a terminal."""
    h, w, c = s["image_shape"]
    lines = [
        f"source      {s['source']}",
        f"images      {h}x{w}, {c} channel{'s' if c > 1 else ''}",
        f"splits      " + ", ".join(f"{k} {v:,}" for k, v in s["splits"].items()),
        f"cache       {s['cache_dir']} ({'loaded' if s['cached'] else 'decoded in %.1f s' % s['decode_seconds']})",
        f"duplicates  {s['duplicates_across_splits']} val/test image(s) also in an earlier split",
        "",
    ]
    width = max(len("class"), *(len(name) for name in s["classes"]))
    lines.append(f"{'class':<{width}}  {'train':>8} {'val':>8} {'test':>8}")
    for i, name in enumerate(s["classes"]):
        counts = [s["class_counts"][k][i] for k in ("train", "val", "test")]
        lines.append(f"{name:<{width}}  " + " ".join(f"{n:>8,}" for n in counts))
    if s["skipped"]:
        lines += ["", f"skipped {len(s['skipped'])} file(s):"]
        lines += [f"  {x['path']}: {x['reason']}" for x in s["skipped"][:20]]
        if len(s["skipped"]) > 20:
            lines.append(f"  ... and {len(s['skipped']) - 20} more (--json lists all)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="visionlab", description="An image dataset in, a reproducible classification study out.")
    parser.add_argument("--version", action="version", version=f"visionlab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("data", help="load (decode once, cache) and summarise a dataset")
    p.add_argument("source", help="digits | mnist | fashion-mnist | cifar10 | svhn | a folder, archive, idx, .mat or .npz path")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_data_options(p)
    p.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except UserError as exc:
        sys.stderr.write(f"visionlab: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("visionlab: interrupted\n")
        return 130
