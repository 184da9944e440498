"""Data-parallel training over several processes with PyTorch's own engine (torch.distributed).

Two ways in, one code path:

    visionlab train --devices 4 ...                         # this machine: visionlab spawns 4 ranks
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        -m visionlab train ...                              # torchrun sets RANK, WORLD_SIZE, ...

Every rank loads the dataset (local rank 0 decodes it into the cache first, the others then read
the cache), holds the whole split on its device and draws the same seeded permutation; each
global batch ``perm[i:i+B]`` is cut into ``[rank::world]`` shards, and DistributedDataParallel
averages the gradients, so the optimisation is the single-process one with batch B (exactly,
without batch-norm; with it, each rank normalises its own shard unless ``sync_bn`` is on).
Only rank 0 writes files; every rank reads the checkpoint on resume. Backend: NCCL on GPUs
(rank r on cuda:local_rank), gloo on CPUs.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import UserError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def world_from_env() -> World:
    """The world torchrun (or ``launch``) described in the environment; one process otherwise."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return SINGLE
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    except (KeyError, ValueError) as exc:
        raise UserError(f"distributed environment incomplete or malformed ({exc}); start through torchrun or "
                        "visionlab train --devices N") from None
    return World(rank, size, local_rank, local_size)


def uses_gpus(requested: str, processes: int = 1) -> bool:
    """Whether the ``device`` key (auto | cpu | cuda) means GPUs here, for ``processes`` training
    processes on this machine (one GPU each): one line when cuda is asked for and none is visible,
    or when there are fewer GPUs than processes."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return False
    if not torch.cuda.is_available():
        raise UserError("device cuda asked for but no CUDA GPU is visible; use --device cpu or auto")
    if processes > torch.cuda.device_count():
        raise UserError(f"{processes} processes on this node but only {torch.cuda.device_count()} GPU(s) "
                        "visible; use --devices <= the GPU count, or --device cpu")
    return True


def device_for(world: World, requested: str) -> torch.device:
    """Rank r's device: cuda:local_rank when GPUs are used, else the CPU."""
    if not uses_gpus(requested, world.local_size):
        return torch.device("cpu")
    torch.cuda.set_device(world.local_rank)
    return torch.device("cuda", world.local_rank)


def start(world: World, device: torch.device) -> None:
    """Join the process group (rendezvous from MASTER_ADDR/MASTER_PORT or torchrun's store)."""
    if not world.distributed or dist.is_initialized():
        return
    if device.type == "cpu":  # ranks share the cores: each takes its share, no oversubscription
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // world.local_size))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def all_sum(world: World, *values: torch.Tensor) -> None:
    """Sum each tensor over the ranks, in place (one collective for all)."""
    if not world.distributed or not values:
        return
    flat = torch.stack([v.double() for v in values])
    dist.all_reduce(flat)
    for v, total in zip(values, flat):
        v.copy_(total)


def all_true(world: World, flag: torch.Tensor) -> torch.Tensor:
    """The flag (a 0-d bool or int tensor) AND-ed over the ranks, so every rank decides alike."""
    if not world.distributed:
        return flag
    value = flag.to(torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value.bool()


def broadcast_buffers(world: World, model: torch.nn.Module) -> None:
    """Rank 0's batch-norm statistics to every rank: after an epoch each rank has folded its own
    last shard into them; validation (and early stopping) must see the same model everywhere."""
    if world.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def wrap(model: torch.nn.Module, world: World, device: torch.device, sync_bn: bool) -> torch.nn.Module:
    """The model DistributedDataParallel-wrapped (and batch-norm synchronised if asked)."""
    if not world.distributed:
        if sync_bn:
            log.info("sync_bn has no effect in a single process")
        return model
    if sync_bn:
        if device.type != "cuda":
            raise UserError("sync_bn needs GPUs (PyTorch's SyncBatchNorm runs on CUDA only); drop it on CPU")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


# --- visionlab train --devices N: spawn the ranks on this machine --------------------------------

def free_port() -> int:
    """A TCP port free on this machine now, for the ranks' rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, size: int, port: int, config_values: dict, resume: bool, errors: str, verbose: bool):
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(size),
                       "LOCAL_WORLD_SIZE": str(size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from ..cli import _setup_logging
    from .config import TrainConfig
    from .run import train

    _setup_logging(verbose)
    if rank:  # one voice: the other ranks only speak up for warnings
        logging.getLogger("visionlab").setLevel(logging.WARNING)
    try:
        train(TrainConfig(**config_values), resume=resume)
    except UserError as exc:
        Path(errors, f"rank{rank}").write_text(str(exc))
        raise SystemExit(2) from None


def launch(config, resume: bool) -> None:
    """Run ``train(config)`` in config.devices processes on this machine and wait for them.

    The caller has resolved config.out (one folder for all ranks). A user mistake in any rank
    comes back as that rank's one-line error."""
    import torch.multiprocessing as mp

    size = config.devices
    uses_gpus(config.device, size)  # refused here, before any rank starts
    verbose = logging.getLogger("visionlab").level <= logging.DEBUG
    with tempfile.TemporaryDirectory(prefix="visionlab-ranks-") as errors:
        values = config.model_dump()
        try:
            mp.start_processes(_rank_main, args=(size, free_port(), values, resume, errors, verbose),
                               nprocs=size, start_method="spawn")
        except mp.ProcessExitedException as exc:
            messages = sorted(Path(errors).glob("rank*"))
            if messages:
                raise UserError(messages[0].read_text()) from None
            raise UserError(f"training rank {exc.error_index} stopped (exit code {exc.exit_code}); "
                            "its messages are above") from None
        except mp.ProcessRaisedException as exc:
            sys.stderr.write(str(exc) + "\n")
            raise UserError(f"training rank {exc.error_index} failed with the error above") from None


__all__ = ["World", "SINGLE", "world_from_env", "device_for", "start", "stop", "barrier", "all_sum", "all_true",
           "broadcast_buffers", "wrap", "launch", "free_port", "uses_gpus"]
