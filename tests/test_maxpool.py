"""maxpool2x2.c against torch: the same values and gradients to the bit, wherever it applies, and
torch's own pooling wherever it does not or cannot be built."""
import shutil

import pytest
import torch
import torch.nn.functional as F

from visionlab.models import build_model
from visionlab.models import maxpool
from visionlab.models.base import ModelOptions
from visionlab.models.maxpool import MaxPool2x2, native_applies

needs_compiler = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                    reason="no C compiler: the kernel cannot be built here")


def hard_input(shape, dtype, seed=0):
    """Random values with the cases that decide a max-pool: exact ties (a constant band, as a digit's
    background gives after a conv), repeated small integers, NaN and -inf; channels-last."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    n, c, h, w = shape
    x[:, :, : h // 3] = 0.25  # whole windows tied
    x[:, :, h // 3: 2 * h // 3] = torch.randint(-2, 3, (n, c, 2 * h // 3 - h // 3, w), generator=g).float()
    x.view(-1)[:: 97] = float("nan")
    x.view(-1)[5:: 89] = float("-inf")
    return x.to(dtype).contiguous(memory_format=torch.channels_last)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, except that a NaN equals any NaN (PyTorch's own bf16 kernels keep a NaN's payload
    in their vectorised loops and rewrite it in their scalar tails)."""
    a, b = a.contiguous(), b.contiguous()
    nan = a.isnan()
    as_int = torch.int16 if a.dtype == torch.bfloat16 else torch.int32
    return bool(torch.equal(nan, b.isnan()) and torch.equal(a.view(as_int)[~nan], b.view(as_int)[~nan]))


def pool_and_grad(pool, x, grad):
    x = x.detach().requires_grad_()
    y = pool(x)
    (gx,) = torch.autograd.grad(y, x, grad)
    return y, gx


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(4, 16, 24, 24), (3, 5, 9, 11), (2, 1, 2, 2), (2, 3, 7, 2), (1, 32, 8, 8)])
@pytest.mark.parametrize("threads", [1, 2])
def test_same_values_and_gradients_as_torch(dtype, shape, threads):
    x = hard_input(shape, dtype)
    assert native_applies(x)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        n, c, h, w = shape
        grad = torch.randn(n, c, h // 2, w // 2).to(dtype).contiguous(memory_format=torch.channels_last)
        y, gx = pool_and_grad(MaxPool2x2(), x, grad)
        y_ref, gx_ref = pool_and_grad(lambda t: F.max_pool2d(t, 2), x, grad)
    finally:
        torch.set_num_threads(before)
    assert type(y.grad_fn).__name__ == "_MaxPool2x2Backward"  # the kernel's, not torch's
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert same(y, y_ref)
    assert same(gx, gx_ref)


@needs_compiler
def test_a_gradient_in_a_layout_other_than_the_output_is_taken():
    x = hard_input((2, 4, 6, 6), torch.float32)
    grad = torch.randn(2, 4, 3, 3)  # NCHW, not channels-last
    assert torch.equal(pool_and_grad(MaxPool2x2(), x, grad)[1], pool_and_grad(lambda t: F.max_pool2d(t, 2), x, grad)[1])


@pytest.mark.parametrize("case", ["nchw", "fp16", "float64", "one_row"])
def test_where_it_does_not_apply_torch_pools(case):
    x = {"nchw": torch.randn(2, 3, 6, 6), "fp16": torch.randn(2, 3, 6, 6).half(),
         "float64": torch.randn(2, 3, 6, 6).double(),
         "one_row": torch.randn(2, 3, 1, 6).contiguous(memory_format=torch.channels_last)}[case]
    assert not native_applies(x)
    if case == "one_row":  # torch's own error, not a kernel reading out of bounds
        with pytest.raises(RuntimeError):
            MaxPool2x2()(x)
        return
    assert torch.equal(MaxPool2x2()(x), F.max_pool2d(x, 2))


@needs_compiler
def test_double_backward_is_refused_not_wrong():
    x = hard_input((2, 4, 6, 6), torch.float32).requires_grad_()
    (gx,) = torch.autograd.grad(MaxPool2x2()(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        gx.sum().backward()


@needs_compiler
@pytest.mark.parametrize("model", ["lenet", "cnn2", "airbench"])
def test_a_training_step_is_the_same_with_and_without_the_kernel(model, monkeypatch):
    """Whole models under bf16 autocast, channels-last, as training runs them: every gradient to the bit."""
    lib = maxpool.library()
    assert lib is not None
    channels, size = (3, 32) if model == "airbench" else (1, 28)

    def grads(kernels):
        monkeypatch.setitem(maxpool._state, "library", kernels)
        torch.manual_seed(0)
        net = build_model(model, 10, channels, (size, size), ModelOptions(pretrained="none"))
        net = net.to(memory_format=torch.channels_last)
        x = torch.randn(8, channels, size, size).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x).float(), torch.arange(8) % 10)
        loss.backward()
        return [p.grad for p in net.parameters() if p.grad is not None]

    native, plain = grads(lib), grads(None)
    assert len(native) == len(plain) == sum(p.requires_grad for p in build_model(model, 10, channels, (size, size)).parameters())
    assert all(torch.equal(a, b) for a, b in zip(native, plain))


def fresh_state(monkeypatch, tmp_path):
    monkeypatch.setattr(maxpool, "_state", {})
    monkeypatch.delenv("VISIONLAB_NATIVE", raising=False)
    monkeypatch.delenv("VISIONLAB_KERNELS")
    monkeypatch.setenv("VISIONLAB_HOME", str(tmp_path / "home"))


def test_no_compiler_means_torch_pooling(monkeypatch, tmp_path):
    fresh_state(monkeypatch, tmp_path)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert maxpool.library() is None
    x = hard_input((2, 4, 6, 6), torch.float32)
    assert not native_applies(x)
    assert torch.equal(MaxPool2x2()(x).nan_to_num(), F.max_pool2d(x, 2).nan_to_num())


def test_a_failed_build_is_recorded_and_not_retried(monkeypatch, tmp_path):
    fresh_state(monkeypatch, tmp_path)
    failing = tmp_path / "cc"
    failing.write_text("#!/bin/sh\necho 'cc: no luck' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setenv("CC", str(failing))
    assert maxpool.library() is None
    (marker,) = (tmp_path / "home" / "kernels").glob("*.failed")
    assert "no luck" in marker.read_text()
    failing.write_text("#!/bin/sh\ntouch " + str(tmp_path / "ran") + "\nexit 1\n")
    monkeypatch.setattr(maxpool, "_state", {})
    assert maxpool.library() is None
    assert not (tmp_path / "ran").exists()  # the next process does not compile again


def test_turned_off_by_the_environment(monkeypatch, tmp_path):
    fresh_state(monkeypatch, tmp_path)
    monkeypatch.setenv("VISIONLAB_NATIVE", "0")
    assert maxpool.library() is None
    assert not (tmp_path / "home" / "kernels").exists()


@needs_compiler
def test_built_once_into_the_cache(monkeypatch, tmp_path):
    fresh_state(monkeypatch, tmp_path)
    assert maxpool.library() is not None
    (built,) = (tmp_path / "home" / "kernels").glob("maxpool2x2-*.so")
    stamp = built.stat().st_mtime_ns
    monkeypatch.setattr(maxpool, "_state", {})
    assert maxpool.library() is not None
    assert built.stat().st_mtime_ns == stamp
    assert not list(built.parent.glob(".*"))  # no scratch file left behind
