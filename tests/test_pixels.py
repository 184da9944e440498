"""Histogram pixel statistics against the float64 computation they replace."""
import numpy as np
import pytest

from visionlab.data import pixels
from visionlab.data.pixels import channel_histograms, channel_mean_std


@pytest.mark.parametrize("channels", [1, 3])
def test_histogram_mean_std_equal_float64(channels, monkeypatch):
    monkeypatch.setattr(pixels, "BLOCK", 1000)  # 28 images a block: many blocks, the last one partial
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5000, 7, 5, channels), dtype=np.uint8)
    images[:100] = 255  # skewed, so a wrong offset per channel would show
    x = images.astype(np.float64) / 255.0
    mean, std = channel_mean_std(images)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), rtol=1e-9)
    counts = channel_histograms(images)
    assert counts.shape == (channels, 256) and (counts.sum(1) == 5000 * 35).all()
    assert counts[0, 255] == np.count_nonzero(images[..., 0] == 255)


def test_empty_and_strided_inputs():
    mean, std = channel_mean_std(np.zeros((0, 4, 4, 3), np.uint8))
    assert mean.shape == (3,) and (mean == 0).all() and (std == 0).all()
    images = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    mean, _ = channel_mean_std(images[::2])  # a strided view, as the training subsample passes
    np.testing.assert_allclose(mean, images[::2].astype(np.float64).mean(axis=(0, 1, 2)) / 255)


def test_training_stats_subsample_bounded_in_images_and_pixels(monkeypatch):
    from visionlab.training import run

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (25_000, 2, 2, 3), dtype=np.uint8)
    images[::7] = 255  # every 7th image bright: a different stride sees a different mean
    assert np.allclose(run.channel_stats(images)[0], channel_mean_std(images[::2])[0])  # 25,000 // 10,000
    monkeypatch.setattr(run, "STATS_PIXELS", 4 * 2_000)  # 2,000 images' pixels: every 13th image
    mean, std = run.channel_stats(images)
    assert np.allclose(mean, channel_mean_std(images[::13])[0]) and not np.allclose(mean, channel_mean_std(images[::2])[0])
    assert min(std) > 0
