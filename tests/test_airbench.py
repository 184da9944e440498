"""airbench (the CIFAR-10 speed network), test-time augmentation and studies/cifar10-fast.yaml.

Offline, on tiny generated images, CPU in fp32; the GPU speed itself is measured by hand (see
BENCHMARKS.md), never here."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from visionlab.errors import UserError
from visionlab.evaluation import load_record
from visionlab.evaluation.tta import infer_tta, resolve_tta, views
from visionlab.models import ModelOptions, build_model
from visionlab.models.airbench import BN_BIAS_LR, WHITEN_EPS, ShiftNorm
from visionlab.training import make_config, train
from visionlab.training.loop import Engine, autocast_for

ROOT = Path(__file__).resolve().parents[1]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def smooth_images(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, channels) uint8 with correlated neighbours and channels, like photos."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size + 1, size + 1, channels))
    x = x[:, 1:, 1:] + x[:, :-1, 1:] + x[:, 1:, :-1]  # neighbouring pixels share noise
    x = x + x.mean(axis=3, keepdims=True)  # channels share a component
    return np.clip(128 + 30 * x, 0, 255).astype(np.uint8)


def cpu_engine(channels: int) -> Engine:
    cpu = torch.device("cpu")
    return Engine(cpu, torch.full((1, channels, 1, 1), 0.5), torch.full((1, channels, 1, 1), 0.25),
                  autocast_for(cpu, "fp32"), channels_last=True)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 9, 9)], ids=lambda s: "x".join(map(str, s)))
def test_forward_backward_features_and_maps(shape):
    torch.manual_seed(0)
    model = build_model("airbench", 10, shape[0], shape[1:]).train()
    x = torch.randn(4, *shape)
    logits = model(x)
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.arange(4)).backward()
    for name, p in model.named_parameters():
        if name == "features.whiten.conv.weight":  # fixed by the data, never trained
            assert not p.requires_grad and p.grad is None
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (4, 256) == (4, model.feature_dim)
        torch.testing.assert_close(model(x), model.forward_head(features))
        maps = model.feature_maps(x)
    assert list(maps) == model.conv_layer_names() == ["whiten", "block1", "block2", "block3"]
    whiten_side = shape[1] - 1  # 2x2 conv, no padding
    assert maps["whiten"].shape == (4, 2 * shape[0] * 4, whiten_side, whiten_side)
    assert maps["block1"].shape == (4, 64, whiten_side // 2, whiten_side // 2)
    assert maps["block3"].shape[1] == 256


def test_too_small_and_freeze():
    with pytest.raises(UserError, match="too small.*at least 9x9"):
        build_model("airbench", 10, 1, (8, 8))
    model = build_model("airbench", 10, 3, (32, 32), ModelOptions(freeze="until:block1"))
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("features.block1"))
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("features.block2"))


@pytest.mark.parametrize("channels", [3, 1])
def test_whitening_init_whitens_the_patches_it_was_fitted_on(channels):
    images = smooth_images(40, 12, channels)
    mean, std = [0.5] * channels, [0.2] * channels
    model = build_model("airbench", 10, channels, (12, 12))
    model.init_from_data(images, mean, std)
    conv = model.features.whiten.conv
    d = channels * 4
    torch.testing.assert_close(conv.weight[d:], -conv.weight[:d])  # each filter and its negative
    assert torch.count_nonzero(conv.bias) == 0
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255 - 0.5) / 0.2  # as training normalises
    y = F.conv2d(x, conv.weight[:d].double())  # (N, d, 11, 11): the whitened patches
    y = y.permute(0, 2, 3, 1).reshape(-1, d)
    covariance = y.T @ y / len(y)  # uncentred, as the whitening was fitted
    eigenvalues = torch.linalg.eigvalsh(covariance)
    assert eigenvalues.min() > 0.9  # every direction has variance ~lambda / (lambda + eps)
    torch.testing.assert_close(covariance, torch.eye(d, dtype=torch.float64), atol=WHITEN_EPS * 50, rtol=0)


def test_batchnorm_shift_learns_64_times_faster_under_sgd():
    """The reparametrised shift takes airbench's bias_scaler step: g^2 = 64 times a plain step."""
    torch.manual_seed(0)
    norm = ShiftNorm(4).train()
    x = torch.randn(8, 4, 5, 5)
    target = torch.randn(8, 4, 5, 5)
    F.mse_loss(norm(x), target).backward()
    shift_before = (norm.bias * norm.gain).detach().clone()
    grad_of_shift = norm.bias.grad / norm.gain  # d loss / d shift, by the chain rule
    lr = 0.01
    with torch.no_grad():
        norm.bias -= lr * norm.bias.grad
    torch.testing.assert_close(norm.bias * norm.gain - shift_before, -lr * BN_BIAS_LR * grad_of_shift)
    assert norm.weight is None  # no learned scale


def test_flip_averaging_is_the_mean_of_the_two_logits():
    torch.manual_seed(0)
    model = build_model("airbench", 5, 3, (12, 12)).eval()
    engine = cpu_engine(3)
    images = torch.from_numpy(smooth_images(6, 12, 3))
    logits, feats, plain = infer_tta(model, images, engine, batch_size=4, mode="flip", features=True)
    x = engine.prepare(images)
    with torch.no_grad():
        expected = (model(x) + model(x.flip(-1))) / 2
        torch.testing.assert_close(logits, expected)
        torch.testing.assert_close(plain, model(x))
        torch.testing.assert_close(feats, model.forward_features(x))
    assert not torch.allclose(logits, plain)  # the mirror did change something


