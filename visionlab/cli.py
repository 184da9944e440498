"""The ``visionlab`` command: a thin shell. Each subcommand parses its flags, builds a config and
calls one library function. A ``UserError`` becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import sys
import threading
from pathlib import Path

from .errors import UserError, check_writable_dir

log = logging.getLogger("visionlab")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as for every other user mistake
        sys.stderr.write(f"visionlab: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at each message, not the one at set-up (which a caller
    such as a test harness may since have replaced and closed)."""

    def emit(self, record):
        self.stream = sys.stderr
        super().emit(record)


def _setup_logging(verbose: bool) -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("visionlab: %(message)s"))
    root = logging.getLogger("visionlab")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


@contextlib.contextmanager
def _importing():
    """Python's cyclic garbage collector off while a command imports its libraries; their objects
    then frozen out of every later collection, and the collector back on, whatever happened.

    Why: importing torch creates about 200,000 objects, and the collector, set off by allocations,
    walks the growing heap again and again: 3 full and 38 middle collections, 0.15 s of lenet's
    2-epoch MNIST command on this 2-core CPU (import torch alone: 1.07 s median of 12 with the
    collector on, 0.95 s off). No import leaves cyclic garbage worth collecting, and frozen objects
    are never walked again, so the collections during training cost less too.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-size", type=int, help="square side in pixels (default: native if uniform, else 128)")
    p.add_argument("--channels", choices=["auto", "1", "3"], default="auto", help="default: auto (grayscale stays 1)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="validation share (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="test share when the source has no test split")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--strict", action="store_true", help="any unusable file is an error")
    p.add_argument("--merge-splits", action="store_true", help="pool the source's splits, then split by the fractions")
    p.add_argument("--classes", help="comma-separated class names, in label order, replacing the found ones")
    p.add_argument("--cache-dir", help="default: $VISIONLAB_HOME or ~/.cache/visionlab")


def _data_config(args):
    from .data import DataConfig

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    return DataConfig(source=args.source, image_size=args.image_size, channels=args.channels,
                      val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                      strict=args.strict, classes=classes, cache_dir=args.cache_dir, merge_splits=args.merge_splits)


def cmd_data(args) -> int:
    with _importing():
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
        "splits      " + ", ".join(f"{k} {v:,}" for k, v in s["splits"].items()),
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


def _or_auto(kind):
    """An argparse type: the word auto, or a value of ``kind``."""
    def convert(text: str):
        return text if text == "auto" else kind(text)
    convert.__name__ = kind.__name__  # argparse names it in "invalid int value: 'x'"
    return convert


TRAIN_FLAGS = {  # flag -> (type, help); each is also a config key (dashes become underscores)
    "data": (str, "dataset: built-in name or path (default digits)"),
    "model": (str, "mlp | cnn2 | cnn3 | cnn | lenet | resnet18 | timm:<name> (default lenet)"),
    "augment": (str, "none | light | standard | strong | a list like crop:4,flip (default none)"),
    "epochs": (int, "passes over the training set (default 10)"),
    "batch-size": (_or_auto(int), "images per step (default auto: 256 for 25,600 training images or more, else 128; "
                   "mlp and lenet on images up to 32x32: 512 from 51,200)"),
    "lr": (_or_auto(float), "peak learning rate (default auto: 0.002 per 128 images of batch, from 0.002 to 0.008)"),
    "weights": (str, "local state dict (.safetensors or .pt) to start from"),
    "device": (str, "auto | cpu | cuda (default auto)"),
    "seed": (int, "one seed for split, initialisation, shuffling and augmentation (default 0)"),
    "optimizer": (str, "adam | adamw | sgd (default adam)"),
    "schedule": (str, "onecycle | cosine | step | triangle | none (default onecycle)"),
    "precision": (str, "auto | bf16 | fp16 | fp32 (default auto: bf16 where supported)"),
    "wandb": (str, "off | offline | online (default off)"),
    "image-size": (int, "square side to resize images to"),
    "devices": (int, "data-parallel processes, one per GPU (default 1; on CPU they share the cores)"),
}


def _parse_set(items: list[str] | None) -> dict:
    import yaml

    values = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set takes key=value, got '{item}'")
        values[key.strip()] = yaml.safe_load(value)  # YAML typing: 3 -> int, [a, b] -> list, true -> bool
    return values


def cmd_train(args) -> int:
    from .evaluation.painter import Painter

    with Painter.start() as painter:  # first: it loads matplotlib on another core while torch loads here
        return _train(args, painter)


def _train(args, painter) -> int:
    with _importing():
        from .training import load_config, train
        from .training.config import read_yaml, resume_config_file

    overrides = {key.replace("-", "_"): getattr(args, key.replace("-", "_")) for key in TRAIN_FLAGS}
    overrides.update(_parse_set(args.set))
    overrides["out"] = args.out
    config_file = args.config
    if args.resume:
        config_file = resume_config_file(args.out)
        base = read_yaml(config_file)
        changed = {k: v for k, v in overrides.items() if v is not None and k != "out" and base.get(k) != v}
        if changed:
            log.info("resume: overriding %s", ", ".join(f"{k}={v}" for k, v in changed.items()))
    result = train(load_config(config_file, overrides), resume=args.resume, painter=painter)
    if not result:  # a data-parallel rank other than 0 (under torchrun): rank 0 reports
        return 0
    print(f"test accuracy {result['test_accuracy']:.4f}  macro F1 {result['test_macro_f1']:.4f}  "
          f"({result['epochs']} epochs, {result['train_seconds']:.1f} s, "
          f"{result['train_images_per_second']:.0f} img/s)\nrun folder: {result['out']}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluation.painter import Painter

    with Painter.start() as painter:
        with _importing():
            from .evaluation import reevaluate

        result = reevaluate(Path(args.run_dir), data=args.data, device=args.device, painter=painter)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test accuracy {result['test_accuracy']:.4f}  macro F1 {result['test_macro_f1']:.4f}  "
              f"weighted F1 {result['test_weighted_f1']:.4f}  ({result['n_test']} images of {result['data']})\n"
              f"written to {result['out']}")
    return 0


def cmd_predict(args) -> int:
    with _importing():
        from .evaluation import predict_images

    results = predict_images(Path(args.run_dir), args.images, top_k=args.top_k, device=args.device)
    if args.json:
        print(json.dumps(results))
        return 0
    for r in results:
        print(r["path"] + ": " + ", ".join(f"{t['class']} {t['probability']:.1%}" for t in r["top"]))
    return 0


def cmd_eda(args) -> int:
    with _importing():
        from .data import load_dataset
        from .eda import run_eda

    dataset = load_dataset(_data_config(args))
    name = Path(args.source).name.split(".")[0] or "data"
    out = Path(args.out) if args.out else Path("runs") / f"eda-{name}"
    check_writable_dir(out)
    record = run_eda(dataset, out, seed=args.seed, samples_per_class=args.samples)
    for line in record["observations"]:
        print(f"- {line}")
    print(f"eda: {out / 'eda.html'} ({record['seconds']['total']:.1f} s)")
    return 0


def _workers(text: str):
    from .study.config import parse_workers

    try:
        return parse_workers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, not {text!r}") from None


def cmd_run(args) -> int:
    with _importing():
        from .study import load_study, run_study

    study, where = load_study(args.study, data=args.data)
    if args.workers is not None:
        study.workers = args.workers
    report = run_study(study, Path(args.out) if args.out else None, quick=args.quick, where=where)
    print(f"report: {report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="visionlab", description="An image dataset in, a reproducible classification study out.")
    parser.add_argument("--version", action="version", version=f"visionlab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="run a whole study: data, experiments, analysis, comparison, HTML report")
    p.add_argument("study", nargs="?", help="study YAML (default: the built-in study on digits)")
    p.add_argument("--data", help="replace the study's dataset (built-in name or path)")
    p.add_argument("--out", help="study folder (default runs/<study>-<data>; the same command resumes it)")
    p.add_argument("--quick", action="store_true", help="a fast look: few epochs, capped training images")
    p.add_argument("--workers", type=_workers, help="experiments at once, one process each: N or auto (one "
                   "per visible GPU, else per core; default: the study's workers key, else 1)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("data", help="load (decode once, cache) and summarise a dataset")
    p.add_argument("source", help="digits | mnist | fashion-mnist | cifar10 | svhn | a folder, archive, idx, .mat or .npz path")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_data_options(p)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("eda", help="exploratory analysis of a dataset: eda.json, figures, eda.html")
    p.add_argument("source", help="anything `visionlab data` takes")
    p.add_argument("--out", help="output folder (default runs/eda-<data>)")
    p.add_argument("--samples", type=int, default=8, help="sample images per class in the grid (default 8)")
    _add_data_options(p)
    p.set_defaults(func=cmd_eda)

    # the extras: each registers its own subcommand; the core never imports their code
    from .gan.command import register as register_gan
    from .numerics.command import register as register_numerics
    from .scratch.command import register as register_scratch
    from .segmentation.command import register as register_segment

    register_gan(sub)
    register_numerics(sub)
    register_scratch(sub)
    register_segment(sub)

    p = sub.add_parser("train", help="train one model, evaluate it on the test split")
    for flag, (kind, text) in TRAIN_FLAGS.items():
        p.add_argument(f"--{flag}", type=kind, help=text)
    p.add_argument("--config", help="YAML file whose keys are these flags' names (batch_size: 128, ...)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config key, e.g. --set label_smoothing=0.1")
    p.add_argument("--out", help="run folder (default runs/<model>-<data>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a saved run again, also on another dataset with the same classes")
    p.add_argument("run_dir")
    p.add_argument("--data", help="another dataset (default: the run's own test split)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify image files with a trained run")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)
    return parser


def run() -> None:
    """The ``visionlab`` command (and ``python -m visionlab``): ``main()``, then a quick exit.

    Why by hand: with torch loaded, Python's interpreter teardown (freeing every module's
    objects, then the native libraries' destructors, CUDA's among them) took 0.4 s on this
    2-core CPU after the command's work was done: 6% of lenet's 2-epoch MNIST command. Every
    file a command writes is closed (most renamed into place) before ``main`` returns, so once
    logging, stdout and stderr are flushed nothing is left to do and ``os._exit`` skips it. Where
    something may still be at work (a thread that is not a daemon, a multiprocessing child), the
    ordinary exit runs instead and waits for it as before.
    """
    code = main()
    alive = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    children = "multiprocessing" in sys.modules and sys.modules["multiprocessing"].active_children()
    if alive or children:
        raise SystemExit(code)
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: let the ordinary exit report it
        raise SystemExit(code) from None
    os._exit(code)


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
