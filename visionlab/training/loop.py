"""The training loop, written out: ``train_one_epoch``, ``evaluate`` and a short ``fit``.

The whole split lives on the training device as one uint8 tensor (N, H, W, C); a batch is an
index slice of a seeded permutation; conversion to float, augmentation and normalisation happen
on the batch, on the device. Losses and correct counts accumulate on the device, so the step
never waits for the host; finiteness is checked every few steps.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from .distributed import SINGLE, World, all_sum, all_true

log = logging.getLogger(__name__)
CHECK_EVERY = 8  # steps between checks that the running loss is finite (a NaN stops within this)


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite: training stops, the last good checkpoint stays."""


@dataclass
class DeviceSplit:
    images: torch.Tensor  # (N, H, W, C) uint8 on the training device
    labels: torch.Tensor  # (N,) int64 on the training device

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Engine:
    """What every step needs, resolved once."""

    device: torch.device
    mean: torch.Tensor  # (1, C, 1, 1) float32: the per-channel mean on the device
    std: torch.Tensor  # (1, C, 1, 1) float32
    autocast: object  # a callable returning a context manager: autocast or nullcontext
    channels_last: bool
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    tuner: "ThreadTuner | None" = None  # CPU: each epoch keeps torch's threads or drops to one, whichever is faster
    rows: dict = field(default_factory=dict, repr=False)  # (H, W, C, unit) -> normalisation rows, see normalise_

    def prepare(self, images_u8: torch.Tensor, augment=None, generator=None, index=None, epoch: int = 0) -> torch.Tensor:
        """(B, H, W, C) uint8 -> (B, C, H, W) float, augmented in [0, 1], then normalised.
        ``index`` (B,) the images' places in the training split and ``epoch``: for flip:alternate."""
        x = images_u8.to(torch.float32, memory_format=torch.contiguous_format)  # (B, H, W, C): channels_last once permuted
        if augment is None:
            self.normalise_(x, 255.0)  # straight from the bytes: one pass fewer
            x = x.permute(0, 3, 1, 2)
        else:
            x = augment(x.permute(0, 3, 1, 2).div_(255.0), generator, index=index, epoch=epoch)
            x = x.contiguous(memory_format=torch.channels_last)  # a no-op for the usual channels_last result
            self.normalise_(x.permute(0, 2, 3, 1), 1.0)
        return x if self.channels_last else x.contiguous()

    def normalise_(self, x: torch.Tensor, unit: float) -> None:
        """In place, on contiguous (B, H, W, C) values in [0, unit]: (x / unit - mean) / std.

        As x * scale - shift over rows of H*W*C values, the per-channel factors repeated along a
        row. Broadcast per channel instead, the innermost loop would run over C = 3 values: on a
        CPU that took 0.29 ms a CIFAR-10 batch of 128, against 0.05 ms by rows."""
        key = (*x.shape[1:], unit)
        if key not in self.rows:
            h, w, c = x.shape[1:]
            mean, std = self.mean.view(1, 1, 1, c), self.std.view(1, 1, 1, c)
            self.rows[key] = tuple(v.expand(1, h, w, c).reshape(1, -1) for v in (1 / (unit * std), mean / std))
        scale, shift = self.rows[key]
        x.view(len(x), scale.shape[1]).mul_(scale).sub_(shift)


def to_device(images, labels, device: torch.device) -> DeviceSplit:
    """Move a split's uint8 images and labels to the device once (no float copy of the set)."""
    x = torch.from_numpy(images if images.flags.writeable else images.copy()) if len(labels) else torch.zeros(
        (0, *images.shape[1:]), dtype=torch.uint8)
    return DeviceSplit(x.to(device), torch.from_numpy(np.array(labels, dtype=np.int64)).to(device))  # a copy: labels may be a read-only memmap


