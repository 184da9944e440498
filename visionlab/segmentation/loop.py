"""Segmentation training, written out: ``train_one_epoch``, ``infer``, ``evaluate``, ``fit``, ``train``.

The classification engine's parts are used as they are: ``Engine`` (device, normalisation,
autocast), the fused optimisers and schedules, atomic safetensors checkpoints with RNG states,
``metrics.jsonl`` (+ W&B / TensorBoard) through ``Tracker``, and the run-folder, device, precision
and seeding helpers. What differs is the batch: an index slice of the uint8 images *and* masks
kept on the device, augmented jointly (augment.py), and a loss per pixel that skips 255.

Run folder: config.yaml, run.json (class map, normalisation, environment), metrics.jsonl,
checkpoint.safetensors (resume state), model.safetensors (best val mIoU), then what
evaluate.py writes (predictions.npz, metrics.json, figures/, segment.html).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from ..errors import UserError
from ..training import checkpoint
from ..training.loop import Engine, NonFiniteLoss, autocast_for, optimizer_step
from ..training.optim import make_optimizer, make_scheduler
from ..training.run import (channel_stats, keep_freed_memory, prepare_out_dir, resolve_device, resolve_precision,
                            restore_rng, rng_state, seed_everything)
from ..training.tracking import Tracker
from .augment import JointAugment
from .classes import IGNORE
from .config import SegConfig
from .metrics import confusion_matrix, mean_iou, pixel_accuracy

log = logging.getLogger(__name__)


@dataclass
class DeviceSeg:
    images: torch.Tensor  # (N, H, W, 3) uint8 on the training device
    masks: torch.Tensor  # (N, H, W) uint8 train ids on the training device

    def __len__(self) -> int:
        return len(self.images)


def to_device(split, device: torch.device) -> DeviceSeg:
    """A split's uint8 images and masks, moved once (no float copy of the set)."""
    return DeviceSeg(torch.from_numpy(np.array(split.images)).to(device),
                     torch.from_numpy(np.array(split.masks)).to(device))


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1] (NHWC storage: channels_last already)."""
    return images_u8.permute(0, 3, 1, 2).float().div_(255.0)


def forward(model, x: torch.Tensor, engine: Engine) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, K, H, W) logits: normalised, zero-padded on the bottom/right
    to a multiple of the model's stride, run under autocast, and cropped back."""
    h, w = x.shape[2:]
    x = (x - engine.mean) / engine.std
    x = F.pad(x, (0, -w % model.stride, 0, -h % model.stride))
    x = x.contiguous(memory_format=torch.channels_last) if engine.channels_last else x.contiguous()
    with engine.autocast():
        logits = model(x)  # (B, K, H', W')
    return logits[:, :, :h, :w]


