"""Contract tests for visionlab.models: one parametrized test over every model, then weights files,
pretrained fallbacks and option errors. Nothing here touches the network: every download path is
patched to raise, and torch hub's cache points into the test's temporary folder."""
import logging
import os
import pickle
import time

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from visionlab.errors import UserError
from visionlab.models import MODELS, ModelOptions, build_model, count_parameters
from visionlab.models import resnet as resnet_module

N_CLASSES = 5
BATCH = 8
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
CASES = {  # id -> (name, options)
    "mlp": ("mlp", {}),
    "cnn2": ("cnn2", {}),
    "cnn2-bn-dropout": ("cnn2", {"batch_norm": True, "dropout": 0.3}),
    "cnn3": ("cnn3", {}),
    "cnn": ("cnn", {"batch_norm": True}),
    "lenet": ("lenet", {}),
    "lenet-bn-gelu": ("lenet", {"batch_norm": True, "activation": "gelu", "dropout": 0.2}),
    "cnn3-freeze-conv2": ("cnn3", {"freeze": "until:conv2"}),
    "resnet18": ("resnet18", {"pretrained": "none"}),
    "resnet18-standard-stem": ("resnet18", {"pretrained": "none", "small_input": "false"}),
    "resnet18-small-input": ("resnet18", {"pretrained": "none", "small_input": True}),
    "resnet18-until-layer3": ("resnet18", {"pretrained": "none", "freeze": "until:layer3"}),
    "resnet18-backbone": ("resnet18", {"pretrained": "none", "freeze": "backbone"}),
    "airbench": ("airbench", {}),
    **{f"mlp-{a}": ("mlp", {"activation": a, "dropout": 0.1}) for a in ["relu", "gelu", "tanh", "leaky_relu", "sigmoid"]},
}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(autouse=True)
def no_network(tmp_path, monkeypatch):
    """An empty torch hub cache, and every download raising instead of reaching the network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)


def build(name, shape, **options):
    return build_model(name, N_CLASSES, shape[0], shape[1:], ModelOptions(**options))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", CASES)
def test_model_contract(case, shape):
    name, options = CASES[case]
    if name == "airbench" and min(shape[1:]) < 9:
        pytest.skip("airbench needs at least 9x9 pixels (its one-line refusal is tested in test_airbench.py)")
    torch.manual_seed(0)
    model = build(name, shape, **options).train()
    x = torch.randn(BATCH, *shape)
    y = torch.randint(0, N_CLASSES, (BATCH,))

    logits = model(x)
    assert logits.shape == (BATCH, N_CLASSES)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, y).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and count_parameters(model) == sum(p.numel() for _, p in trainable)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.norm() > 0, n
        else:
            assert p.grad is None, n

    model.eval()  # dropout off, so the two paths see the same network
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (BATCH, model.feature_dim)
        torch.testing.assert_close(model(x), model.forward_head(features))
        maps = model.feature_maps(x)
    assert list(maps) == model.conv_layer_names()
    assert all(m.ndim == 4 and m.shape[0] == BATCH for m in maps.values())
    assert (name == "mlp") == (model.conv_layer_names() == [])
    assert model.normalization is None and model.pretrained_used is False


def test_registry_names_and_layer_names():
    assert set(MODELS) == {"mlp", "cnn2", "cnn3", "cnn", "lenet", "resnet18", "airbench"}
    assert MODELS["cnn"] is MODELS["cnn3"]
    resnet = build("resnet18", (3, 32, 32), pretrained="none")
    assert resnet.conv_layer_names() == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    assert build("lenet", (1, 28, 28)).conv_layer_names() == ["conv1", "conv2"]
    maps = build("lenet", (1, 28, 28)).feature_maps(torch.zeros(2, 1, 28, 28), ["conv2"])
    assert list(maps) == ["conv2"] and maps["conv2"].shape == (2, 32, 8, 8)  # Keras valid padding: 28-4=24, /2, -4
    with pytest.raises(UserError, match="conv1, conv2"):
        build("lenet", (1, 28, 28)).feature_maps(torch.zeros(2, 1, 28, 28), ["layer9"])


def test_lenet_is_the_keras_network():
    model = build("lenet", (1, 28, 28))
    assert model.features.fc.in_features == 32 * 4 * 4 and model.feature_dim == 64
    assert build("lenet", (1, 8, 8)).features.conv1.conv.padding == (2, 2)  # 'same' below 16 px


@pytest.mark.parametrize("name, size", [("cnn3", 4), ("cnn2", 2), ("lenet", 3)])
def test_too_small_images_are_a_user_error(name, size):
    with pytest.raises(UserError, match="too small"):
        build(name, (1, size, size))


def test_resnet18_stem_choice_and_channels():
    assert build("resnet18", (1, 28, 28), pretrained="none").conv1.kernel_size == (3, 3)  # auto: < 64 px
    big = build("resnet18", (1, 64, 64), pretrained="none")
    assert big.conv1.kernel_size == (7, 7) and big.conv1.in_channels == 1
    assert not isinstance(big.maxpool, torch.nn.Identity)


def test_frozen_batchnorm_stays_in_eval():
    model = build("resnet18", (3, 32, 32), pretrained="none", freeze="until:layer3").train()
    assert not model.bn1.training and not model.layer3[1].bn2.training
    assert model.layer4[0].bn1.training and model.fc.weight.requires_grad
    before = model.layer1[0].bn1.running_mean.clone()
    model(torch.randn(4, 3, 32, 32) * 5 + 3)
    torch.testing.assert_close(model.layer1[0].bn1.running_mean, before)
    trainable = [*model.layer4.parameters(), *model.fc.parameters()]
    assert count_parameters(model) == sum(p.numel() for p in trainable)


@pytest.mark.parametrize("name", ["nope", "resnet50", "CNN"])
def test_unknown_model_lists_names(name):
    with pytest.raises(UserError, match="mlp, cnn2, cnn3, cnn, lenet, resnet18"):
        build(name, (1, 8, 8))


@pytest.mark.parametrize("options, match", [
    ({"activation": "swish"}, "relu, gelu, tanh, leaky_relu, sigmoid"),
    ({"pretrained": "yes"}, "auto, imagenet, none"),
    ({"small_input": "maybe"}, "auto, true, false"),
    ({"freeze": "all"}, "none, backbone and until:<layer>"),
    ({"dropout": 1.5}, "dropout"),
    ({"hidden": [128, 0]}, "hidden"),
    ({"weights": "model.ckpt"}, ".safetensors, .pt, .pth"),
])
def test_bad_options(options, match):
    with pytest.raises(UserError, match=match):
        ModelOptions(**options)


def test_bad_freeze_layer_lists_layers():
    with pytest.raises(UserError, match="until:conv1, until:layer1, until:layer2, until:layer3, until:layer4"):
        build("resnet18", (3, 32, 32), pretrained="none", freeze="until:layer5")


def test_imagenet_not_offered_for_small_nets():
    with pytest.raises(UserError, match="resnet18"):
        build("cnn3", (1, 28, 28), pretrained="imagenet")


def test_timm_model_builds():
    pytest.importorskip("timm")
    model = build("timm:resnet10t", (3, 32, 32), pretrained="none")
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, N_CLASSES) and model.forward_features(x).shape == (2, model.feature_dim)


# --- weights files --------------------------------------------------------------------------------

def _resnet_file(tmp_path, n_classes, fmt="safetensors"):
    torch.manual_seed(1)
    source = build_model("resnet18", n_classes, 3, (32, 32), ModelOptions(pretrained="none")).eval()
    with torch.no_grad():  # make BN statistics non-trivial so a missed buffer shows in the outputs
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / f"source.{fmt}"
    if fmt == "safetensors":
        save_file(source.state_dict(), str(path))
    else:
        torch.save({"model": source.state_dict(), "epoch": 3}, path)
    return source, path


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_weights_file_reproduces_outputs(tmp_path, fmt):
    source, path = _resnet_file(tmp_path, N_CLASSES, fmt)
    model = build("resnet18", (3, 32, 32), weights=str(path)).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))
    assert model.pretrained_used and str(path) in model.pretrained_note


def test_weights_file_drops_head_for_other_class_count(tmp_path):
    source, path = _resnet_file(tmp_path, 7)
    model = build("resnet18", (3, 32, 32), weights=str(path)).eval()
    assert model.fc.out_features == N_CLASSES
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), source.forward_features(x))


class _Payload:
    """Unpickling this would call ``fn(*args)``: create the marker file."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("how", ["os.system", "open"])
