"""``train``: one run from config to a run folder (config, metrics, weights, predictions, plots).

    config -> dataset -> model -> fit (epochs, checkpoints) -> best weights -> evaluation

Run folder: config.yaml (resolved), metrics.jsonl (per epoch), checkpoint.safetensors (resume
state), model.safetensors (best weights), then what evaluation writes (metrics.json,
predictions.npz, plots).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from . import checkpoint, distributed
from .config import TrainConfig, save_config
from .loop import (Engine, NonFiniteLoss, ThreadTuner, autocast_for, evaluate, is_out_of_memory, make_loss, to_device,
                   train_one_epoch)
from .optim import Lookahead, make_optimizer, make_scheduler
from .tracking import Tracker

log = logging.getLogger(__name__)
STATS_PIXELS = 1 << 24  # about this many pixels a channel give the normalisation statistics (channel_stats)
RUN_FILES = ("config.yaml", "checkpoint.safetensors", "metrics.jsonl", "model.safetensors")


def default_out(config: TrainConfig) -> Path:
    data = Path(config.data).name.split(".")[0] or "data"
    return Path("runs") / f"{config.model.replace(':', '-')}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_out_dir(out: Path, resume: bool) -> None:
    """Refuse to overwrite a run; check the folder is writable before any work starts."""
    if resume:
        if not (out / "checkpoint.safetensors").exists():
            raise UserError(f"{out}: nothing to resume (no checkpoint.safetensors); run without --resume to start")
        return
    if out.exists() and any((out / name).exists() for name in RUN_FILES):
        raise UserError(f"{out} already holds a run; continue it with --resume or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{out}: cannot write the run folder ({exc.strerror}); choose another --out") from None


def resolve_device(name: str) -> torch.device:
    return torch.device("cuda" if distributed.uses_gpus(name) else "cpu")


def cpu_has_bf16() -> bool:
    """AMX or AVX-512 BF16: bf16 matmuls/convolutions run natively (about 5x fp32 for a small CNN)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise UserError("precision fp16 needs a GPU; on CPU use bf16 or fp32")
    return precision


