"""``run_scratch``: an image and a dataset -> DIR/scratch.json, the figures and DIR/scratch.html.

    image (file, or a test image of the data) -> standard kernels, pooling -> kernels.png
    loop vs im2col convolution on a fixed shape -> timing
    the NumPy network: gradient check at initialisation -> training -> training.png, filters.png

The network trains on the data's own training split when its images are at most 28x28 (at most
``MAX_TRAIN`` of them, a seeded subset: MNIST then trains in about 20 s, not minutes), else on digits.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..errors import UserError
from . import figure
from .conv import conv2d, conv2d_loop
from .net import NetConfig, filter_activity, gradient_check, init_params, one_blas_thread, to_inputs, train_on

log = logging.getLogger(__name__)
MAX_NET_SIDE = 28  # larger images (CIFAR, photos) would make the NumPy network too slow: train on digits
MAX_TRAIN = 5000  # training images used at most (MNIST has 54,000 after validation)
MAX_VAL = 1000  # validation images scored after each epoch, at most (the test split is scored whole)
MAX_IMAGE_SIDE = 256  # a larger input image is shrunk for the kernel figure
GRADCHECK_IMAGES = 8  # batch for the numerical gradient check
ACTIVITY_IMAGES = 500  # test images on which each learned filter's ReLU activity is measured
TIMING_SHAPE = {"x": (8, 3, 32, 32), "w": (8, 3, 3, 3), "stride": 1, "padding": 1}  # loop vs im2col


def read_grey(path: Path) -> np.ndarray:
    """An image file -> (H, W) float64 in [0, 1]; a bad path or file is a UserError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise UserError(f"{path}: {what}; give an image file (PNG, JPEG, ...) or leave IMAGE out to use the data")
    try:
        with Image.open(path) as img:
            img = img.convert("L")
            if max(img.size) > MAX_IMAGE_SIDE:
                log.info("%s: %dx%d (height x width) shrunk to at most %d pixels a side", path, img.height,
                         img.width, MAX_IMAGE_SIDE)
                img.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
            return np.asarray(img, dtype=np.float64) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path}: cannot read it as an image ({exc.__class__.__name__}); "
                        "give a PNG, JPEG or other file Pillow can open") from None


