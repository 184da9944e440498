"""EDA: each statistic on small generated data with a known answer, then the whole run and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_image
from visionlab.cli import main
from visionlab.data import load_dataset
from visionlab.eda import quality, run_eda, stats

EVIL = "<img src=x onerror=alert(1)>"


def test_imbalance_ratio_is_exact():
    labels = {"train": np.repeat([0, 1, 2], [30, 12, 20]), "val": np.repeat([0, 1, 2], [3, 1, 2]),
              "test": np.repeat([0, 1, 2], [7, 2, 3])}
    dist = stats.class_distribution(labels, ["a", "b", "c"])
    assert dist["total"] == [40, 15, 25]
    assert dist["imbalance_ratio"] == 40 / 15
    assert dist["imbalanced"] and dist["largest"] == {"class": "a", "images": 40}
    assert dist["smallest"] == {"class": "b", "images": 15}
    empty = stats.class_distribution({"train": np.array([0, 0, 1])}, ["a", "b", "c"])
    assert empty["empty_classes"] == ["c"] and empty["imbalance_ratio"] == 2.0 and empty["imbalanced"]


def test_channel_statistics_and_intensity():
    images = np.zeros((4, 2, 2, 3), np.uint8)
    images[:, :, :, 0] = 255  # red channel full, green half the images, blue zero
    images[:2, :, :, 1] = 255
    st = stats.channel_stats(images)
    assert st["mean"] == [1.0, 0.5, 0.0] and st["std"] == [0.0, 0.5, 0.0]
    grey = np.zeros((2, 4, 4, 1), np.uint8)
    grey[1, :2] = 200  # half the pixels 200: mean 100, std 100
    bright, contrast = stats.intensity(grey)
    assert bright.tolist() == [0.0, 100.0] and contrast.tolist() == [0.0, 100.0]


def test_class_mean_and_std_images():
    images = np.stack([np.full((2, 2, 1), v, np.uint8) for v in (10, 30, 100, 100)])
    mean, std = stats.class_images(images, np.array([0, 0, 1, 1]), 3)
    assert mean[:, 0, 0, 0].tolist() == [20.0, 100.0, 0.0] and std[:, 0, 0, 0].tolist() == [10.0, 0.0, 0.0]


def test_class_images_over_chunks_equal_direct(monkeypatch):
    monkeypatch.setattr(stats, "CHUNK", 7 * 3 * 5 * 3)  # 7 images a chunk: several, some missing a class
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 3, 5, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, 40)
    mean, std = stats.class_images(images, labels, 5)
    for k in range(4):
        x = images[labels == k].astype(np.float64)
        np.testing.assert_allclose(mean[k], x.mean(0), rtol=1e-6)
        np.testing.assert_allclose(std[k], x.std(0), rtol=1e-5, atol=1e-4)
    assert not mean[4].any() and not std[4].any()


def test_pixel_correlation_smooth_images_and_constant_pixels():
    rng = np.random.default_rng(0)
    n = 400
    ramp = rng.uniform(0, 200, (n, 1, 1)) + np.linspace(0, 30, 8)[None, None, :]  # rows share one random level
    images = np.repeat(ramp, 8, axis=1)[..., None].astype(np.uint8)
    images[:, 0, 0, 0] = 7  # one pixel never changes
    corr = stats.pixel_correlation(images)
    assert corr["constant_pixels"] == 1 and corr["grid"] == [8, 8] and corr["images_used"] == n
    assert corr["neighbour_correlation"] > 0.99  # every pixel moves with the image's level
    assert np.isnan(corr["matrix"][0]).all()


def test_image_sizes_recommend_a_size():
    sizes = np.array([[480, 640], [500, 600], [300, 400], [512, 512]])
    r = stats.image_sizes(sizes, (128, 128, 3))
    assert not r["uniform"] and r["distinct_sizes"] == 4
    assert r["recommended_image_size"] == 224  # median shorter side 490 -> capped at 224
    assert stats.image_sizes(np.array([[28, 28]] * 3), (28, 28, 1))["recommended_image_size"] == 28
    small = stats.image_sizes(np.array([[40, 60], [50, 70], [64, 64]]), (64, 64, 3))
    assert small["recommended_image_size"] == 64  # median shorter side 50 -> 64 (multiple of 32)


def test_exact_duplicates_within_and_across_splits():
    hashes = np.array([1, 2, 3, 2, 4, 3, 3], np.uint64)
    split_of = np.array([0, 0, 0, 0, 1, 1, 2])  # hash 2 twice in train; hash 3 in train, val and test
    index = np.array([0, 1, 2, 3, 0, 1, 0])
    r = quality.exact_duplicates(hashes, split_of, ["train", "val", "test"], index)
    assert r["groups"] == 2 and r["extra_copies"] == 3 and r["images"] == 5
    assert r["groups_across_splits"] == 1 and r["groups_within_a_split"] == 1
    assert {(m["split"], m["index"]) for m in r["examples"][0]} == {("train", 2), ("val", 1), ("test", 0)}


def test_planted_near_duplicate_blank_and_outlier_are_found():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (60, 16, 16, 1)).astype(np.uint8)
    images[10] = np.clip(images[3].astype(int) + 6, 0, 255)  # image 3, a little brighter
    images[20] = 128  # blank
    hashes = np.arange(60, dtype=np.uint64)
    near = quality.near_duplicates(images, hashes)
    assert near["pairs"].tolist() == [[3, 10]] and near["similarity"][0] >= quality.NEAR
    hashes[10] = hashes[3]  # identical pixels are exact duplicates, not near ones
    assert len(quality.near_duplicates(images, hashes)["pairs"]) == 0
    bright, contrast = stats.intensity(images)
    assert quality.blank_images(contrast).tolist() == [20]
    odd = quality.outliers(bright, contrast)
    assert 20 in odd["positions"].tolist()  # contrast 0 among images of contrast ~74


@pytest.fixture
def eda_folder(tmp_path):
    """3 classes (one named like HTML), unbalanced 16/8/8, mixed sizes, a planted duplicate and a blank."""
    root = tmp_path / "eda-data"
    rng = np.random.default_rng(0)
    for c, (name, n) in enumerate([("cat", 16), ("dog", 8), (EVIL, 8)]):
        for i in range(n):
            size = (20, 24) if i % 2 else (24, 24)
            img = np.clip(rng.normal(60 + 60 * c, 25, (*size, 3)), 0, 255).astype(np.uint8)
            write_image(root / name / f"{i}.png", img)
    (root / "cat" / "copy.png").write_bytes((root / "cat" / "0.png").read_bytes())
    write_image(root / "dog" / "blank.png", np.full((24, 24, 3), 90, np.uint8))
    return root


def test_run_eda_writes_every_item(tmp_path, eda_folder):
    dataset = load_dataset(str(eda_folder))
    r = run_eda(dataset, tmp_path / "eda", seed=0, samples_per_class=4)
    on_disk = json.loads((tmp_path / "eda" / "eda.json").read_text())
    assert dict(zip(dataset.classes, on_disk["class_distribution"]["total"])) == {"cat": 17, "dog": 9, EVIL: 8}
    assert on_disk["class_distribution"]["imbalance_ratio"] == 17 / 8
    assert r["quality"]["exact_duplicates"]["extra_copies"] == 1
    assert r["quality"]["blank"]["images"] == 1 and r["quality"]["blank"]["examples"][0]["name"].endswith("blank.png")
    sizes = r["image_statistics"]["sizes"]
    assert not sizes["uniform"] and sizes["distinct_sizes"] == 2
    assert r["handcrafted"]["hog_baseline"]["accuracy"] is not None
    assert set(r["figures"]) >= {"class_distribution", "class_mean_images", "brightness_contrast", "samples",
                                 "pixel_correlation", "exact_duplicates", "blank_and_outliers", "handcrafted",
                                 "augmentations"}
    for name in r["figures"].values():
        assert (tmp_path / "eda" / name).stat().st_size > 2000
    assert any("imbalanced" in o for o in r["observations"])
    html = (tmp_path / "eda" / "eda.html").read_text()
    assert EVIL not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "data:image/png;base64," in html and "figure not available" not in html


def test_cli_eda_and_bad_source(tmp_path, class_folder, capsys):
    assert main(["eda", str(class_folder), "--out", str(tmp_path / "e")]) == 0
    assert "eda.html" in capsys.readouterr().out and (tmp_path / "e" / "eda.json").exists()
    assert main(["eda", str(tmp_path / "nowhere"), "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("shape", [(40, 28, 28, 1), (30, 32, 32, 3), (12, 100, 70, 3), (20, 8, 8, 1)])
def test_hog_features_equal_skimage_image_by_image(shape):
    """The vectorised HOG (odd cells and the area-resize past 64 px included) against skimage's
    hog of each image's grey unit with the same parameters."""
    from skimage.feature import hog

    from visionlab.eda import handcrafted

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    images[:, : shape[1] // 3] = 0  # flat bands: zero gradients, orientation 0
    images[::2, :, ::4] = 255  # and vertical edges
    ours = handcrafted.hog_features(images)
    unit = handcrafted._unit(images[0])
    params = handcrafted.hog_params(min(unit.shape))
    theirs = np.stack([hog(handcrafted._unit(im), **params) for im in images]).astype(np.float32)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert handcrafted.hog_features(images[:0]).shape[0] == 0
