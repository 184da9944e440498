"""visionlab.scratch: NumPy convolution and pooling agree with torch, forward and backward; the
hand-written network's gradients pass a numerical check and it learns digits; run_scratch writes
its report; a bad image is a UserError."""
import argparse
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import write_image
from visionlab.errors import UserError
from visionlab.scratch import (avgpool2d, avgpool2d_backward, col2im, conv2d, conv2d_backward, conv2d_loop,
                               conv2d_loop_backward, im2col, maxpool2d, maxpool2d_backward, run_scratch,
                               train_digits)
from visionlab.scratch import net as scratch_net
from visionlab.scratch.command import register, run

TOL = 1e-5
CONV_CASES = [  # (N, C, H, W, F, KH, KW, stride, padding)
    (2, 1, 8, 8, 3, 3, 3, 1, 1),
    (3, 3, 9, 7, 4, 3, 3, 2, 0),
    (1, 4, 10, 11, 2, 5, 5, 1, 2),
    (2, 2, 12, 9, 5, 3, 2, 3, 1),
    (4, 3, 6, 6, 6, 1, 1, 1, 0),
    (1, 2, 7, 7, 3, 4, 4, 2, 3),
]
CONV_IMPLS = {"loop": (conv2d_loop, conv2d_loop_backward), "im2col": (conv2d, conv2d_backward)}


def _torch_grads(fn, inputs, dout):
    """Outputs of fn on float64 copies of inputs and the gradients of sum(out * dout)."""
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in inputs]
    out = fn(*ts)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


@pytest.mark.parametrize("impl", CONV_IMPLS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "N{}C{}H{}W{}F{}K{}x{}S{}P{}".format(*c))
def test_conv_matches_torch(impl, case):
    n, c, h, w, f, kh, kw, stride, padding = case
    rng = np.random.default_rng(sum(case))
    x, wt, b = rng.normal(size=(n, c, h, w)), rng.normal(size=(f, c, kh, kw)), rng.normal(size=f)
    forward, backward = CONV_IMPLS[impl]
    out, cache = forward(x, wt, b, stride, padding)
    dout = rng.normal(size=out.shape)
    expected, grads = _torch_grads(lambda a, k, bias: F.conv2d(a, k, bias, stride=stride, padding=padding),
                                   (x, wt, b), dout)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=TOL)
    for mine, theirs, name in zip(backward(dout, cache), grads, ("dx", "dw", "db")):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=TOL, err_msg=name)


