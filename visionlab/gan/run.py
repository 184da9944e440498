"""``run_gan``: one GAN run from config to an output folder.

    config -> data (28x28, 1 channel) -> G, D -> judge classifier (trained once, cached)
           -> fit (per epoch: losses, grid, quality, checkpoint) -> plots, gan.json, gan.html

Output folder: losses.jsonl (per batch), quality.jsonl (per epoch, 0 = untrained),
samples_epoch_XXX.png and samples.png (4x4 grids of a fixed latent batch), losses.png,
quality.png, checkpoint.safetensors (resume state), generator.safetensors (final G weights),
classifier.safetensors (the judge), gan.json (config, quality, timing) and gan.html.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from .config import GANConfig
from .models import build_gan
from .quality import load_or_train_classifier, make_scorer, plot_quality, reference_stats, score_images
from .train import STATE_FILE, fit, plot_losses, read_jsonl, saved_epoch, to_unit_range
from ..files import write_text

log = logging.getLogger(__name__)
IMAGE_SIZE = 28  # both architectures generate 28x28; every source is resized to it


def run_gan(config: GANConfig, resume: bool = False) -> dict:
    """Train (or, with resume, continue) a GAN and write the output folder; returns the gan.json record."""
    from .. import __version__
    from ..data import DataConfig, load_dataset
    from ..training.run import keep_freed_memory, prepare_out_dir, resolve_device, seed_everything

    start = time.perf_counter()
    out = Path(config.out)
    prepare_out_dir(out, resume)  # refuses to overwrite a run, or to resume where nothing was saved
    if resume and saved_epoch(out / STATE_FILE) >= config.epochs:
        log.info("%s already trained %d epochs; only the outputs are written again", out, config.epochs)
    keep_freed_memory()
    seed_everything(config.seed, deterministic=False)
    device = resolve_device(config.device)
    dataset = load_dataset(DataConfig(source=config.data, image_size=IMAGE_SIZE, channels="1", seed=config.seed))
    images = torch.from_numpy(subset(dataset.train.images, config.max_train_images, config.seed)).to(device)
    G, D = build_gan(config.arch, config.latent)  # initialised from the seeded global RNG
    G.to(device)
    D.to(device)
    judge, judge_meta = load_or_train_classifier(out, dataset, config, device)
    real_stats = reference_stats(judge, split_tensor(dataset.test.images, device))
    val = split_tensor(subset(dataset.val.images, config.quality_samples, config.seed), device)
    real_quality = score_images(judge, val, real_stats) if len(val) >= 2 else None
    log.info("GAN %s on %s: %d training images, %s, G %s / D %s parameters", config.arch, dataset.source,
             len(images), device, f"{n_params(G):,}", f"{n_params(D):,}")
    history = fit(G, D, images, config, make_scorer(judge, real_stats, config, device), resume)

    from ..training import checkpoint

    checkpoint.save_weights(out / "generator.safetensors", G, {"arch": config.arch, "latent": config.latent})
    plot_losses(read_jsonl(out / "losses.jsonl"), out / "losses.png")
    plot_quality(history, out / "quality.png", real_quality["frechet_distance"] if real_quality else None)
    trained = [h for h in history if h["epoch"] > 0]
    record = {
        "config": config.to_dict(), "visionlab_version": __version__, "device": str(device),
        "torch_threads": torch.get_num_threads(), "data": {"source": dataset.source, "classes": dataset.classes,
                                                           "train_images": len(images)},
        "params": {"generator": n_params(G), "discriminator": n_params(D)},
        "classifier": {"model": "lenet", **judge_meta}, "real_quality": real_quality,
        "quality": history, "final_quality": history[-1],
        "epoch_seconds": round(float(np.mean([h["train_seconds"] for h in trained])), 3) if trained else None,
        "seconds": round(time.perf_counter() - start, 3),  # this invocation, data loading included
        "out": str(out),
    }
    write_text(out / "gan.json", json.dumps(record, indent=1))
    write_text(out / "gan.html", render_html(record, out))
    return record


def subset(images: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """A writable copy of at most cap images, a seeded random choice kept in source order: the first
    cap would not do, since sources sorted by class (MNIST's folders) keep that order in a split."""
    if cap is not None and cap < len(images):
        return np.array(images[np.sort(np.random.default_rng(seed).permutation(len(images))[:cap])])
    return np.array(images)


def split_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, 28, 28, 1) uint8 -> (N, 1, 28, 28) in [-1, 1] on the device."""
    return to_unit_range(torch.from_numpy(np.array(images)).to(device))  # a copy: splits may be read-only maps


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _img(path: Path, alt: str) -> str:
    if not path.exists():
        return f"<p>({html.escape(path.name)} missing)</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def render_html(record: dict, out: Path) -> str:
    """A self-contained page: every image inlined as base64, every string from the user escaped."""
    e = html.escape
    cfg = record["config"]
    keys = ("frechet_distance", "coverage", "class_entropy", "confidence")
    rows = "".join(f"<tr><td>{h['epoch']}</td>" + "".join(f"<td>{h[k]:.4g}</td>" for k in keys) +
                   f"<td>{h.get('train_seconds', 0):.1f}</td></tr>" for h in record["quality"])
    real = record["real_quality"]
    if real:
        rows += ("<tr><td>real</td>" + "".join(f"<td>{real[k]:.4g}</td>" for k in keys) + "<td></td></tr>")
    grids = "".join(f"<figure>{_img(p, p.stem)}<figcaption>{e(p.stem.replace('samples_', ''))}</figcaption></figure>"
                    for p in sorted(out.glob("samples_epoch_*.png")))
    accuracy = record["classifier"].get("test_accuracy")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>visionlab GAN: {e(record['data']['source'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}
figure{{display:inline-block;margin:.3em;text-align:center}}figure img{{width:160px}}img{{max-width:100%}}</style>
</head><body>
<h1>GAN ({e(cfg['arch'])}) on {e(record['data']['source'])}</h1>
<p>{record['data']['train_images']:,} training images, {cfg['epochs']} epochs of {cfg['batch_size']}-image batches,
Adam lr {cfg['lr']:g} beta1 {cfg['beta1']:g}, latent {cfg['latent']}, seed {cfg['seed']}, device {e(record['device'])};
{record['seconds']:.0f} s. Generator {record['params']['generator']:,} parameters, discriminator
{record['params']['discriminator']:,}.</p>
<h2>Final samples</h2>{_img(out / 'samples.png', 'final samples')}
<h2>Quality per epoch</h2>
<p>Scored by a lenet classifier trained on the same data (test accuracy {e(f'{accuracy:.4f}' if accuracy else 'n/a')}):
Frechet distance of its penultimate features to the real test images (lower is better), class coverage,
normalised entropy of the predicted classes and mean confidence (higher is better). Epoch 0 is the untrained
generator; "real" scores real validation images the same way.</p>
<table><tr><th>epoch</th>{''.join(f'<th>{k}</th>' for k in keys)}<th>train s</th></tr>{rows}</table>
{_img(out / 'quality.png', 'quality per epoch')}
<h2>Losses</h2>{_img(out / 'losses.png', 'losses per batch')}
<h2>Samples after each epoch (fixed latent batch)</h2>{grids}
<h2>Config</h2><pre>{e(json.dumps(cfg, indent=1))}</pre>
</body></html>
"""