def pixel_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the pixels that are not 255, and their count (an all-ignored
    batch gives loss 0, not NaN)."""
    valid = (target != IGNORE).sum()
    loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="sum")
    return loss / valid.clamp(min=1), valid


def train_one_epoch(model, data: DeviceSeg, engine: Engine, optimizer, scheduler, augment: JointAugment, *,
                    generator: torch.Generator, batch_size: int, grad_clip: float | None, on_step=None) -> dict:
    """One pass over a fresh permutation; sums stay on the device so no step waits for the host."""
    model.train()
    perm = torch.randperm(len(data), generator=generator, device=generator.device).to(engine.device)
    loss_sum = torch.zeros((), device=engine.device)
    correct = torch.zeros((), dtype=torch.long, device=engine.device)
    valid_sum = torch.zeros((), dtype=torch.long, device=engine.device)
    seen, start = 0, time.perf_counter()
    for first in range(0, len(data), batch_size):
        idx = perm[first: first + batch_size]
        if len(idx) < 2 and first > 0:
            break  # a batch of one breaks batch-norm; its image comes round next epoch
        x, y = augment(to_float(data.images[idx]), data.masks[idx], generator)  # (b, 3, h, w), (b, h, w)
        logits = forward(model, x, engine)  # (b, K, h, w)
        loss, valid = pixel_loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        (engine.scaler.scale(loss) if engine.scaler is not None else loss).backward()
        optimizer_step(model, optimizer, scheduler, engine, grad_clip)
        loss_sum += loss.detach() * len(idx)
        correct += ((logits.detach().argmax(1) == y) & (y != IGNORE)).sum()
        valid_sum += valid
        seen += len(idx)
        if on_step is not None:
            on_step(len(idx), loss_sum, seen)
    if not torch.isfinite(loss_sum):
        raise NonFiniteLoss(f"the training loss became {loss_sum.item()} in this epoch; lower the learning rate "
                            "(--lr) or set grad_clip; the last good checkpoint is kept")
    seconds = time.perf_counter() - start
    return {"train_loss": loss_sum.item() / max(seen, 1),
            "train_pixel_accuracy": correct.item() / max(valid_sum.item(), 1),
            "train_seconds": seconds, "images_per_second": seen / max(seconds, 1e-9)}


@torch.inference_mode()
def infer(model, images: torch.Tensor, engine: Engine, batch_size: int) -> torch.Tensor:
    """Run the model once over (N, H, W, 3) uint8 images: (N, H, W) uint8 predicted train ids."""
    model.eval()
    preds = [forward(model, to_float(images[i: i + batch_size]), engine).argmax(1).to(torch.uint8)
             for i in range(0, len(images), batch_size)]
    return torch.cat(preds) if preds else torch.zeros((0, *images.shape[1:3]), dtype=torch.uint8)


def evaluate(model, data: DeviceSeg, engine: Engine, batch_size: int) -> dict:
    """Validation mIoU and pixel accuracy from one confusion matrix over the whole split."""
    cm = confusion_matrix(data.masks, infer(model, data.images, engine, batch_size), model.n_classes).cpu().numpy()
    return {"val_miou": mean_iou(cm), "val_pixel_accuracy": pixel_accuracy(cm)}


def fit(model, config: SegConfig, engine: Engine, train_data: DeviceSeg, val_data: DeviceSeg,
        resume: bool) -> list[dict]:
    """The epoch loop: train, validate, log, checkpoint; the best epoch's weights in model.safetensors."""
    out = Path(config.out)
    augment = JointAugment(config.crop, config.scale, config.flip, config.jitter)
    steps_per_epoch = max(1, len(train_data) // config.batch_size + (len(train_data) % config.batch_size > 1))
    optimizer = make_optimizer(model, config.optimizer, config.lr, config.weight_decay, config.momentum)
    scheduler = make_scheduler(optimizer, config.schedule, config.lr, config.epochs * steps_per_epoch)
    generator = torch.Generator(device=engine.device)
    generator.manual_seed(config.seed)
    state_path, best_path = out / "checkpoint.safetensors", out / "model.safetensors"
    start_epoch, best = 0, -1.0
    if resume:
        rng, meta = checkpoint.load_training_state(state_path, model, optimizer, scheduler)
        restore_rng(rng, generator)
        start_epoch, best = meta["epoch"], meta["best_val_miou"]
        log.info("resuming %s at epoch %d of %d (best val mIoU %.4f)", out, start_epoch + 1, config.epochs, best)
    meta_base = {"config": config.model_dump(mode="json")}
    if not resume:  # epoch 0: a kill during the first epoch can resume, and the folder is proven writable
        checkpoint.save_training_state(state_path, model, optimizer, scheduler, rng_state(generator),
                                       {**meta_base, "epoch": 0, "best_val_miou": best})
    tracker = Tracker(out, config, start_epoch)
    for epoch in range(start_epoch, config.epochs):
        stats = train_one_epoch(model, train_data, engine, optimizer, scheduler, augment, generator=generator,
                                batch_size=config.batch_size, grad_clip=config.grad_clip,
                                on_step=_batch_bar(len(train_data), epoch, config.epochs))
        stats.update(evaluate(model, val_data, engine, config.eval_batch_size))
        stats = {"epoch": epoch + 1, **stats, "lr": optimizer.param_groups[0]["lr"]}
        if stats["val_miou"] > best and checkpoint.all_finite(model):
            best = stats["val_miou"]
            checkpoint.save_weights(best_path, model, {"epoch": epoch + 1, "val_miou": best})
        stats["best_val_miou"] = best
        tracker.sync()  # the lines so far are on disk before the checkpoint that follows them
        checkpoint.save_training_state(state_path, model, optimizer, scheduler, rng_state(generator),
                                       {**meta_base, "epoch": epoch + 1, "best_val_miou": best})
        tracker.log(stats)
        log.info("epoch %d/%d  loss %.4f  val mIoU %.4f  val pixel acc %.4f  %.1f img/s  %.1f s", epoch + 1,
                 config.epochs, stats["train_loss"], stats["val_miou"], stats["val_pixel_accuracy"],
                 stats["images_per_second"], stats["train_seconds"])
    tracker.close()
    if not best_path.exists():
        raise NonFiniteLoss("no epoch produced finite weights with a validation score; nothing to evaluate")
    return tracker.history


def _batch_bar(n_images: int, epoch: int, epochs: int):
    """A per-batch tqdm bar on a terminal (closed when the epoch's images are done); None otherwise."""
    if not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    bar = tqdm(total=n_images, desc=f"epoch {epoch + 1}/{epochs}", unit="img", leave=False)

    def on_step(images, loss_sum, seen):
        bar.update(images)
        if seen >= n_images - 1:
            bar.close()
        elif bar.n % 10 == 0:  # reading the device's sum waits for it: not every step
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}")
    return on_step


