"""The GAN training loop, written out: ``train_one_epoch`` and a short ``fit``, plus what each
epoch leaves behind (loss log, sample grid, quality line, checkpoint).

Each step, with b real images x and b noise vectors z ~ N(0, I):

    D step: minimise BCE(D(x), 1) + BCE(D(G(z)), 0)   (one D pass over the 2b images)
    G step: minimise BCE(D(G(z)), 1)                  (the non-saturating loss of Goodfellow et al.)

As in visionlab's classifier engine, the training split stays on the device as one uint8 tensor
(N, 28, 28, 1); a batch is an index slice of a seeded permutation, scaled to [-1, 1] on the
device. The epoch's per-batch numbers stay on the device and are written once at its end.
Checkpoints are one safetensors file, written atomically (see ``training/checkpoint.py``).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..training import checkpoint
from ..training.checkpoint import join_optimizer, split_optimizer  # the optimiser <-> tensors layout
from ..training.loop import NonFiniteLoss
from ..training.run import restore_rng, rng_state
from ..files import write_text

log = logging.getLogger(__name__)
STATE_FILE = "checkpoint.safetensors"
LOSS_KEYS = ("d_loss", "g_loss", "d_real", "d_fake")  # per batch; d_real/d_fake: mean D probability
GRID_SCALE = 4  # grid PNGs are drawn at 4x: 28 px digits are too small to judge at 1x


def to_unit_range(images_u8: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 1) uint8 -> (B, 1, H, W) float32 in [-1, 1], the range of the generator's Tanh."""
    return images_u8.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()


def fixed_latents(n: int, latent: int, seed: int, device: torch.device) -> torch.Tensor:
    """(n, latent) noise from its own generator: the same vectors every epoch and after a resume,
    and drawing them takes nothing from the training generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, latent, generator=g).to(device)


@torch.inference_mode()
def sample(G, z: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """G(z) in eval mode (dcgan's BatchNorm uses its running statistics): (n, 1, 28, 28) in [-1, 1]."""
    was_training = G.training
    G.eval()
    images = torch.cat([G(chunk) for chunk in z.split(batch_size)])
    G.train(was_training)
    return images


def train_one_epoch(G, D, optimizers, images: torch.Tensor, batch_size: int, generator: torch.Generator) -> dict:
    """One pass over a fresh permutation of images (N, 28, 28, 1) uint8; returns per-batch
    tensors for LOSS_KEYS (steps,) and the seconds taken."""
    opt_g, opt_d = optimizers
    G.train()
    D.train()
    n, device = len(images), images.device
    perm = torch.randperm(n, generator=generator, device=device)
    steps = n // batch_size + (n % batch_size >= 2)  # a last batch of one is left for the next epoch
    record = torch.zeros(steps, len(LOSS_KEYS), device=device)
    ones = torch.ones(batch_size, device=device)
    start = time.perf_counter()
    for step in range(steps):
        real = to_unit_range(images[perm[step * batch_size: (step + 1) * batch_size]])  # (b, 1, 28, 28)
        b = len(real)
        z = torch.randn(b, G.latent, generator=generator, device=device)  # (b, latent)
        fake = G(z)  # (b, 1, 28, 28)

        logits = D(torch.cat([real, fake.detach()]))  # (2b,): real first; detach: no G gradient here
        target = torch.cat([ones[:b], torch.zeros_like(ones[:b])])
        d_loss = F.binary_cross_entropy_with_logits(logits, target)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        D.requires_grad_(False)  # the G step needs gradients through D, not for D's weights
        g_loss = F.binary_cross_entropy_with_logits(D(fake), ones[:b])
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)

        with torch.no_grad():
            p = torch.sigmoid(logits)
            record[step] = torch.stack([d_loss, g_loss, p[:b].mean(), p[b:].mean()])
    if not torch.isfinite(record).all():
        raise NonFiniteLoss("a GAN loss became NaN or infinite this epoch; lower the learning rate; "
                            "the last good checkpoint is kept")
    return {**{k: record[:, i] for i, k in enumerate(LOSS_KEYS)}, "seconds": time.perf_counter() - start}