def _grey(image: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 -> (H, W) float64 in [0, 1] (ITU-R 601 luma for colour)."""
    x = image.astype(np.float64) / 255.0
    return x[..., 0] if x.shape[-1] == 1 else x[..., :3] @ np.array([0.299, 0.587, 0.114])


def time_convolutions(seed: int = 0) -> dict:
    """Seconds of the loop and the im2col convolution on TIMING_SHAPE (best of 3 and of 20 runs)."""
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=TIMING_SHAPE["x"]), rng.normal(size=TIMING_SHAPE["w"])
    b, s, p = rng.normal(size=w.shape[0]), TIMING_SHAPE["stride"], TIMING_SHAPE["padding"]

    def best(fn, repeats):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn(x, w, b, s, p)[0]
            times.append(time.perf_counter() - start)
        return min(times), out

    loop_s, loop_out = best(conv2d_loop, 3)
    fast_s, fast_out = best(conv2d, 20)
    log.info("conv %s: loop %.3f s, im2col %.5f s (%.0fx)", TIMING_SHAPE, loop_s, fast_s, loop_s / fast_s)
    return {"shape": {k: list(v) if isinstance(v, tuple) else v for k, v in TIMING_SHAPE.items()},
            "loop_seconds": loop_s, "im2col_seconds": fast_s, "speedup": loop_s / fast_s,
            "max_abs_difference": float(np.abs(loop_out - fast_out).max())}


def _net_dataset(ds, data: str, seed: int):
    """The dataset to train on: ``ds`` if its images are small enough, else digits (and why)."""
    from ..data import DataConfig, load_dataset

    h, w, _ = ds.image_shape
    if max(h, w) <= MAX_NET_SIDE:
        return ds, ""
    note = f"{data} images are {h}x{w} (> {MAX_NET_SIDE}); the NumPy network trains on digits instead"
    log.info(note)
    return load_dataset(DataConfig(source="digits", seed=seed)), note


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _network(net_ds, config: NetConfig, out: Path) -> dict:
    """Gradient check at initialisation, training, and the two network figures; returns the record."""
    x = to_inputs(net_ds.train.images[:GRADCHECK_IMAGES])
    x = (x - x.mean()) / (x.std() or 1.0)
    params = init_params(x.shape[1:], len(net_ds.classes), config, np.random.default_rng(config.seed))
    with one_blas_thread():
        errors = gradient_check(params, x, np.asarray(net_ds.train.labels[:GRADCHECK_IMAGES]), seed=config.seed)
    log.info("gradient check (relative error): %s", ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    result = train_on(net_ds, config, max_train=MAX_TRAIN, max_val=MAX_VAL)

    title = (f"NumPy conv net on {Path(net_ds.source).name}: {result['n_train']:,} training, "
             f"{result['n_val']:,} validation, {len(net_ds.test):,} test images")
    figure.training_figure(result["history"], result["test_accuracy"], out / "training.png", title)
    probe = (to_inputs(net_ds.test.images[:ACTIVITY_IMAGES]) - result["mean"]) / result["std"]
    activity = filter_activity(result["params"], probe)
    dead = int((activity == 0).sum())
    figure.filters_figure(result["initial_params"], result["params"], probe[:1], out / "filters.png",
                          f"{dead} of {len(activity)} filters never fire on {len(probe)} test images" if dead else
                          f"every filter fires on some of {len(probe)} test images")
    return {
        "gradient_check": {"relative_error": errors, "max": max(errors.values()),
                           "passed": max(errors.values()) < 1e-5, "images": len(x)},
        "network": {"data": net_ds.source, "config": asdict(config),
                    "architecture": f"conv {config.kernel}x{config.kernel} x{config.filters}, pad "
                                    f"{config.kernel // 2} -> ReLU -> max pool 2 -> dense -> softmax",
                    "n_train": result["n_train"], "n_train_available": result["n_train_available"],
                    "n_val_per_epoch": result["n_val"], "n_test": len(net_ds.test),
                    "epochs": config.epochs, "test_accuracy": result["test_accuracy"],
                    "test_loss": result["test_loss"], "train_seconds": result["train_seconds"],
                    "filter_activity": [round(float(a), 4) for a in activity], "dead_filters": dead,
                    "history": result["history"]},
    }


def run_scratch(out: Path, image: Path | None = None, data: str = "digits", seed: int = 0) -> dict:
    """Write kernels.png, training.png, filters.png, scratch.json and scratch.html under out."""
    from .. import __version__
    from ..data import DataConfig, load_dataset

    clock = [time.perf_counter()]
    seconds = {}

    def lap(name: str) -> None:
        clock.append(time.perf_counter())
        seconds[name] = round(clock[-1] - clock[-2], 3)

    out = Path(out)
    picture = read_grey(image) if image is not None else None  # a bad file fails before any work
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the output folder ({exc.strerror}); choose another --out") from None
    ds = load_dataset(DataConfig(source=data, seed=seed))
    lap("load")

    # 1. the image through standard kernels and pooling
    if picture is None:
        index = int(np.random.default_rng(seed).integers(len(ds.test)))
        picture = _grey(ds.test.images[index])
        described = f"test image {index} of {data} (class {ds.classes[ds.test.labels[index]]})"
    else:
        described = str(image)
    figure.kernels_figure(picture, out / "kernels.png", caption=described)
    lap("kernels")

    # 2. the same convolution, two ways
    with one_blas_thread():
        timing = time_convolutions(seed)
    lap("timing")

    # 3. the network: gradient check, training, figures
    net_ds, note = _net_dataset(ds, data, seed)
    if len(net_ds.train) > MAX_TRAIN:
        note = (note + "; " if note else "") + (f"trained on {MAX_TRAIN:,} of {len(net_ds.train):,} training images"
                                                 f" (a seeded random subset, to keep NumPy training short)")
        log.info("NumPy net: %s", note)
    network = _network(net_ds, NetConfig(seed=seed), out)
    network["network"]["note"] = note
    lap("network")
    seconds["total"] = round(clock[-1] - clock[0], 3)

    record = {
        "data": ds.source, "image": described, "image_shape": list(picture.shape), "seed": seed,
        "kernels": list(figure.KERNELS), "conv_timing": timing, **network,
        "figures": {"kernels": "kernels.png", "training": "training.png", "filters": "filters.png"},
        "seconds": seconds, "version": __version__, "git_revision": _git_revision(),
    }
    (out / "scratch.json").write_text(json.dumps(record, indent=2))
    (out / "scratch.html").write_text(render_html(record, out))
    log.info("scratch: %s (%.1f s)", out / "scratch.html", seconds["total"])
    return {**record, "html": str(out / "scratch.html"), "json": str(out / "scratch.json")}


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def render_html(record: dict, out: Path) -> str:
    """One self-contained page: the numbers, then the figures inlined as base64 PNGs."""
    e = html.escape
    t, g, n = record["conv_timing"], record["gradient_check"], record["network"]
    rows = [
        ("data", record["data"]),
        ("image", f"{record['image']}, {record['image_shape'][0]}x{record['image_shape'][1]}"),
        ("conv timing", f"x {t['shape']['x']}, w {t['shape']['w']}: loop {t['loop_seconds']:.3f} s, "
                        f"im2col {t['im2col_seconds'] * 1e3:.2f} ms ({t['speedup']:.0f}x faster), "
                        f"max |difference| {t['max_abs_difference']:.1e}"),
        ("gradient check", ", ".join(f"{k} {v:.1e}" for k, v in g["relative_error"].items())
         + (" (passed)" if g["passed"] else " (FAILED: above 1e-5)")),
        ("network", f"{n['architecture']}, trained on {n['data']}"),
        ("training", f"{n['n_train']:,} of {n['n_train_available']:,} training images, {n['epochs']} epochs, "
                     f"{n['train_seconds']:.1f} s; {n['n_val_per_epoch']:,} validation images scored per epoch"),
        *([("note", n["note"])] if n["note"] else []),
        ("test accuracy", f"{n['test_accuracy']:.2%} on {n['n_test']:,} images"),
        ("dead filters", f"{n['dead_filters']} of {len(n['filter_activity'])} never fire on the first "
                         f"{ACTIVITY_IMAGES} test images"),
        ("total time", f"{record['seconds']['total']:.1f} s"),
    ]
    table = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    captions = {"kernels": "An image through standard kernels, then pooled",
                "training": "Training the NumPy network", "filters": "Its filters before and after training"}
    figs = "\n".join(f"<h2>{e(captions[k])}</h2>\n{_img(out / v, captions[k])}" for k, v in record["figures"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>visionlab scratch</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}}
th{{text-align:left;padding-right:1em;vertical-align:top}}img{{max-width:100%}}</style></head>
<body><h1>Convolution, pooling and a network from scratch in NumPy</h1>
<table>
{table}
</table>
{figs}
</body></html>
"""