@pytest.mark.parametrize("container", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_without_running(tmp_path, how, container):
    marker = tmp_path / "pwned"
    payload = _Payload(os.system, (f"touch {marker}",)) if how == "os.system" else _Payload(open, (str(marker), "w"))
    path = tmp_path / "evil.pt"
    obj = {"conv1.weight": torch.zeros(1), "x": payload}
    if container == "torch.save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(UserError, match="evil.pt"):
        build("resnet18", (3, 32, 32), weights=str(path))
    assert not marker.exists()


def test_truncated_safetensors_is_a_user_error(tmp_path):
    _, path = _resnet_file(tmp_path, N_CLASSES)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="source.safetensors"):
        build("resnet18", (3, 32, 32), weights=str(path))
    path.write_bytes(b"\xff" * 16)  # a header length that cannot be right
    with pytest.raises(UserError, match="source.safetensors"):
        build("resnet18", (3, 32, 32), weights=str(path))


def test_wrong_keys_are_a_user_error(tmp_path):
    state = build("resnet18", (3, 32, 32), pretrained="none").state_dict()
    state["layer9.weight"] = state.pop("layer1.0.conv1.weight")
    path = tmp_path / "renamed.safetensors"
    save_file(state, str(path))
    expected = r"renamed\.safetensors.*missing keys: layer1\.0\.conv1\.weight.*unexpected keys: layer9\.weight"
    with pytest.raises(UserError, match=expected):
        build("resnet18", (3, 32, 32), weights=str(path))
    state["layer9.weight"] = torch.zeros(3)  # shape mismatch outside the head
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    save_file(state, str(path))
    with pytest.raises(UserError, match=r"shape mismatch.*layer1\.0\.conv1\.weight"):
        build("resnet18", (3, 32, 32), weights=str(path))


