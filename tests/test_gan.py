"""GAN contracts: both architectures' shapes and gradients, one tiny end-to-end run on digits (outputs,
per-batch losses, grids), resume after an interruption equal to an uninterrupted run, the
quality score's sanity (real beats noise, real covers every class), and one-line errors."""
import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from visionlab.errors import UserError
from visionlab.gan import ARCHS, Discriminator, GANConfig, Generator, build_gan, frechet_distance, run_gan
from visionlab.gan import command, quality
from visionlab.gan import run as run_module
from visionlab.gan import train as train_module

TINY = dict(data="digits", epochs=2, batch_size=64, max_train_images=256, quality_samples=200,
            classifier_epochs=1, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def judge_file(tmp_path_factory):
    """The digits judge, trained once for the module: every run folder gets a copy, as a cached one."""
    from visionlab.data import DataConfig, load_dataset

    out = tmp_path_factory.mktemp("judge")
    dataset = load_dataset(DataConfig(source="digits", image_size=28, channels="1", cache_dir=str(out / "cache")))
    quality.load_or_train_classifier(out, dataset, GANConfig(**TINY, out=str(out)), torch.device("cpu"))
    return out / quality.CLASSIFIER_FILE


def tiny(tmp_path, name="run", judge=None, **overrides):
    """A tiny config; with judge, its out folder is created holding a copy of the judge."""
    config = GANConfig(**{**TINY, "out": str(tmp_path / name), **overrides})
    if judge is not None:
        (tmp_path / name).mkdir(exist_ok=True)
        shutil.copy(judge, tmp_path / name / quality.CLASSIFIER_FILE)
    return config


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_generator_and_discriminator_shapes_and_gradients(arch):
    torch.manual_seed(0)
    G, D = build_gan(arch, latent=100)
    z = torch.randn(5, 100)
    images = G(z)
    assert images.shape == (5, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1  # Tanh: the data range
    logits = D(images)
    assert logits.shape == (5,) and torch.isfinite(logits).all()
    logits.sum().backward()
    for name, p in [*G.named_parameters(), *D.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_mlp_is_the_classic_architecture():
    D = Discriminator("mlp")
    widths = [(m.in_features, m.out_features) for m in D.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [(784, 512), (512, 256), (256, 1)]
    assert all(m.negative_slope == 0.2 for m in D.modules() if isinstance(m, torch.nn.LeakyReLU))
    layers = list(Generator("mlp", latent=100).net)
    widths = [(m.in_features, m.out_features) for m in layers if isinstance(m, torch.nn.Linear)]
    assert widths == [(100, 256), (256, 512), (512, 1024), (1024, 784)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in layers) == 3 and isinstance(layers[-2], torch.nn.Tanh)


def test_run_writes_losses_grids_quality_and_checkpoint(tmp_path, judge_file):
    record = run_gan(tiny(tmp_path, epochs=1, judge=judge_file))
    out = tmp_path / "run"
    for name in ("losses.jsonl", "losses.png", "quality.jsonl", "quality.png", "samples_epoch_000.png",
                 "samples_epoch_001.png", "samples.png", "checkpoint.safetensors", "generator.safetensors",
                 "classifier.safetensors", "gan.json", "gan.html"):
        assert (out / name).stat().st_size > 0, name
    losses = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses] == [1, 2, 3, 4]  # 256 images / 64 per batch: one line per batch
    assert all(math.isfinite(r["d_loss"]) and math.isfinite(r["g_loss"]) and 0 <= r["d_fake"] <= 1 for r in losses)
    from PIL import Image

    grid = Image.open(out / "samples.png")
    assert grid.size == ((4 * 30 + 2) * 4,) * 2  # 4x4 tiles of 28 px and 2 px gaps, drawn at 4x
    saved = json.loads((out / "gan.json").read_text())
    assert [q["epoch"] for q in saved["quality"]] == [0, 1]
    assert {"frechet_distance", "coverage", "class_entropy", "confidence"} <= set(saved["final_quality"])
    assert saved["config"]["arch"] == "mlp" and record["out"] == str(out)
    page = (out / "gan.html").read_text()
    assert "<script" not in page and page.count("data:image/png;base64,") == 5  # self-contained
    hostile = run_module.render_html({**record, "data": {**record["data"], "source": "<b>&x"}}, out)
    assert "&lt;b&gt;&amp;x" in hostile and "<b>&x" not in hostile  # user text stays text


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, monkeypatch, judge_file):
    run_gan(tiny(tmp_path, "whole", judge=judge_file))
    calls = []
    real_epoch = train_module.train_one_epoch

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the second epoch
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_gan(tiny(tmp_path, "cut", judge=judge_file))
    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)
    cut = tmp_path / "cut"
    assert train_module.saved_epoch(cut / "checkpoint.safetensors") == 1
    with pytest.raises(UserError, match="--resume"):
        run_gan(tiny(tmp_path, "cut"))  # an existing run is never overwritten
    record = run_gan(tiny(tmp_path, "cut"), resume=True)
    assert [q["epoch"] for q in record["quality"]] == [0, 1, 2]
    epochs = [json.loads(line)["epoch"] for line in (cut / "losses.jsonl").read_text().splitlines()]
    assert epochs == [1] * 4 + [2] * 4  # each epoch's batches logged once
    whole, resumed = load_file(str(tmp_path / "whole" / "generator.safetensors")), load_file(
        str(cut / "generator.safetensors"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)  # the same seeded run, bit for bit
    with pytest.raises(UserError, match="nothing to resume"):
        run_gan(tiny(tmp_path, "empty"), resume=True)


def test_quality_score_prefers_real_images_to_noise(tmp_path, judge_file):
    from visionlab.data import DataConfig, load_dataset

    dataset = load_dataset(DataConfig(source="digits", image_size=28, channels="1"))
    config = tiny(tmp_path, judge=judge_file)
    judge, meta = quality.load_or_train_classifier(tmp_path / "run", dataset, config, torch.device("cpu"))
    assert meta["test_accuracy"] > 0.8
    to_float = train_module.to_unit_range
    real_stats = quality.reference_stats(judge, to_float(torch.from_numpy(np.array(dataset.test.images))))
    real = quality.score_images(judge, to_float(torch.from_numpy(np.array(dataset.val.images))), real_stats)
    noise = torch.rand(180, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fake = quality.score_images(judge, noise, real_stats)
    assert real["frechet_distance"] < fake["frechet_distance"] / 5
    assert real["coverage"] == 1.0 and real["class_entropy"] > 0.95
    one_class = quality.score_images(judge, to_float(torch.from_numpy(
        np.array(dataset.val.images[dataset.val.labels == 3]))), real_stats)
    assert one_class["coverage"] <= 0.2 and one_class["class_entropy"] < 0.5  # a collapsed generator


def test_frechet_distance_is_zero_for_equal_gaussians_and_matches_sqrtm():
    from scipy import linalg

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 6)), rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 1
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("bad, message", [
    (dict(arch="vae"), "Only mlp, dcgan"),
    (dict(epochs=0), "epochs"),
    (dict(grid=10), "square"),
    (dict(device="tpu"), "auto, cpu, cuda"),
])
def test_bad_config_is_one_user_error(tmp_path, bad, message):
    with pytest.raises(UserError, match=message):
        tiny(tmp_path, **bad)
    if "arch" in bad:
        with pytest.raises(UserError, match="Only mlp, dcgan"):
            Generator(bad["arch"])


def test_command_registers_gan_and_reports_bad_arch(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["gan", "--arch", "vae", "--out", str(tmp_path / "g")])
    assert args.data == "digits" and args.epochs == GANConfig.epochs and args.func is command.run
    with pytest.raises(UserError, match="Unknown GAN architecture 'vae'"):
        command.run(args)
    assert parser.parse_args(["gan", "--data", "x/mnist.tar.gz"]).out is None


def test_arch_names_match_the_models_and_the_cli_needs_no_torch():
    import subprocess
    import sys

    from visionlab.gan.config import ARCH_NAMES
    from visionlab.gan.models import ARCHS

    assert tuple(ARCHS) == ARCH_NAMES
    code = "import sys; from visionlab.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
