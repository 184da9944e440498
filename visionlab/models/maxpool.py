"""``MaxPool2x2``: ``nn.MaxPool2d(2)`` with a faster CPU kernel for channels-last tensors.

Why by hand: the small CNNs pool their largest activation, and on a CPU PyTorch's channels-last
max-pool was 40% of a lenet training step here (batch 512 on MNIST, bf16: both poolings 4.3 ms of
a 10 ms step, the first one's forward 1.2 ms and backward 2.3 ms). It keeps an int64 index per
output, zero-fills the input gradient and then scatters into it one value at a time.
maxpool2x2.c keeps a byte per output and writes each input gradient once, vectorised: 0.6 ms and
0.25 ms for that first pooling, with bit-identical values and gradients (tests/test_maxpool.py);
the step takes 8 ms. No library ships such a kernel for PyTorch on CPU; oneDNN's
pooling through ``to_mkldnn`` measured slower (9.4 ms forward and backward).

The C file is compiled once per machine with the system's C compiler (``$CC``, else ``cc``) into
``$VISIONLAB_KERNELS``, by default ``$VISIONLAB_HOME/kernels`` (0.2-0.3 s, for this CPU:
``-march=native``), and loaded with ctypes.
Its OpenMP regions run on the OpenMP runtime torch already loaded (same soname), sized by
``torch.get_num_threads()``. Wherever the kernel does not apply (CUDA or MPS tensors, fp16, a
layout other than channels-last, torch.compile tracing) or cannot be built (no compiler: the reason
is logged once at debug level), ``nn.MaxPool2d``'s own forward runs. ``VISIONLAB_NATIVE=0``
turns the kernel off.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch
from torch import nn
from torch.autograd.function import once_differentiable

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("maxpool2x2.c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-std=c11", "-shared", "-fPIC"]
DTYPES = {torch.bfloat16: "bf16", torch.float32: "f32"}
_state: dict = {}  # "library": library(), once decided for this process


def _compiler() -> str:
    return os.environ.get("CC") or shutil.which("cc") or "gcc"


def _target() -> Path:
    """Where this source, built for this compiler and this CPU, lives in the cache."""
    from ..data.cache import home_dir

    try:  # -march=native: a build is for the CPU it was made on (a shared home may see several)
        cpu = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        cpu = platform.processor()
    key = hashlib.sha256("\0".join([SOURCE.read_text(), _compiler(), *FLAGS, platform.machine(), cpu]).encode())
    folder = Path(os.environ["VISIONLAB_KERNELS"]) if os.environ.get("VISIONLAB_KERNELS") else home_dir() / "kernels"
    return folder / f"maxpool2x2-{key.hexdigest()[:16]}.so"


def _build(target: Path) -> None:
    """Compile SOURCE to ``target``, or leave a ``.failed`` file saying why (not retried on every run)."""
    scratch = target.with_name(f".{target.stem}.{os.getpid()}.so")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([_compiler(), *FLAGS, str(SOURCE), "-o", str(scratch)], capture_output=True, text=True)
    except OSError as exc:  # no compiler, a read-only cache
        log.debug("native max-pool kernel not built (%s); using torch's", exc)
        return
    if done.returncode == 0:
        with contextlib.suppress(OSError):  # atomic: of two concurrent builds (study workers, ranks) one wins whole
            os.replace(scratch, target)
        return
    scratch.unlink(missing_ok=True)
    message = f"{' '.join(done.args)} exited with {done.returncode}:\n{done.stderr}"
    with contextlib.suppress(OSError):  # delete it to retry (after installing a compiler, say)
        target.with_suffix(".failed").write_text(message)
    log.debug("native max-pool kernel not built: %s", message)


def library() -> dict | None:
    """The loaded kernels by (dtype, "forward" | "backward"), or None where they are off or cannot be built (built here, once per
    machine, if need be). Decided once per process."""
    if "library" in _state:
        return _state["library"]
    _state["library"] = None
    if os.environ.get("VISIONLAB_NATIVE", "1") == "0":
        return None
    target = _target()
    if not target.exists() and not target.with_suffix(".failed").exists():
        _build(target)
    if not target.exists():
        return None
    try:
        lib = ctypes.CDLL(str(target))
        kernels = {(dtype, step): getattr(lib, f"maxpool2x2_{name}_{step}")
                   for dtype, name in DTYPES.items() for step in ("forward", "backward")}
    except (OSError, AttributeError) as exc:
        log.debug("native max-pool kernel %s not loaded (%s); using torch's", target, exc)
        return None
    for fn in kernels.values():  # (3 pointers, N, H, W, C, threads)
        fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 4 + [ctypes.c_int]
        fn.restype = None
    _state["library"] = kernels
    return kernels


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape  # stored (N, H, W, C): channels-last
        y = torch.empty((n, c, h // 2, w // 2), dtype=x.dtype, memory_format=torch.channels_last)
        code = torch.empty((n, h // 2, w // 2, c), dtype=torch.uint8)  # which of the 4 inputs each output is
        _state["library"][x.dtype, "forward"](x.data_ptr(), y.data_ptr(), code.data_ptr(), n, h, w, c,
                                              torch.get_num_threads())
        ctx.save_for_backward(code)
        ctx.input_shape = x.shape
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor) -> torch.Tensor:
        (code,) = ctx.saved_tensors
        n, c, h, w = ctx.input_shape
        grad_y = grad_y.contiguous(memory_format=torch.channels_last)
        grad_x = torch.empty((n, c, h, w), dtype=grad_y.dtype, memory_format=torch.channels_last)
        _state["library"][grad_y.dtype, "backward"](grad_y.data_ptr(), code.data_ptr(), grad_x.data_ptr(), n, h, w, c,
                                                    torch.get_num_threads())
        return grad_x


def native_applies(x: torch.Tensor) -> bool:
    """Whether maxpool2x2.c pools ``x`` (else torch does)."""
    return (x.device.type == "cpu" and x.dtype in DTYPES and x.dim() == 4 and min(x.shape[2:]) >= 2
            and x.is_contiguous(memory_format=torch.channels_last) and not torch.compiler.is_compiling()
            and library() is not None)


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)``: the same values and gradients, from maxpool2x2.c where it applies."""

    def __init__(self):
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if native_applies(x):
            return _MaxPool2x2.apply(x)
        return super().forward(x)