def keep_freed_memory() -> None:
    """Stop glibc from handing freed activation buffers back to the OS after every step.

    PyTorch's CPU allocator does not cache: each step mallocs its activations and gradients
    afresh. With glibc's defaults, blocks over its (adaptive) mmap threshold, and the top of the
    heap beyond 128 KiB, go back to the kernel on free, so the next step page-faults the same
    megabytes in again; measured here, that doubled a small CNN's first epoch (lenet on MNIST:
    4.4 s -> 2.0 s with this). The threshold cannot be raised past 32 MiB, and larger images make
    larger buffers (the cnn's first activation at 128 px, batch 128: 134 MB), so blocks are never
    mmapped at all: they come from the heap and stay there for the next step. Measured on a folder
    of 3,000 photos at 128 px: the cnn trains at 455-553 images/s instead of 286-322 (3 epochs:
    19.3 s instead of 31.6 s wall) and infers 2x faster; ResNet-18 at 128 px 141 against 124
    images/s. The price is memory kept for reuse: that run's peak RSS 1.97 GB instead of 1.78.
    MNIST and CIFAR-10 at 32 px (buffers under 32 MiB) are unchanged. A no-op where libc is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
    mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest allowed, for a malloc that does not take M_MMAP_MAX
    mallopt(M_MMAP_MAX, 0)  # no block from mmap: every size is served from, and freed to, the heap
    mallopt(M_TRIM_THRESHOLD, 1 << 30)  # keep up to 1 GiB of freed heap for reuse


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] of (N, H, W, C) uint8, from every k-th image: up to
    10,000 images and about STATS_PIXELS pixels a channel. MNIST, SVHN and CIFAR-10 keep about
    10,000 images; 5,000 photos at 128 px use 1,000 (measured: 0.1 s, against 6 s for all 5,000
    before, paid by every run of a study)."""
    from ..data.pixels import channel_mean_std

    pixels = int(np.prod(images.shape[1:3])) if len(images) else 1
    mean, std = channel_mean_std(images[:: max(1, len(images) // 10_000, -(-len(images) * pixels // STATS_PIXELS))])
    return mean.tolist(), np.maximum(std, 1e-3).tolist()


def digit_like(classes: list[str]) -> bool:
    """Digit datasets must not be flipped: a mirrored 2 is not a 2."""
    return set(classes) <= {str(i) for i in range(10)}


def class_weight_tensor(labels: np.ndarray, n_classes: int, device) -> torch.Tensor:
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = len(labels) / (n_classes * np.maximum(counts, 1))  # scikit-learn's 'balanced'
    return torch.tensor(weights, dtype=torch.float32, device=device)


def rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def train(config: TrainConfig, resume: bool = False, painter=None) -> dict:
    """Train, evaluate and write a run folder; returns the metrics.json record (an empty dict on
    data-parallel ranks other than 0, which write nothing). ``painter`` (evaluation.Painter): draws
    the figures in its own process."""
    out = Path(config.out) if config.out else default_out(config)
    config.out = str(out)
    world = distributed.world_from_env()
    if world.is_main:
        prepare_out_dir(out, resume)
    if config.devices > 1 and not world.distributed:  # spawn the ranks here; they run this function
        distributed.launch(config, resume)
        return {**json.loads((out / "metrics.json").read_text()), "out": str(out)}
    keep_freed_memory()
    seed_everything(config.seed, config.deterministic)
    device = distributed.device_for(world, config.device) if world.distributed else resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    threads = torch.get_num_threads()  # the thread tuner may lower it; the caller gets it back
    distributed.start(world, device)
    try:
        return _train(config, resume, out, world, device, precision, painter)
    finally:
        distributed.stop()
        torch.set_num_threads(threads)


def _train(config: TrainConfig, resume: bool, out: Path, world, device: torch.device, precision: str,
           painter=None) -> dict:
    from ..data import DataConfig, load_dataset
    from ..evaluation import evaluate_run
    from ..models import build_model, count_parameters
    from .augment import parse_augment

    if world.local_rank:  # local rank 0 decodes into the cache first, the others then read it
        distributed.barrier(world)
    dataset = load_dataset(DataConfig(source=config.data, image_size=config.image_size, channels=config.channels,
                                      val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                                      seed=config.seed, strict=config.strict, classes=config.classes,
                                      merge_splits=config.merge_splits))
    if world.distributed and not world.local_rank:
        distributed.barrier(world)
    train_images, train_labels = subsample(dataset.train.images, dataset.train.labels, config.max_train_images,
                                           config.seed)
    auto = [key for key in ("batch_size", "lr") if getattr(config, key) == "auto"]
    h, w, c = dataset.image_shape
    config.resolve_auto(len(train_labels), h * w)  # the numbers are what config.yaml records
    n_classes = len(dataset.classes)
    model = build_model(config.model, n_classes, c, (h, w), config.model_options())
    mean, std = model.normalization or channel_stats(train_images)
    if not resume and hasattr(model, "init_from_data"):  # a data-dependent initialisation (e.g. whitening)
        model.init_from_data(train_images, mean, std)
    model.to(device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)
    run_info = {"classes": dataset.classes, "image_shape": [h, w, c], "mean": mean, "std": std,
                "precision": precision, "device": str(device), "data_summary": dataset.summary(),
                "params": count_parameters(model), "pretrained_used": getattr(model, "pretrained_used", False),
                "pretrained_note": getattr(model, "pretrained_note", ""), "train_images": len(train_labels),
                "world_size": world.size}
    if not resume and world.is_main:
        save_config(config, out / "config.yaml")
        (out / "run.json").write_text(json.dumps(run_info, indent=1))
    engine = Engine(device, torch.tensor(mean, device=device).view(1, -1, 1, 1),
                    torch.tensor(std, device=device).view(1, -1, 1, 1), autocast_for(device, precision),
                    config.channels_last, torch.amp.GradScaler("cuda") if precision == "fp16" else None,
                    tuner=ThreadTuner(torch.get_num_threads()) if device.type == "cpu" and not config.deterministic
                    else None)
    augment = parse_augment(config.augment, flip_allowed=not digit_like(dataset.classes))
    augment = None if augment.is_identity else augment
    train_split = to_device(train_images, train_labels, device)
    val_split = to_device(np.asarray(dataset.val.images), dataset.val.labels, device)
    weights = class_weight_tensor(train_labels, n_classes, device) if config.class_weights == "balanced" else None
    if auto and world.is_main:
        log.info("batch size %d, lr %g (%s auto, for %s training images)", config.batch_size, config.lr,
                 " and ".join(auto), f"{len(train_labels):,}")
    history = fit(model, config, engine, train_split, val_split, make_loss(weights, config.label_smoothing),
                  augment, out, resume, world)
    if not world.is_main:
        return {}
    record = evaluate_run(out, model=model, dataset=dataset, engine=engine, history=history,
                          train_split=(train_images, train_labels), painter=painter)
    return {**record, "out": str(out)}


def subsample(images, labels, cap: int | None, seed: int):
    """At most cap images, stratified by class (for --quick and max_train_images)."""
    labels = np.asarray(labels)
    if cap is None or cap >= len(labels):
        return images, labels
    from ..data.splits import _carve

    taken, _ = _carve(labels, np.arange(len(labels)), cap, np.random.default_rng(seed))
    return np.asarray(images[taken]), labels[taken]


def fit(model, config: TrainConfig, engine: Engine, train_split, val_split, loss_fn, augment, out: Path,
        resume: bool, world: distributed.World = distributed.SINGLE) -> list[dict]:
    """The epoch loop: train, validate, log, checkpoint; the best epoch's weights in model.safetensors.
    With several ranks every rank runs it (same permutation, its own shard of each batch) and
    only rank 0 writes."""
    last = len(train_split) % config.batch_size  # a last batch too small for one pair per rank is dropped
    steps_per_epoch = max(1, len(train_split) // config.batch_size + (last >= 2 * world.size))
    optimizer = make_optimizer(model, config.optimizer, config.lr, config.weight_decay, config.momentum)
    scheduler = make_scheduler(optimizer, config.schedule, config.lr, config.epochs * steps_per_epoch)
    lookahead = Lookahead(model, config.epochs * steps_per_epoch) if config.lookahead else None
    generator = torch.Generator(device=engine.device)
    generator.manual_seed(config.seed)
    state_path, best_path = out / "checkpoint.safetensors", out / "model.safetensors"
    start_epoch, best, stale = 0, -1.0, 0
    if resume:
        rng, meta = checkpoint.load_training_state(state_path, model, optimizer, scheduler)
        restore_rng(rng, generator)
        start_epoch, best, stale = meta["epoch"], meta["best_val_accuracy"], meta["stale_epochs"]
        log.info("resuming %s at epoch %d of %d (best val accuracy %.4f)", out, start_epoch + 1, config.epochs, best)
    if lookahead is not None:
        lookahead.sync(start_epoch * steps_per_epoch)
    on_epoch = getattr(model, "on_epoch", None)  # a model's own schedule (airbench: freeze a bias after epoch 3)
    trainable = None
    parallel = compiled = scorer = None
    augment_generator = None  # one rank: the permutation's generator also draws the augmentation
    if world.distributed:  # several: the same permutation everywhere, each rank its own augmentation draws
        augment_generator = torch.Generator(device=engine.device)
    tracker = Tracker(out, config, start_epoch) if world.is_main else None
    meta_base = {"config": config.model_dump()}
    cadence = checkpoint.Cadence(config.checkpoint_interval)
    pending_best: list[tuple[dict, dict]] = []  # the best epoch's weights while not yet on disk

    def write_best() -> None:
        if pending_best:
            tensors, meta = pending_best.pop()
            checkpoint.atomic_save(tensors, best_path, meta)

    def write_state(done: int) -> None:  # rank 0: everything a resume after epoch `done` needs
        with cadence.writing():
            write_best()
            tracker.sync()
            checkpoint.save_training_state(state_path, model, optimizer, scheduler, rng_state(generator),
                                           {**meta_base, "epoch": done, "best_val_accuracy": best,
                                            "stale_epochs": stale})

    if not resume and world.is_main:  # epoch 0: a kill during the first epoch can resume, and the folder is proven writable
        write_state(0)
    history = tracker.history if tracker else []
    bar = _progress(config.epochs, start_epoch) if world.is_main else (lambda stats: None)
    accumulate = 1
    epoch = start_epoch
    try:
        while epoch < config.epochs:
            if on_epoch is not None:
                on_epoch(epoch, config.epochs)
            now_trainable = [p.requires_grad for p in model.parameters()]
            if trainable is None or (now_trainable != trainable and world.distributed):
                # DistributedDataParallel reduces the parameters trainable when it was made: re-made
                # when that set changes (it would wait for the frozen one's gradient forever)
                trainable = now_trainable
                parallel = distributed.wrap(model, world, engine.device, config.sync_bn)
                compiled = torch.compile(parallel) if config.compile else parallel
                scorer = compiled if not world.distributed else model  # validation: every rank, the whole split
            if augment_generator is not None:  # resumable without saving every rank's state
                augment_generator.manual_seed((config.seed * 1_000_003 + epoch * 1_009 + world.rank) % 2**63)
            try:
                with _batch_bar(len(train_split) // world.size, epoch, config.epochs, world.is_main) as on_step:
                    stats = train_one_epoch(compiled, train_split, engine, loss_fn, optimizer, scheduler,
                                            batch_size=config.batch_size, augment=augment, generator=generator,
                                            grad_clip=config.grad_clip, accumulate=accumulate, on_step=on_step,
                                            world=world, augment_generator=augment_generator, epoch=epoch,
                                            lookahead=lookahead)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not is_out_of_memory(exc):
                    raise
                if world.distributed:  # the ranks must stay in step: no per-rank retry
                    raise UserError(f"out of memory on rank {world.rank} at batch size {config.batch_size} over "
                                    f"{world.size} ranks; lower --batch-size or image_size") from None
                accumulate = _after_oom(config.batch_size, accumulate, engine.device)
                # back to the last checkpoint: this epoch, and any since that checkpoint, are redone
                rng, meta = checkpoint.load_training_state(state_path, model, optimizer, scheduler)
                restore_rng(rng, generator)
                if meta["epoch"] != epoch:
                    epoch, best, stale = meta["epoch"], meta["best_val_accuracy"], meta["stale_epochs"]
                    pending_best.clear()
                    tracker.rewind(epoch)
                if lookahead is not None:
                    lookahead.sync(epoch * steps_per_epoch)
                continue
            if lookahead is not None:
                lookahead.end_epoch()  # the model becomes the average; validation and checkpoint see it
            distributed.broadcast_buffers(world, model)
            stats.update(evaluate(scorer, val_split, engine, config.eval_batch_size))
            stats = {"epoch": epoch + 1, **stats, "lr": optimizer.param_groups[0]["lr"]}
            improved = stats["val_accuracy"] > best or (np.isnan(stats["val_accuracy"]) and epoch == config.epochs - 1)
            if improved and checkpoint.all_finite(model) and np.isfinite(stats["train_loss"]):
                best, stale = (stats["val_accuracy"] if not np.isnan(stats["val_accuracy"]) else best), 0
            else:
                improved, stale = False, stale + 1
            stats["best_val_accuracy"] = best
            stopping = bool(config.early_stopping) and stale >= config.early_stopping
            due = world.is_main and (epoch + 1 == config.epochs or stopping or cadence.due())
            if improved and world.is_main:  # written now, or else held as a copy until the next checkpoint
                weights = model.state_dict()
                if not due:
                    weights = {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}
                pending_best[:] = [(weights, {"epoch": epoch + 1, "val_accuracy": stats["val_accuracy"]})]
            if world.is_main:
                tracker.log(stats)
                if due:
                    write_state(epoch + 1)
            else:
                history.append(stats)
            bar(stats)
            epoch += 1
            if stopping:
                log.info("early stopping: no validation gain for %d epochs", stale)
                break
    except BaseException:
        if world.is_main:  # the best weights found so far are kept, whatever stopped training
            with contextlib.suppress(Exception):
                write_best()
        raise
    finally:
        if tracker:
            tracker.close()
    distributed.barrier(world)  # every rank has finished (and rank 0 has written) before any evaluates
    if world.is_main and not best_path.exists():
        raise NonFiniteLoss("no epoch produced finite weights; nothing to evaluate")
    return history


def _after_oom(batch_size: int, accumulate: int, device: torch.device) -> int:
    """Split each batch in twice as many micro-batches (same optimisation, half the memory)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if -(-batch_size // accumulate) <= 1:
        raise UserError("out of memory even one image at a time: use a smaller image_size or model")
    accumulate *= 2
    log.warning("out of memory at batch size %d: each batch now runs as %d micro-batches of %d images "
                "(same optimisation); redoing this epoch", batch_size, accumulate, -(-batch_size // accumulate))
    return accumulate


@contextlib.contextmanager
def _batch_bar(n_images: int, epoch: int, epochs: int, show: bool = True):
    """A per-batch bar with loss, accuracy and images/s on a terminal; nothing otherwise."""
    if not show or not sys.stderr.isatty():
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=n_images, desc=f"epoch {epoch + 1}/{epochs}", unit="img", leave=False, unit_scale=True)
    steps = [0]

    def on_step(images, loss_sum, correct, seen):
        steps[0] += 1
        bar.update(images)
        if steps[0] % 20 == 0:  # reading the device's sums waits for it: not every step
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}")

    try:
        yield on_step
    finally:
        bar.close()


def _progress(total: int, start: int):
    """One line per epoch when stderr is not a terminal; a tqdm bar when it is."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc="epochs", unit="epoch")

        def update(stats):
            bar.set_postfix(loss=f"{stats['train_loss']:.3f}", val=_val(stats, "{:.4f}"),
                            ips=f"{stats['images_per_second']:.0f}")
            bar.update(1)
            if stats["epoch"] == total:
                bar.close()
        return update

    def line(stats):
        log.info("epoch %d/%d  loss %.4f  train acc %.4f  %s  %.0f img/s  %.1f s", stats["epoch"], total,
                 stats["train_loss"], stats["train_accuracy"], _val(stats, "val acc {:.4f}"),
                 stats["images_per_second"], stats["train_seconds"])
    return line


def _val(stats: dict, form: str) -> str:
    """The epoch's validation accuracy, or what stands in for it with no validation split (val_fraction 0)."""
    return form.format(stats["val_accuracy"]) if np.isfinite(stats["val_accuracy"]) else "no validation split"


__all__ = ["train", "fit", "NonFiniteLoss"]
