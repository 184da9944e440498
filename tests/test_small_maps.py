"""models/small_maps: convolutions on maps of a few pixels run as a matrix product, and must be
the same function with the same gradients as the nn.Conv2d they replace."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from visionlab.models import build_model
from visionlab.models.small_maps import SmallMapConv2d, densify


def _pair(conv: nn.Conv2d, size: tuple[int, int]) -> tuple[nn.Module, nn.Module]:
    plain = nn.Sequential(conv)
    dense = copy.deepcopy(plain)
    assert densify(dense, conv.in_channels, size) == 1
    assert type(dense[0]) is SmallMapConv2d
    return plain, dense


@pytest.mark.parametrize("kernel,stride,padding,size,bias", [
    (3, 1, 1, (1, 1), False),  # ResNet-18's layer4 on 8x8 digits: one live tap of nine
    (3, 2, 1, (2, 2), False),  # layer4's first conv: 2x2 -> 1x1, four live taps
    (3, 1, 1, (2, 2), True),  # layer3: 2x2 -> 2x2, each output pixel its own four taps
    (3, 1, 1, (1, 2), True),  # a non-square map
    (5, 1, 2, (2, 3), False),
    (3, 2, 1, (1, 3), True),  # stride 2: a 1x3 map to 1x2
    (1, 1, 0, (1, 1), True),  # a 1x1 convolution of a single pixel is a linear layer
    (5, 4, 2, (4, 4), False),  # one output pixel that never reaches the map's last row and column
])
@pytest.mark.parametrize("channels_last", [False, True])
def test_same_outputs_and_gradients_as_the_convolution(kernel, stride, padding, size, bias, channels_last):
    torch.manual_seed(0)
    plain, dense = _pair(nn.Conv2d(6, 5, kernel, stride=stride, padding=padding, bias=bias), size)
    x = torch.randn(4, 6, *size)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = plain(xa), dense(xb)
    assert ya.shape == yb.shape
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-5)
    for p, q in zip(plain.parameters(), dense.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-5)


def test_other_input_sizes_run_the_ordinary_convolution():
    plain, dense = _pair(nn.Conv2d(4, 4, 3, padding=1), (2, 2))
    x = torch.randn(2, 4, 7, 5)
    assert torch.equal(dense(x), plain(x))


def test_bf16_autocast_matches_the_convolution_to_bf16_precision():
    torch.manual_seed(0)
    plain, dense = _pair(nn.Conv2d(64, 32, 3, padding=1, bias=False), (2, 2))
    x = torch.randn(8, 64, 2, 2)
    with torch.autocast("cpu", torch.bfloat16):
        ya, yb = plain(x), dense(x)
    assert yb.dtype == ya.dtype == torch.bfloat16
    torch.testing.assert_close(yb.float(), ya.float(), rtol=2e-2, atol=2e-2)


def test_maps_with_as_many_pixels_as_taps_are_left_alone():
    # 3x3 maps under a 3x3 kernel: no multiply-adds saved, and measured slower at batch 64
    assert densify(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1)), 4, (3, 3)) == 0
    assert densify(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2)), 4, (1, 1)) == 0  # grouped: not handled
    assert densify(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")), 4, (2, 2)) == 0


def test_resnet18_on_digits_keeps_its_state_dict():
    model = build_model("resnet18", 10, 1, (8, 8))
    dense = sorted(name for name, m in model.named_modules() if isinstance(m, SmallMapConv2d))
    # layer3 runs on 2x2 maps (its first conv reads 4x4 and stays), layer4 on 1x1
    assert dense == ["layer3.0.conv2", "layer3.1.conv1", "layer3.1.conv2",
                     "layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2"]
    plain = build_model("resnet18", 10, 1, (32, 32))  # no small maps at 32 px with the small-input stem
    assert not any(isinstance(m, SmallMapConv2d) for m in plain.modules())
    state = model.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in plain.state_dict().items()}
    plain.load_state_dict(state)  # the same weights, strict
    model.eval()
    plain.eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), rtol=1e-4, atol=1e-4)
    assert model.training is False and build_model("resnet18", 10, 1, (8, 8)).training  # densify restores the mode