def fit(G, D, images: torch.Tensor, config, score, resume: bool) -> list[dict]:
    """The epoch loop: train, log losses, draw the grid, score, checkpoint. ``score(G) -> dict``
    is the quality measure; epoch 0 scores the untrained generator as the baseline.
    Returns one record per epoch (quality and timing)."""
    from ..training.optim import Adam  # visionlab's fused Adam: torch.optim's import costs ~1.5 s

    out, device = Path(config.out), images.device
    betas = (config.beta1, 0.999)
    opt_g = Adam(G.parameters(), lr=config.lr, betas=betas)
    opt_d = Adam(D.parameters(), lr=config.lr, betas=betas)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    z_grid = fixed_latents(config.grid, config.latent, config.seed + 1, device)
    state = out / STATE_FILE
    start_epoch = 0
    if resume:
        start_epoch = load_state(state, G, D, (opt_g, opt_d), generator)
        log.info("resuming %s at epoch %d of %d", out, start_epoch + 1, config.epochs)
    for name in ("losses.jsonl", "quality.jsonl"):  # drop lines a killed run wrote after its checkpoint
        keep_epochs(out / name, start_epoch if resume else -1)
    if not resume:
        save_grid(sample(G, z_grid), out / "samples_epoch_000.png")
        append_jsonl(out / "quality.jsonl", [{"epoch": 0, **score(G), "train_seconds": 0.0}])
        save_state(state, G, D, (opt_g, opt_d), generator, {"epoch": 0, "config": config.to_dict()})
    for epoch in range(start_epoch + 1, config.epochs + 1):
        stats = train_one_epoch(G, D, (opt_g, opt_d), images, config.batch_size, generator)
        append_jsonl(out / "losses.jsonl", loss_lines(stats, epoch))
        save_grid(sample(G, z_grid), out / f"samples_epoch_{epoch:03d}.png")
        start = time.perf_counter()
        scores = score(G)
        quality = {"epoch": epoch, **scores, "train_seconds": round(stats["seconds"], 3),
                   "score_seconds": round(time.perf_counter() - start, 3)}
        append_jsonl(out / "quality.jsonl", [quality])
        save_state(state, G, D, (opt_g, opt_d), generator, {"epoch": epoch, "config": config.to_dict()})
        log.info("epoch %d/%d  D loss %.3f  G loss %.3f  FD %.2f  coverage %.2f  %.1f s", epoch, config.epochs,
                 stats["d_loss"].mean().item(), stats["g_loss"].mean().item(), quality["frechet_distance"],
                 quality["coverage"], stats["seconds"])
    save_grid(sample(G, z_grid), out / "samples.png")
    return read_jsonl(out / "quality.jsonl")


def loss_lines(stats: dict, epoch: int) -> list[dict]:
    values = torch.stack([stats[k] for k in LOSS_KEYS], 1).tolist()  # (steps, 4): one device read
    return [{"epoch": epoch, "step": i + 1, **{k: round(v, 5) for k, v in zip(LOSS_KEYS, row)}}
            for i, row in enumerate(values)]


# --- checkpoints: G, D, both optimisers and the RNG in one safetensors file ----------------------

def save_state(path: Path, G, D, optimizers, generator: torch.Generator, meta: dict) -> None:
    tensors = {f"G.{k}": v for k, v in G.state_dict().items()}
    tensors.update({f"D.{k}": v for k, v in D.state_dict().items()})
    for name, opt in zip(("optG", "optD"), optimizers):
        opt_tensors, meta[name] = split_optimizer(opt.state_dict())  # names optim.<param>.<slot>
        tensors.update({f"{name}.{k.split('.', 1)[1]}": v for k, v in opt_tensors.items()})
    tensors.update({f"rng.{k}": v for k, v in rng_state(generator).items()})
    checkpoint.atomic_save(tensors, path, meta)