def test_translate_views_shift_one_pixel_with_weights_summing_to_one():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).view(2, 3, 5, 6)
    for mode, n_views in [("none", 1), ("flip", 2), ("translate", 3), ("flip-translate", 6)]:
        pairs = views(x, mode)
        assert len(pairs) == n_views and sum(w for w, _ in pairs) == pytest.approx(1.0)
        assert pairs[0][1] is x and all(v.shape == x.shape for _, v in pairs)
    (_, plain), (_, down_right), (_, up_left) = views(x, "translate")
    torch.testing.assert_close(down_right[..., 1:, 1:], x[..., :-1, :-1])  # content moved one pixel down-right
    torch.testing.assert_close(up_left[..., :-1, :-1], x[..., 1:, 1:])
    weights = [w for w, _ in views(x, "flip-translate")]
    assert weights == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]  # airbench's tta_level 2


def test_digits_are_never_flipped(caplog):
    digits = [str(i) for i in range(10)]
    with caplog.at_level(logging.WARNING):
        assert resolve_tta("flip", digits) == "none"
        assert resolve_tta("flip-translate", digits) == "translate"
    assert "mirrored 2 is not a 2" in caplog.text
    assert resolve_tta("none", digits) == "none"
    assert resolve_tta("flip-translate", CIFAR_CLASSES) == "flip-translate"
    with pytest.raises(UserError, match="Only none, flip, flip-translate"):
        resolve_tta("mirror", CIFAR_CLASSES)
    with pytest.raises(UserError, match="tta"):
        make_config({"tta": "mirror"})


def test_airbench_trains_with_whitening_and_tta_end_to_end(tmp_path, class_folder):
    """run.py's init_from_data hook and evaluation's TTA, through train() on 12x12 gray images."""
    out = tmp_path / "run"
    result = train(make_config({"data": str(class_folder), "model": "airbench", "epochs": 1, "batch_size": 16,
                                "optimizer": "sgd", "lr": 0.1, "augment": ["crop:1", "flip"], "device": "cpu",
                                "precision": "fp32", "tta": "flip-translate", "out": str(out)}))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tta"] == "flip-translate" and 0 <= metrics["test_accuracy_no_tta"] <= 1
    assert metrics["test_seconds"] >= 0 and result["test_accuracy"] == metrics["test_accuracy"]
    record = load_record(out / "predictions.npz")
    assert record["logits_no_tta"].shape == record["logits"].shape
    from safetensors.torch import load_file

    weight = load_file(str(out / "model.safetensors"))["features.whiten.conv.weight"]  # (8, 1, 2, 2)
    torch.testing.assert_close(weight[4:], -weight[:4])  # the data's whitening, not a random init
    gram = weight[:4].flatten(1) @ weight[:4].flatten(1).T  # scaled eigenvectors: orthogonal rows
    torch.testing.assert_close(gram, torch.diag(torch.diag(gram)), atol=1e-3 * gram.abs().max().item(), rtol=0)


def test_whitening_bias_trains_for_three_epochs_then_stays(tmp_path, class_folder, monkeypatch):
    from visionlab.training import run as run_module

    biases = []
    real = run_module.train_one_epoch

    def recording(model, *args, **kwargs):
        stats = real(model, *args, **kwargs)
        biases.append(model.features.whiten.conv.bias.detach().clone())
        return stats

    monkeypatch.setattr(run_module, "train_one_epoch", recording)
    train(make_config({"data": str(class_folder), "model": "airbench", "epochs": 5, "batch_size": 16,
                       "optimizer": "sgd", "lr": 0.05, "weight_decay": 0.01, "device": "cpu", "precision": "fp32",
                       "out": str(tmp_path / "run")}))
    assert len(biases) == 5
    assert not torch.equal(biases[0], biases[1]) and not torch.equal(biases[1], biases[2])  # epochs 1-3 train it
    assert torch.equal(biases[2], biases[3]) and torch.equal(biases[3], biases[4])  # then neither step nor decay
    model = build_model("airbench", 10, 3, (32, 32), ModelOptions(freeze="until:whiten"))
    model.on_epoch(0, 10)  # a frozen bias is not unfrozen by the schedule
    assert not model.features.whiten.conv.bias.requires_grad


def test_cifar10_fast_study_validates():
    from visionlab.study import load_study
    from visionlab.study.config import experiment_config

    study, _ = load_study(ROOT / "studies" / "cifar10-fast.yaml")
    configs = {e.name: experiment_config(study, e, Path("out"), quick=False) for e in study.experiments}
    assert set(configs) == {"airbench", "resnet18"}
    air = configs["airbench"]
    assert (air.model, air.batch_size, air.optimizer, air.label_smoothing, air.tta) == (
        "airbench", 1024, "sgd", 0.2, "flip-translate")
    assert air.augment == ["crop:2", "reflect", "flip:alternate"] and air.val_fraction == 0.0
    assert (air.schedule, air.momentum, air.lookahead) == ("triangle", 0.85, True)
    assert configs["resnet18"].schedule == "onecycle" and not configs["resnet18"].lookahead
    assert air.lr * air.weight_decay == pytest.approx(0.0153 * 1024 / (1024 * (1 + 1 / 0.15)), rel=0.01)
    assert configs["resnet18"].model == "resnet18" and configs["resnet18"].pretrained == "none"