def test_missing_weights_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        build("cnn3", (1, 28, 28), weights=str(tmp_path / "nothing.pt"))


# --- ImageNet weights: offline fallbacks and the cache --------------------------------------------

def test_auto_without_network_falls_back_to_scratch(caplog):
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        model = build("resnet18", (3, 32, 32))  # pretrained: auto
    assert time.perf_counter() - start < 10
    assert model.pretrained_used is False and model.normalization is None
    assert "unavailable" in model.pretrained_note
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "ImageNet weights unavailable" in warnings[0].getMessage()


def test_auto_gives_up_on_a_stalled_download(monkeypatch):
    monkeypatch.setattr(resnet_module, "AUTO_DOWNLOAD_S", 0.2)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: time.sleep(3))
    start = time.perf_counter()
    model = build("resnet18", (3, 32, 32))
    assert time.perf_counter() - start < 2 and model.pretrained_used is False
    assert "within" in model.pretrained_note


def test_imagenet_offline_is_a_user_error():
    with pytest.raises(UserError, match="pretrained: none.*weights: PATH"):
        build("resnet18", (3, 32, 32), pretrained="imagenet")


def test_none_never_downloads(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("pretrained: none tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    assert build("resnet18", (3, 32, 32), pretrained="none").pretrained_used is False


def test_auto_uses_cached_weights_adapted_to_gray(tmp_path):
    torch.manual_seed(2)
    imagenet = torchvision.models.resnet18().state_dict()  # stands in for the downloaded file
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(imagenet, cache / "resnet18-f37072fd.pth")
    model = build("resnet18", (1, 64, 64))  # 64 px: the standard 7x7 stem, so conv1 is reused
    assert model.pretrained_used and "IMAGENET1K_V1" in model.pretrained_note
    torch.testing.assert_close(model.conv1.weight, imagenet["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.layer2[0].conv1.weight, imagenet["layer2.0.conv1.weight"])
    assert model.fc.out_features == N_CLASSES
    mean, std = model.normalization
    assert mean == pytest.approx([0.449]) and std == pytest.approx([0.226])
    small = build("resnet18", (3, 32, 32))  # small stem: fresh 3x3 conv1, the rest pretrained
    assert small.pretrained_used and small.conv1.weight.shape == (64, 3, 3, 3)
    torch.testing.assert_close(small.bn1.weight, imagenet["bn1.weight"])
    assert len(small.normalization[0]) == 3