def load_state(path: Path, G, D, optimizers, generator: torch.Generator) -> int:
    """Restore everything in place from a save_state file; returns the epoch it was saved after."""
    tensors, meta = checkpoint.read(path)
    groups: dict[str, dict[str, torch.Tensor]] = {"G": {}, "D": {}, "optG": {}, "optD": {}, "rng": {}}
    for name, value in tensors.items():
        head, _, rest = name.partition(".")
        if head not in groups or "epoch" not in meta:
            raise UserError(f"{path}: not a visionlab GAN checkpoint (found '{name}')")
        groups[head][rest if head in ("G", "D", "rng") else name] = value
    checkpoint.load_weights_into(G, groups["G"], path)
    checkpoint.load_weights_into(D, groups["D"], path)
    for name, opt in zip(("optG", "optD"), optimizers):
        opt.load_state_dict(join_optimizer(groups[name], meta[name]))
    restore_rng(groups["rng"], generator)
    return int(meta["epoch"])


def saved_epoch(path: Path) -> int:
    """The epoch a checkpoint was saved after (its metadata only)."""
    return int(checkpoint.read(path)[1].get("epoch", 0))


# --- per-epoch outputs ---------------------------------------------------------------------------

def append_jsonl(path: Path, lines: list[dict]) -> None:
    """Append and fsync: a line on disk is a finished step or epoch."""
    with open(path, "a") as f:
        f.write("".join(json.dumps(line) + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            lines.append(json.loads(line))
        except ValueError:
            break  # a line cut by a kill: everything before it is whole
    return lines


def keep_epochs(path: Path, last: int) -> None:
    """Rewrite a jsonl log keeping only epochs <= last (atomically)."""
    if not path.exists():
        return
    write_text(path, "".join(json.dumps(r) + "\n" for r in read_jsonl(path) if r["epoch"] <= last))


def save_grid(images: torch.Tensor, path: Path, pad: int = 2) -> None:
    """(n, 1, 28, 28) images in [-1, 1], n a square number -> a side x side grid PNG, white on black."""
    from PIL import Image

    n, _, h, w = images.shape
    side = round(n ** 0.5)
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()[:, 0]  # (n, h, w)
    canvas = np.full((side * (h + pad) + pad, side * (w + pad) + pad), 96, np.uint8)  # grey gaps
    for i, image in enumerate(pixels):
        r, c = divmod(i, side)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = image
    big = Image.fromarray(canvas).resize((canvas.shape[1] * GRID_SCALE, canvas.shape[0] * GRID_SCALE), Image.NEAREST)
    big.save(path)


def plot_losses(losses: list[dict], path: Path) -> None:
    """Per-batch G and D losses (raw, faint, and a moving average) and D's mean outputs, against epochs."""
    from ..evaluation.plots import plt

    if not losses:
        return
    per_epoch: dict[int, int] = {}
    for r in losses:
        per_epoch[r["epoch"]] = max(per_epoch.get(r["epoch"], 0), r["step"])
    x = np.array([r["epoch"] - 1 + r["step"] / per_epoch[r["epoch"]] for r in losses])  # in epochs
    window = max(1, min(50, len(losses) // 20))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.13, top=0.9, wspace=0.2)
    for ax, keys, title in ((axes[0], ("d_loss", "g_loss"), "losses per batch"),
                            (axes[1], ("d_real", "d_fake"), "D's mean output: real vs generated")):
        for key, color in zip(keys, ("#1f77b4", "#d62728")):
            y = np.array([r[key] for r in losses])
            ax.plot(x, y, color=color, alpha=0.25, linewidth=0.6)
            smooth = np.convolve(y, np.ones(window) / window, mode="valid")
            ax.plot(x[window - 1:], smooth, color=color, linewidth=1.5, label=f"{key} ({window}-batch mean)")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
    axes[1].set_ylim(0, 1)
    fig.savefig(path, dpi=100)
    plt.close(fig)
