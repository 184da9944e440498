"""Histogram pixel statistics against the float64 computation they replace."""
import numpy as np
import pytest

from visionlab.data.pixels import channel_histograms, channel_mean_std


@pytest.mark.parametrize("channels", [1, 3])
def test_histogram_mean_std_equal_float64(channels):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5000, 7, 5, channels), dtype=np.uint8)  # more than one chunk
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