def autocast_for(device: torch.device, precision: str):
    """A context factory for the chosen precision ('auto' resolved by the caller)."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def train_one_epoch(model, data: DeviceSplit, engine: Engine, loss_fn, optimizer, scheduler, *, batch_size: int,
                    augment, generator: torch.Generator, grad_clip: float | None, accumulate: int = 1,
                    on_step=None, world: World = SINGLE, augment_generator: torch.Generator | None = None,
                    epoch: int = 0, lookahead=None) -> dict:
    """One pass over a fresh permutation. accumulate > 1 splits each batch into that many
    micro-batches with the gradients summed: the same optimisation in less memory.
    With several ranks (``world``), each global batch of ``batch_size`` is shared out
    ``[rank::size]`` and the loss scaled so that DistributedDataParallel's gradient average is
    the global batch's mean gradient; ``augment_generator`` (default: ``generator``) draws the
    augmentation. ``lookahead`` (optim.Lookahead) averages the weights after each step.
    on_step(images, loss_sum, correct, seen) is called after each step (a progress bar)."""
    model.train()
    n = len(data)
    perm = torch.randperm(n, generator=generator, device=engine.device)  # the same on every rank
    augment_generator = augment_generator or generator
    loss_sum = torch.zeros((), device=engine.device)
    correct = torch.zeros((), dtype=torch.long, device=engine.device)
    seen = 0
    micro = max(1, -(-batch_size // (accumulate * world.size)))
    watch = FiniteWatch(engine.device, world)
    tuner = engine.tuner if engine.device.type == "cpu" else None
    if tuner is not None:
        tuner.start_epoch(-(-n // batch_size))
    start = time.perf_counter()
    for step, first in enumerate(range(0, n, batch_size)):
        batch = perm[first: first + batch_size]
        if len(batch) < 2 * world.size and step > 0:
            break  # a batch of one (per rank) breaks batch-norm; its images come round next epoch
        idx = batch[world.rank::world.size]
        optimizer.zero_grad(set_to_none=True)
        for chunk in idx.split(micro):
            # index_select, not images[chunk]: the same gather, 6 us against 56 for a batch of 256 MNIST images here
            x = engine.prepare(data.images.index_select(0, chunk), augment, augment_generator, chunk, epoch)
            y = data.labels.index_select(0, chunk)
            with engine.autocast():
                logits = model(x)  # (b, n_classes)
                # the global batch mean, in parts (DDP then averages the ranks' gradients)
                loss = loss_fn(logits.float(), y) * (len(chunk) * world.size / len(batch))
            (engine.scaler.scale(loss) if engine.scaler is not None else loss).backward()
            loss_sum += loss.detach() * (len(batch) / world.size)
            correct += (logits.detach().argmax(1) == y).sum()
        optimizer_step(model, optimizer, scheduler, engine, grad_clip)
        if lookahead is not None:
            lookahead.after_step()
        seen += len(idx)
        if tuner is not None:
            tuner.after_step()
        if on_step is not None:
            on_step(len(idx), loss_sum, correct, seen)
        if step % CHECK_EVERY == 0 and not watch.still_finite(loss_sum):
            raise NonFiniteLoss(f"the training loss became {loss_sum.item()} by step {step + 1} of this epoch; "
                                "lower the learning rate (--lr) or add --set grad_clip=1; the last good checkpoint "
                                "is kept")
    totals = torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(seen), device=engine.device,
                                                                            dtype=torch.float64)])
    all_sum(world, totals)  # the whole global batch's loss and accuracy, not rank 0's shard
    loss_total, correct_total, seen_total = totals.tolist()
    if not math.isfinite(loss_total):
        raise NonFiniteLoss(f"the training loss became {loss_total} in this epoch; lower the learning rate "
                            "(--lr) or add --set grad_clip=1; the last good checkpoint is kept")
    seconds = time.perf_counter() - start
    return {"train_loss": loss_total / max(seen_total, 1), "train_accuracy": correct_total / max(seen_total, 1),
            "train_seconds": seconds, "images_per_second": seen_total / max(seconds, 1e-9)}


class ThreadTuner:
    """Keep torch's intra-op threads, or drop to one, whichever steps faster right now.

    On a CPU that other processes share, every parallel region waits for whichever of torch's
    threads the OS has descheduled; measured on this 2-core machine with one other busy
    process, lenet's 2 MNIST epochs went from 4 s to 97 s (one thread: about 6 s). So each epoch
    times its first steps on all threads. Where the process got the CPU time of all its threads
    over those steps (at least SHARE of threads x wall time), no other work held a core and all
    threads stay. Otherwise, on the first epoch and whenever they are slower than the quickest
    one-thread steps seen in this run, it times a few steps on one thread too (and, where one
    looked faster, all threads once more) and keeps the faster count for the rest of the epoch and
    the validation after it. Measured here over 6 lenet steps: 1.96-2.01 CPU seconds per second
    on 2 quiet cores, 1.06-1.23 beside one busy process and 0.98 beside two; the one-thread look
    it spares a quiet run cost 8 steps at half speed, 40 ms of a 5 s lenet run. Off for
    deterministic runs (the thread count can change float summation order). One tuner lives for a
    whole run.
    """

    WARM, PROBE = 2, 6  # steps skipped, then steps timed, per thread count
    SHARE = 0.85  # of threads x wall time in CPU time: the threads had the cores to themselves

    def __init__(self, full: int):
        self.full = full
        self.best_one = math.inf  # the quickest median one-thread step time seen in this run
        self.start_epoch(0)

    def start_epoch(self, steps: int) -> None:
        torch.set_num_threads(self.full)
        self.step, self.last = 0, time.perf_counter()
        self.cpu_from = (self.last, time.process_time())  # (wall, process CPU) when the timed steps began
        self.times: dict[int, list[float]] = {self.full: [], 1: []}
        self.done = self.full <= 1 or steps < 3 * (self.WARM + self.PROBE)  # too short an epoch to tell

    def after_step(self) -> None:
        if self.done:
            return
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        phase = self.WARM + self.PROBE
        if self.step % phase >= self.WARM:  # phases: all threads, one, (all again)
            self.times[1 if self.step // phase == 1 else self.full].append(seconds)
        self.step += 1
        if self.step == self.WARM:
            self.cpu_from = (now, time.process_time())
        if self.step % phase:
            return
        full = _median(self.times[self.full])
        if self.step == phase:
            wall, cpu = now - self.cpu_from[0], time.process_time() - self.cpu_from[1]
            if cpu >= self.SHARE * self.full * wall or full <= self.best_one < math.inf:
                self.done = True  # the threads had the cores, or beat one thread before: keep
            else:  # the first epoch, or slower than one thread: time one thread now
                torch.set_num_threads(1)
            return
        one = _median(self.times[1])
        if self.step == 2 * phase:
            self.best_one = min(self.best_one, one)
            if full > one:
                # Time all threads once more before settling on one: a run's first steps are slow
                # while its memory and kernels warm up (measured: 10-60 ms against 5.5 ms later),
                # which alone made 3 of 5 lenet runs spend their first epoch on one thread.
                self.times[self.full] = []
                torch.set_num_threads(self.full)
                return
        chosen = self.full if full <= one else 1
        torch.set_num_threads(chosen)
        if chosen != self.full:
            log.info("CPU busy with other work: 1 thread this epoch (faster than %d now)", self.full)
        self.done = True


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


class FiniteWatch:
    """Is the running loss still finite? Asked every CHECK_EVERY steps, answered without
    stalling the device: on a GPU the flag is copied to pinned host memory asynchronously and
    read at the next check (by then long done), so a NaN stops training within 2 x CHECK_EVERY
    steps and the step never waits for the host. With several ranks the flag is AND-ed over
    them first, so all ranks stop at the same step (a rank stopping alone would hang the rest)."""

    def __init__(self, device: torch.device, world: World = SINGLE):
        self.device, self.world = device, world
        self.pending = None  # (pinned host flag, CUDA event) of the previous check

    def still_finite(self, loss_sum: torch.Tensor) -> bool:
        flag = all_true(self.world, torch.isfinite(loss_sum))
        if self.device.type != "cuda":
            return bool(flag)
        host = torch.empty((), dtype=torch.bool, pin_memory=True)
        host.copy_(flag, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        previous, self.pending = self.pending, (host, event)
        if previous is None:
            return True
        previous[1].synchronize()  # recorded CHECK_EVERY steps ago: already complete
        return bool(previous[0])


def optimizer_step(model, optimizer, scheduler, engine: Engine, grad_clip: float | None) -> None:
    """After backward: unscale (fp16), clip, step the optimiser (through the scaler) and the schedule."""
    if engine.scaler is not None:
        engine.scaler.unscale_(optimizer)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if engine.scaler is not None:
        engine.scaler.step(optimizer)
        engine.scaler.update()
    else:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "can't allocate memory" in str(exc)))


EVAL_PIXELS = {"cpu": 1 << 18, "gpu": 1 << 20}  # pixels per inference batch: 256 and 1024 images of 32x32


def eval_batch(batch_size: int | None, device: torch.device, image_pixels: int = 32 * 32) -> int:
    """Images per inference step: ``batch_size``, or by default EVAL_PIXELS' worth of images of
    ``image_pixels`` (height x width), counting smaller images as 32x32 (at most 256 images on a
    CPU, 1024 on a GPU).

    On a CPU larger batches outgrow the caches. Measured on this 2-core CPU (bf16): 10k MNIST images
    through the cnn in 0.25-0.27 s at 256 against 0.44-1.1 s at 1024; the cnn on CIFAR-10 26,800
    images/s at 256, 24,600 at 128, 23,000 at 512; at 128 px 1,730 images/s at 16 and 1,480 at
    128; ResNet-18 at 32 px 2.6-3.3 s per 2,048 images at 256 against 3.9-4.0 s at 1024; lenet the
    same either way. On a GPU the bound is memory, not speed (not measured here: no GPU was lent):
    1024 CIFAR-sized images, 64 at 128 px, 20 at 224 px, where 1024 ResNet-18 inputs at 224 px
    would need a 1.6 GB activation for the stem alone, beside what training keeps cached."""
    if batch_size:
        return batch_size
    budget = EVAL_PIXELS["cpu" if device.type == "cpu" else "gpu"]
    return max(1, budget // max(32 * 32, image_pixels))


@torch.inference_mode()
def infer(model, images: torch.Tensor, engine: Engine, batch_size: int | None, features: bool = False, views=None):
    """Run the model once over uint8 images: (logits (N, K) float32, features (N, D) if asked else
    None, plain-view logits if ``views`` else None), ``batch_size`` images at a time (None: eval_batch's).

    ``views`` (test-time augmentation, evaluation/tta.py): a normalised batch x -> [(weight, view),
    ...] with x itself first; the logits are then the weighted sum over the views, while features
    and the plain-view logits come from x alone."""
    model.eval()
    logits, feats, plain = [], [], []
    batch_size = eval_batch(batch_size, engine.device, images.shape[1] * images.shape[2])
    for first in range(0, len(images), batch_size):
        x = engine.prepare(images[first: first + batch_size])
        with engine.autocast():
            if features:
                f = model.forward_features(x)
                feats.append(f.float())
                out = model.forward_head(f).float()
            else:
                out = model(x).float()
            if views is not None:
                plain.append(out)
                (weight, _), *rest = views(x)
                out = weight * out
                for weight, v in rest:
                    v = v.contiguous(memory_format=torch.channels_last) if engine.channels_last else v.contiguous()
                    out = out + weight * model(v).float()
        logits.append(out)
    if not logits:
        return torch.zeros(0), (torch.zeros(0) if features else None), (torch.zeros(0) if views is not None else None)
    return torch.cat(logits), (torch.cat(feats) if features else None), (torch.cat(plain) if views is not None else None)


def evaluate(model, data: DeviceSplit, engine: Engine, batch_size: int | None) -> dict:
    """Validation loss and accuracy (unweighted, no label smoothing: comparable across runs)."""
    if len(data) == 0:
        return {"val_loss": math.nan, "val_accuracy": math.nan}
    logits, _, _ = infer(model, data.images, engine, batch_size)
    loss = F.cross_entropy(logits, data.labels).item()
    accuracy = (logits.argmax(1) == data.labels).float().mean().item()
    return {"val_loss": loss, "val_accuracy": accuracy}


def make_loss(class_weights: torch.Tensor | None, label_smoothing: float):
    def loss_fn(logits, labels):
        return F.cross_entropy(logits, labels, weight=class_weights, label_smoothing=label_smoothing)

    return loss_fn