def default_out(config: SegConfig) -> Path:
    data = Path(config.data).name or "data"
    return Path("runs") / f"segment-{config.model}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(config: SegConfig, resume: bool = False) -> dict:
    """Train, evaluate on the val split and write a run folder; returns the metrics.json record."""
    from .data import SegDataConfig, load_segmentation
    from .evaluate import evaluate_trained, environment
    from .models import build_seg_model, check_model_name

    check_model_name(config.model)  # before the folder is made and the data decoded
    out = Path(config.out) if config.out else default_out(config)
    config.out = str(out)
    prepare_out_dir(out, resume)
    keep_freed_memory()
    seed_everything(config.seed, deterministic=False)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    dataset = load_segmentation(SegDataConfig(config.data, config.layout, config.image_size, config.classes,
                                              config.val_fraction, config.seed))
    if len(dataset.train) < 2 or len(dataset.val) < 1:
        raise UserError(f"{config.data}: {len(dataset.train)} training and {len(dataset.val)} validation pairs; "
                        "training needs at least 2 and 1")
    n_classes = dataset.classes.n_classes
    model = build_seg_model(config.model, n_classes, config.encoder, config.pretrained, config.decoder_channels)
    mean, std = model.normalization or channel_stats(np.asarray(dataset.train.images))
    model.to(device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)
    if not resume:
        (out / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        run_info = {"classes": dataset.classes.to_dict(), "id_kind": dataset.id_kind, "layout": dataset.layout,
                    "image_shape": list(dataset.image_shape), "mean": mean, "std": std, "precision": precision,
                    "device": str(device), "data_summary": dataset.summary(), "stride": model.stride,
                    "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                    "pretrained_used": model.pretrained_used, "pretrained_note": model.pretrained_note, **environment()}
        (out / "run.json").write_text(json.dumps(run_info, indent=1))
    engine = Engine(device, torch.tensor(mean, device=device).view(1, -1, 1, 1),
                    torch.tensor(std, device=device).view(1, -1, 1, 1), autocast_for(device, precision),
                    config.channels_last, torch.amp.GradScaler("cuda") if precision == "fp16" else None)
    history = fit(model, config, engine, to_device(dataset.train, device), to_device(dataset.val, device), resume)
    return evaluate_trained(out, model, dataset, engine, history, config)