def test_im2col_and_col2im_are_adjoint():
    """<im2col(x), y> == <x, col2im(y)>: col2im is exactly the transpose that backprop needs."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 9, 8))
    cols = im2col(x, 3, 2, stride=2, padding=1)
    y = rng.normal(size=cols.shape)
    assert np.isclose(np.sum(cols * y), np.sum(x * col2im(y, x.shape, 3, 2, stride=2, padding=1)))


POOL_CASES = [((2, 3, 8, 8), 2, None), ((1, 2, 9, 7), 3, 2), ((2, 1, 7, 9), 3, 1), ((3, 2, 6, 10), 2, 1)]
POOLS = {"max": (maxpool2d, maxpool2d_backward, F.max_pool2d), "avg": (avgpool2d, avgpool2d_backward, F.avg_pool2d)}


@pytest.mark.parametrize("kind", POOLS)
@pytest.mark.parametrize("shape,kernel,stride", POOL_CASES)
def test_pool_matches_torch(kind, shape, kernel, stride):
    forward, backward, reference = POOLS[kind]
    rng = np.random.default_rng(kernel * 10 + (stride or 0))
    x = rng.normal(size=shape)
    out, cache = forward(x, kernel, stride)
    dout = rng.normal(size=out.shape)
    expected, (dx,) = _torch_grads(lambda a: reference(a, kernel, stride), (x,), dout)
    np.testing.assert_allclose(out, expected, rtol=0, atol=TOL)
    np.testing.assert_allclose(backward(dout, cache), dx, rtol=0, atol=TOL)


def _tiny_batch(n=6):
    from visionlab.data import load_dataset

    ds = load_dataset("digits")
    x = scratch_net.to_inputs(ds.train.images[:n])
    config = scratch_net.NetConfig(filters=4)
    params = scratch_net.init_params(x.shape[1:], 10, config, np.random.default_rng(0))
    return params, (x - x.mean()) / x.std(), np.asarray(ds.train.labels[:n])


def test_gradient_check_passes():
    params, x, y = _tiny_batch()
    errors = scratch_net.gradient_check(params, x, y, max_entries=30)
    assert set(errors) == set(scratch_net.PARAMS)
    assert max(errors.values()) < 1e-5, errors


def test_gradient_check_catches_a_wrong_backward(monkeypatch):
    params, x, y = _tiny_batch()
    right = scratch_net.backward

    def off_by_a_percent(p, dlogits, cache):
        grads = right(p, dlogits, cache)
        grads["conv_w"] = grads["conv_w"] * 1.01
        return grads

    monkeypatch.setattr(scratch_net, "backward", off_by_a_percent)
    errors = scratch_net.gradient_check(params, x, y, max_entries=30)
    assert errors["conv_w"] > 1e-3 and errors["dense_w"] < 1e-5


def test_train_digits_reaches_95_percent():
    result = train_digits()
    assert result["test_accuracy"] >= 0.95
    assert len(result["history"]) == scratch_net.NetConfig().epochs
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]


def _check_outputs(out):
    record = json.loads((out / "scratch.json").read_text())
    for name in record["figures"].values():
        with Image.open(out / name) as img:
            assert img.size[0] > 200 and img.size[1] > 200
    page = (out / "scratch.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(record["figures"])
    assert not re.search(r'(src|href)="(?!data:)', page)  # self-contained: opens with no network
    assert record["gradient_check"]["passed"]
    assert record["conv_timing"]["max_abs_difference"] < TOL
    return record, page


def test_run_scratch_on_digits(tmp_path):
    result = run_scratch(tmp_path / "out")
    record, _ = _check_outputs(tmp_path / "out")
    assert record["network"]["data"] == "digits" and record["network"]["note"] == ""
    assert record["network"]["test_accuracy"] >= 0.95
    assert record["image"].startswith("test image") and record["image_shape"] == [8, 8]
    assert result["html"].endswith("scratch.html")


def test_run_scratch_with_an_image_file_and_large_images(tmp_path):
    """An image file is used as given (its name escaped in the page); data whose images are larger
    than 28x28 is convolved but the network trains on digits instead, and says so."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(10):
            write_image(tmp_path / "big" / c / f"{i}.png", rng.integers(0, 256, (32, 32), dtype=np.uint8))
    image = write_image(tmp_path / "x<b>.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    run_scratch(tmp_path / "out", image=image, data=str(tmp_path / "big"))
    record, page = _check_outputs(tmp_path / "out")
    assert record["image_shape"] == [20, 30]
    assert "x&lt;b&gt;.png" in page and "x<b>.png" not in page
    assert record["network"]["data"] == "digits" and "32x32" in record["network"]["note"]


@pytest.mark.parametrize("bad", ["missing.png", "folder", "notes.png"])
def test_bad_image_is_a_user_error(tmp_path, bad):
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(UserError, match=bad):
        run_scratch(tmp_path / "out", image=tmp_path / bad)
    assert not (tmp_path / "out").exists()  # failed before doing anything


def test_command_parses_and_runs(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["scratch", "--out", str(tmp_path / "out"), "--seed", "1"])
    assert (args.image, args.data, args.seed, args.func) == (None, "digits", 1, run)
    assert parser.parse_args(["scratch"]).out == "runs/scratch"
    with pytest.raises(UserError, match="does not exist"):
        run(parser.parse_args(["scratch", str(tmp_path / "nope.png"), "--out", str(tmp_path / "out")]))
