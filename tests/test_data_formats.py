"""Every supported source format decodes to the right pixels, labels, classes and splits.

Each test builds a tiny dataset in a temporary folder and checks actual pixel values against
what was written, not merely that loading does not crash.
"""
from __future__ import annotations

import gzip
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from conftest import write_image
from visionlab.data import DataConfig, load_dataset
from visionlab.errors import UserError

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGITS = [str(i) for i in range(10)]


# ----------------------------------------------------------------------------- helpers

def load(source, **kw) -> "object":
    return load_dataset(DataConfig(source=str(source), **kw))


def by_name(ds) -> dict[str, tuple[np.ndarray, int, str]]:
    """{name: (image, label, split)} over all three splits."""
    out = {}
    for split in ("train", "val", "test"):
        s = ds.split(split)
        for name, img, lab in zip(ds.names(split), s.images, s.labels):
            assert name not in out, f"{name} appears in two splits"
            out[name] = (np.asarray(img), int(lab), split)
    return out


def make_images(root: Path, spec: dict[str, int], hw=(6, 5), seed=0, ext=".png") -> dict[str, np.ndarray]:
    """Write spec[reldir] random gray images under root/reldir; returns {relpath: (H, W) array}."""
    rng = np.random.default_rng(seed)
    written = {}
    for rel, n in spec.items():
        for i in range(n):
            img = rng.integers(0, 256, hw, dtype=np.uint8)
            rel_path = f"{rel}/{i}{ext}"
            write_image(root / rel_path, img)
            written[rel_path] = img
    return written


def check_against(ds, written: dict[str, np.ndarray], class_of, prefix: str = ""):
    """Every written image is in the dataset exactly once, with its pixels and its class's label."""
    got = by_name(ds)
    got = {name[len(prefix):] if name.startswith(prefix) else name: v for name, v in got.items()}
    assert sorted(got) == sorted(written)
    for rel, img in written.items():
        image, label, _ = got[rel]
        assert image.shape == (*img.shape, 1)
        np.testing.assert_array_equal(image[..., 0], img)
        assert ds.classes[label] == class_of(rel)
    return got


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    array = np.asarray(array, np.uint8)
    magic = 0x00000800 | array.ndim  # 0x00000803 for (N, H, W) images, 0x00000801 for labels
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def make_idx(folder: Path, gz: bool, n_train=30, n_test=10, hw=(7, 5), seed=0):
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    xtr = rng.integers(0, 256, (n_train, *hw), dtype=np.uint8)
    ytr = np.arange(n_train) % 10
    xte = rng.integers(0, 256, (n_test, *hw), dtype=np.uint8)
    yte = (np.arange(n_test) * 3) % 10
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", xtr, gz)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", ytr, gz)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", xte, gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", yte, gz)
    return xtr, ytr, xte, yte


# ----------------------------------------------------------------------------- folders

def test_class_folder(class_folder):
    ds = load(class_folder)
    assert ds.classes == ["cat", "dog", "eel"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (24, 3, 3)
    assert ds.image_shape == (12, 12, 1)
    assert ds.train.images.dtype == np.uint8 and ds.train.labels.dtype == np.int64
    assert ds.skipped == []
    assert ds.cached is False
    got = by_name(ds)
    assert len(got) == 30
    for name, (image, label, _) in got.items():
        expected = np.asarray(Image.open(class_folder / name))
        np.testing.assert_array_equal(image[..., 0], expected)
        assert ds.classes[label] == name.split("/")[0]
    # stratified: each class contributes one image to val and one to test
    for split in ("val", "test"):
        assert np.bincount(ds.split(split).labels, minlength=3).tolist() == [1, 1, 1]
    summary = ds.summary()
    assert set(summary) == {"source", "classes", "image_shape", "splits", "class_counts", "skipped",
                            "duplicates_across_splits", "cache_dir", "decode_seconds", "cached"}
    assert summary["splits"] == {"train": 24, "val": 3, "test": 3}
    assert summary["class_counts"]["train"] == [8, 8, 8]
    assert summary["image_shape"] == [12, 12, 1]
    assert summary["source"] == str(class_folder.resolve())


def test_nested_subfolders_inside_a_class(tmp_path):
    root = tmp_path / "nested"
    written = make_images(root, {"a/x/y": 3, "a": 2, "b/deep": 5})
    ds = load(root, val_fraction=0, test_fraction=0)
    assert ds.classes == ["a", "b"]
    check_against(ds, written, lambda rel: rel.split("/")[0])


@pytest.mark.parametrize("train,val,test", [
    ("train", None, "test"),
    ("training", None, "testing"),
    ("train", "val", "test"),
    ("Train", "valid", "Test"),
    ("training", "validation", "testing"),
])
def test_split_folders(tmp_path, train, val, test):
    root = tmp_path / "splitds"
    spec = {f"{train}/a": 10, f"{train}/b": 10, f"{test}/a": 3, f"{test}/b": 2}
    if val:
        spec.update({f"{val}/a": 2, f"{val}/b": 2})
    written = make_images(root, spec)
    ds = load(root)
    assert ds.classes == ["a", "b"]
    got = check_against(ds, written, lambda rel: rel.split("/")[1])
    # the official test set is kept as shipped, never resampled
    assert sorted(n for n, v in got.items() if v[2] == "test") == sorted(n for n in written if n.startswith(test + "/"))
    if val:
        assert sorted(n for n, v in got.items() if v[2] == "val") == sorted(n for n in written if n.startswith(val + "/"))
        assert len(ds.train) == 20
    else:  # val is carved (stratified) from train: 10% of 20
        assert len(ds.val) == 2 and len(ds.train) == 18
        assert np.bincount(ds.val.labels, minlength=2).tolist() == [1, 1]
        assert all(n.startswith(train + "/") for n, v in got.items() if v[2] in ("train", "val"))
    assert len(ds.test) == 5


def test_split_folder_train_only_carves_test_and_val(tmp_path):
    root = tmp_path / "trainonly"
    written = make_images(root, {"train/a": 10, "train/b": 10})
    ds = load(root)
    check_against(ds, written, lambda rel: rel.split("/")[1])
    assert (len(ds.train), len(ds.val), len(ds.test)) == (16, 2, 2)


def test_single_wrapping_folders_are_looked_through(tmp_path):
    root = tmp_path / "outer"
    written = make_images(root, {"mnist/training/3": 10, "mnist/training/7": 10,
                                 "mnist/testing/3": 2, "mnist/testing/7": 2})
    ds = load(root)
    assert ds.classes == ["3", "7"]
    got = check_against(ds, written, lambda rel: rel.split("/")[2])
    assert sorted(n for n, v in got.items() if v[2] == "test") == sorted(n for n in written if "/testing/" in n)

    root2 = tmp_path / "outer2"
    written2 = make_images(root2, {"wrap/more/cat": 5, "wrap/more/dog": 5})
    ds2 = load(root2, val_fraction=0, test_fraction=0)
    assert ds2.classes == ["cat", "dog"]
    check_against(ds2, written2, lambda rel: rel.split("/")[2])


# ----------------------------------------------------------------------------- archives

def _archive(folder: Path, dest: Path, kind: str, explicit_dirs: bool) -> Path:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    dirs = sorted(p for p in folder.rglob("*") if p.is_dir())
    if kind == "zip":
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
            if explicit_dirs:
                for d in dirs:
                    zf.writestr(d.relative_to(folder).as_posix() + "/", b"")
            for f in files:
                zf.write(f, f.relative_to(folder).as_posix())
    else:
        with tarfile.open(dest, "w:gz" if kind == "tar.gz" else "w") as tf:
            if explicit_dirs:
                tf.add(folder, arcname=".")  # adds './', './cat/', './cat/0.png' ...
            else:
                for f in files:
                    tf.add(f, arcname=f.relative_to(folder).as_posix(), recursive=False)
    return dest


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
@pytest.mark.parametrize("layout", ["classes", "splits"])
@pytest.mark.parametrize("wrap", [False, True])
def test_archives(tmp_path, kind, layout, wrap):
    src = tmp_path / "src"
    prefix = "ds/" if wrap else ""
    if layout == "classes":
        spec = {f"{prefix}cat": 10, f"{prefix}dog": 10}
    else:
        spec = {f"{prefix}train/cat": 8, f"{prefix}train/dog": 8, f"{prefix}test/cat": 2, f"{prefix}test/dog": 3}
    written = make_images(src, spec)
    # a stray macOS resource fork and hidden file, as real zips have
    (src / "__MACOSX").mkdir()
    (src / "__MACOSX" / "._junk.png").write_bytes(b"\x00\x05\x16\x07")
    (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    archive = _archive(src, tmp_path / f"data.{kind}", kind, explicit_dirs=wrap)
    ds = load(archive)
    assert ds.kind == "archive"
    assert ds.classes == ["cat", "dog"]
    written = {k[len(prefix):]: v for k, v in written.items()}
    class_of = (lambda rel: rel.split("/")[0]) if layout == "classes" else (lambda rel: rel.split("/")[1])
    got = check_against(ds, written, class_of, prefix=prefix)
    if layout == "classes":
        assert (len(ds.train), len(ds.val), len(ds.test)) == (16, 2, 2)
    else:
        assert sorted(n for n, v in got.items() if v[2] == "test") == sorted(n for n in written if n.startswith("test/"))
        assert (len(ds.train), len(ds.val), len(ds.test)) == (14, 2, 5)
    skipped = {s["path"] for s in ds.skipped}
    assert any("__MACOSX" in p for p in skipped) and any(".DS_Store" in p for p in skipped)


def test_archive_and_folder_agree(tmp_path, class_folder):
    archive = _archive(class_folder, tmp_path / "same.tar.gz", "tar.gz", explicit_dirs=False)
    a, f = load(archive), load(class_folder)
    assert a.classes == f.classes
    fa, ff = by_name(a), by_name(f)
    assert sorted(fa) == sorted(ff)
    for name in ff:
        np.testing.assert_array_equal(fa[name][0], ff[name][0])
        assert fa[name][1] == ff[name][1]


# ----------------------------------------------------------------------------- idx

@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("given", ["folder", "images_file", "labels_file"])
def test_idx(tmp_path, gz, given):
    folder = tmp_path / "mnistlike" / "raw"
    xtr, ytr, xte, yte = make_idx(folder, gz)
    suffix = ".gz" if gz else ""
    source = {"folder": folder, "images_file": folder / f"t10k-images-idx3-ubyte{suffix}",
              "labels_file": folder / f"train-labels-idx1-ubyte{suffix}"}[given]
    ds = load(source)
    assert ds.kind == "idx"
    assert ds.classes == DIGITS
    assert ds.image_shape == (7, 5, 1)
    # official test split kept whole and in order
    np.testing.assert_array_equal(ds.test.images[..., 0], xte)
    np.testing.assert_array_equal(ds.test.labels, yte)
    # validation is 10% of train, carved stratified; train + val is exactly the train file
    assert (len(ds.train), len(ds.val)) == (27, 3)
    assert ds.train.part == ds.val.part == "train"
    assert sorted(np.concatenate([ds.train.index, ds.val.index]).tolist()) == list(range(30))
    np.testing.assert_array_equal(ds.train.images[..., 0], xtr[ds.train.index])
    np.testing.assert_array_equal(ds.train.labels, ytr[ds.train.index])
    np.testing.assert_array_equal(ds.val.images[..., 0], xtr[ds.val.index])
    np.testing.assert_array_equal(ds.val.labels, ytr[ds.val.index])
    assert ds.names("test")[4] == f"t10k-images-idx3-ubyte{suffix}[4]"


def test_idx_named_fashion_when_path_says_fashion(tmp_path):
    folder = tmp_path / "data" / "FashionMNIST" / "raw"
    xtr, ytr, xte, yte = make_idx(folder, gz=True)
    ds = load(folder)
    assert ds.classes == FASHION
    np.testing.assert_array_equal(ds.test.labels, yte)
    assert ds.summary()["classes"][9] == "Ankle boot"


def test_idx_fewer_than_ten_labels_get_digit_names(tmp_path):
    folder = tmp_path / "small_idx"
    rng = np.random.default_rng(3)
    write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (12, 4, 4), dtype=np.uint8), False)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(12) % 3, False)
    ds = load(folder)
    assert ds.classes == ["0", "1", "2"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (10, 1, 1)  # no test file: 80/10/10 of 12 rounded


# ----------------------------------------------------------------------------- SVHN .mat

def _svhn(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 1..10, 10 meaning digit 0
    return x, y


def test_svhn_mat_file(tmp_path):
    x, y = _svhn(40, 0)
    path = tmp_path / "train_32x32.mat"
    savemat(path, {"X": x, "y": y})
    ds = load(path)
    assert ds.kind == "svhn-mat"
    assert ds.classes == DIGITS
    assert ds.image_shape == (32, 32, 3)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (32, 4, 4)
    expected_labels = np.where(y[:, 0] == 10, 0, y[:, 0])
    for split in ("train", "val", "test"):
        s = ds.split(split)
        np.testing.assert_array_equal(s.labels, expected_labels[s.index])
        for k in range(len(s)):
            np.testing.assert_array_equal(s.images[k], x[..., s.index[k]])
    i = int(np.flatnonzero(ds.train.index == 9)[0])  # y[9] == 10 -> label 0
    assert ds.train.labels[i] == 0
    assert ds.train.images[i, 5, 17, 2] == x[5, 17, 2, 9]
    assert 10 not in np.concatenate([ds.train.labels, ds.val.labels, ds.test.labels])


def test_svhn_mat_folder_with_train_and_test(tmp_path):
    folder = tmp_path / "svhn"
    folder.mkdir()
    xtr, ytr = _svhn(30, 1)
    xte, yte = _svhn(10, 2)
    savemat(folder / "train_32x32.mat", {"X": xtr, "y": ytr})
    savemat(folder / "test_32x32.mat", {"X": xte, "y": yte})
    ds = load(folder)
    assert ds.classes == DIGITS
    np.testing.assert_array_equal(ds.test.images, xte.transpose(3, 0, 1, 2))
    np.testing.assert_array_equal(ds.test.labels, yte[:, 0] % 10)
    assert ds.test.labels[9] == 0  # y == 10
    assert ds.test.images[3, 31, 0, 1] == xte[31, 0, 1, 3]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (27, 3, 10)
    np.testing.assert_array_equal(ds.train.images, xtr.transpose(3, 0, 1, 2)[ds.train.index])


def test_svhn_channels_1_uses_luma(tmp_path):
    x = np.zeros((32, 32, 3, 10), np.uint8)
    x[..., 0, :] = 255  # pure red
    y = (np.arange(10) % 2 + 1).reshape(-1, 1)
    savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y})
    ds = load(tmp_path / "train_32x32.mat", channels="1", val_fraction=0, test_fraction=0)
    assert ds.image_shape == (32, 32, 1)
    assert abs(int(ds.train.images[0, 0, 0, 0]) - 76) <= 1  # 0.299 * 255


# ----------------------------------------------------------------------------- npz

def test_keras_npz(tmp_path):
    rng = np.random.default_rng(5)
    xtr = rng.integers(0, 256, (20, 6, 4), dtype=np.uint8)
    ytr = np.arange(20) % 4
    xte = rng.integers(0, 256, (8, 6, 4), dtype=np.uint8)
    yte = np.arange(8) % 4
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    ds = load(path)
    assert ds.kind == "npz"
    assert ds.classes == ["0", "1", "2", "3"]
    assert ds.image_shape == (6, 4, 1)
    np.testing.assert_array_equal(ds.test.images[..., 0], xte)
    np.testing.assert_array_equal(ds.test.labels, yte)
    assert (len(ds.train), len(ds.val)) == (18, 2)
    np.testing.assert_array_equal(ds.train.images[..., 0], xtr[ds.train.index])
    np.testing.assert_array_equal(ds.val.labels, ytr[ds.val.index])

    ds3 = load(path, channels="3")
    assert ds3.image_shape == (6, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(ds3.test.images[..., c], xte)


def test_keras_npz_with_val_and_colour(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (12, 5, 5, 3), dtype=np.uint8)
    y = np.arange(12) % 2
    path = tmp_path / "c.npz"
    np.savez(path, x_train=x[:8], y_train=y[:8], x_val=x[8:10], y_val=y[8:10], x_test=x[10:], y_test=y[10:])
    ds = load(path)
    assert ds.image_shape == (5, 5, 3)
    np.testing.assert_array_equal(ds.val.images, x[8:10])
    np.testing.assert_array_equal(ds.test.images, x[10:])
    np.testing.assert_array_equal(ds.train.images, x[:8])


# ----------------------------------------------------------------------------- digits

def test_digits_builtin():
    ds = load_dataset("digits")
    assert ds.kind == "digits"
    assert ds.classes == DIGITS
    assert ds.image_shape == (8, 8, 1)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1437, 180, 180)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    allimg = np.concatenate([ds.train.images, ds.val.images, ds.test.images])
    assert allimg.dtype == np.uint8 and allimg.max() == 255 and allimg.min() == 0
    from sklearn.datasets import load_digits
    bunch = load_digits()
    i = int(ds.test.index[0])
    np.testing.assert_array_equal(ds.test.images[0, ..., 0], np.rint(bunch.images[i] * 255 / 16).astype(np.uint8))
    assert ds.test.labels[0] == bunch.target[i]
    # stratified: every digit is in val and test
    assert (np.bincount(ds.test.labels, minlength=10) >= 17).all()


# ----------------------------------------------------------------------------- classes override

def test_classes_override(class_folder):
    ds = load(class_folder, classes=["kitten", "puppy", "fish"])
    assert ds.classes == ["kitten", "puppy", "fish"]
    assert ds.summary()["classes"] == ["kitten", "puppy", "fish"]
    # labels unchanged: 'cat' folder is still label 0
    got = by_name(ds)
    assert all(lab == ["cat", "dog", "eel"].index(n.split("/")[0]) for n, (_, lab, _) in got.items())


def test_classes_override_count_mismatch(class_folder):
    with pytest.raises(UserError, match=r"2 names.*3 classes"):
        load(class_folder, classes=["a", "b"])


# ----------------------------------------------------------------------------- channels

def test_channels_auto_keeps_gray(class_folder):
    assert load(class_folder).image_shape == (12, 12, 1)


def test_channels_3_repeats_gray(class_folder):
    ds = load(class_folder, channels="3")
    assert ds.image_shape == (12, 12, 3)
    for name, (image, _, _) in by_name(ds).items():
        expected = np.asarray(Image.open(class_folder / name))
        for c in range(3):
            np.testing.assert_array_equal(image[..., c], expected)


@pytest.fixture
def rgb_folder(tmp_path):
    root = tmp_path / "rgb"
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    for name, rgb in colours.items():
        for i in range(3):
            write_image(root / name / f"{i}.png", np.broadcast_to(np.array(rgb, np.uint8), (4, 4, 3)).copy())
    return root


def test_channels_auto_colour_stays_3(rgb_folder):
    ds = load(rgb_folder, val_fraction=0, test_fraction=0)
    assert ds.image_shape == (4, 4, 3)
    for name, (image, _, _) in by_name(ds).items():
        expected = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}[name.split("/")[0]]
        assert tuple(image[2, 2]) == expected


def test_channels_1_converts_colour_with_luma(rgb_folder):
    ds = load(rgb_folder, channels="1", val_fraction=0, test_fraction=0)
    assert ds.image_shape == (4, 4, 1)
    luma = {"red": 76, "green": 150, "blue": 29}  # ITU-R 601: .299 R + .587 G + .114 B
    for name, (image, _, _) in by_name(ds).items():
        assert abs(int(image[1, 1, 0]) - luma[name.split("/")[0]]) <= 1


def test_channels_auto_gray_and_colour_mixed_becomes_3(tmp_path):
    root = tmp_path / "mixed"
    write_image(root / "a" / "0.png", np.full((4, 4), 100, np.uint8))
    write_image(root / "a" / "1.png", np.full((4, 4), 100, np.uint8))
    write_image(root / "b" / "0.png", np.broadcast_to(np.array([10, 200, 30], np.uint8), (4, 4, 3)).copy())
    ds = load(root, val_fraction=0, test_fraction=0)
    assert ds.image_shape == (4, 4, 3)
    got = by_name(ds)
    assert tuple(got["a/0.png"][0][0, 0]) == (100, 100, 100)
    assert tuple(got["b/0.png"][0][0, 0]) == (10, 200, 30)


# ----------------------------------------------------------------------------- sizes

def test_image_size_keeps_aspect_and_centre_crops(tmp_path):
    root = tmp_path / "sizes"
    wide = np.zeros((20, 40), np.uint8)
    wide[:, 10:30] = 255  # left and right quarters black, middle white
    tall = np.zeros((40, 20), np.uint8)
    tall[10:30, :] = 255
    write_image(root / "wide" / "0.png", wide)
    write_image(root / "tall" / "0.png", tall)
    write_image(root / "other" / "0.png", np.full((30, 30), 50, np.uint8))
    ds = load(root, image_size=10, val_fraction=0, test_fraction=0)
    assert ds.image_shape == (10, 10, 1)
    got = by_name(ds)
    for name in ("wide/0.png", "tall/0.png"):
        img = got[name][0]
        assert img.min() >= 200, f"{name}: black border survived the centre crop (min {img.min()})"
        assert img.mean() >= 245
    assert (got["other/0.png"][0] == 50).all()


def test_varied_sizes_without_image_size_become_128(tmp_path):
    root = tmp_path / "varied"
    write_image(root / "a" / "0.png", np.full((12, 12), 10, np.uint8))
    write_image(root / "a" / "1.png", np.full((16, 20), 20, np.uint8))
    write_image(root / "b" / "0.png", np.full((9, 31), 30, np.uint8))
    ds = load(root, val_fraction=0, test_fraction=0)
    assert ds.image_shape == (128, 128, 1)
    got = by_name(ds)
    assert (got["a/1.png"][0] == 20).all() and (got["b/0.png"][0] == 30).all()


def test_uniform_size_is_kept(tmp_path):
    root = tmp_path / "uniform"
    written = make_images(root, {"a": 3, "b": 3}, hw=(13, 7))
    ds = load(root, val_fraction=0, test_fraction=0)
    assert ds.image_shape == (13, 7, 1)
    check_against(ds, written, lambda rel: rel.split("/")[0])


# ----------------------------------------------------------------------------- pixel conversions

def _pair(root: Path, special_name: str, write_special, hw, partner_mode="L"):
    """class a holds the special image, class b a plain one of the same size."""
    path = root / "a" / special_name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_special(path)
    partner = np.full(hw, 77, np.uint8) if partner_mode == "L" else np.full((*hw, 3), 77, np.uint8)
    write_image(root / "b" / "p.png", partner)
    return load(root, val_fraction=0, test_fraction=0)


def test_exif_orientation_6_is_applied(tmp_path):
    def write(path):
        im = Image.new("L", (20, 10), 0)  # stored 20 wide, 10 tall
        im.paste(255, (0, 0, 5, 5))  # white block in the stored top-left corner
        exif = im.getexif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        im.save(path, "JPEG", exif=exif.tobytes(), quality=95)

    root = tmp_path / "exif"
    ds = _pair(root, "rot.jpg", write, hw=(20, 10))  # the partner is already upright 20 tall x 10 wide
    assert ds.image_shape == (20, 10, 1)
    img = by_name(ds)["a/rot.jpg"][0][..., 0].astype(int)
    assert img[:5, 5:].mean() > 200, "stored top-left corner must land top-right once upright"
    assert img[:5, :5].mean() < 50
    assert img[5:, :].mean() < 50


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    def write(path):
        Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, "JPEG", quality=95)  # red

    ds = _pair(tmp_path / "cmyk", "c.jpg", write, hw=(8, 8), partner_mode="RGB")
    assert ds.image_shape == (8, 8, 3)
    px = by_name(ds)["a/c.jpg"][0][4, 4].astype(int)
    assert px[0] > 235 and px[1] < 20 and px[2] < 20


def test_palette_png_with_transparency_on_white(tmp_path):
    def write(path):
        im = Image.new("P", (6, 6), 0)
        im.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 black, index 1 blue
        im.paste(1, (0, 0, 3, 6))  # left half blue, right half index 0 (transparent)
        im.save(path, "PNG", transparency=0)

    ds = _pair(tmp_path / "pal", "p.png", write, hw=(6, 6), partner_mode="RGB")
    assert ds.image_shape == (6, 6, 3)
    img = by_name(ds)["a/p.png"][0]
    assert tuple(img[2, 1]) == (0, 0, 255)
    assert tuple(img[2, 4]) == (255, 255, 255), "transparent palette pixels must be white, not black"


def test_rgba_composited_on_white(tmp_path):
    def write(path):
        a = np.zeros((4, 4, 4), np.uint8)
        a[0, 0] = (10, 20, 30, 255)  # opaque
        a[1, 1] = (0, 0, 0, 0)  # fully transparent black
        a[2, 2] = (0, 0, 0, 128)  # half transparent black
        a[3, 3] = (200, 0, 0, 0)  # fully transparent red
        write_image(path, a)

    ds = _pair(tmp_path / "rgba", "r.png", write, hw=(4, 4), partner_mode="RGB")
    img = by_name(ds)["a/r.png"][0]
    assert ds.image_shape == (4, 4, 3)
    assert tuple(img[0, 0]) == (10, 20, 30)
    assert tuple(img[1, 1]) == (255, 255, 255)
    assert tuple(img[3, 3]) == (255, 255, 255)
    assert all(abs(int(v) - 127) <= 2 for v in img[2, 2])


def test_la_composited_on_white_stays_gray(tmp_path):
    def write(path):
        a = np.zeros((4, 4, 2), np.uint8)
        a[..., 0] = 40
        a[..., 1] = 255
        a[0, 0] = (0, 0)  # fully transparent
        Image.fromarray(a, "LA").save(path)

    ds = _pair(tmp_path / "la", "l.png", write, hw=(4, 4))
    assert ds.image_shape == (4, 4, 1)
    img = by_name(ds)["a/l.png"][0][..., 0]
    assert img[0, 0] == 255
    assert img[1, 1] == 40


def test_16bit_gray_png_is_scaled_not_clipped(tmp_path):
    def write(path):
        a = np.array([[65535, 32896, 0, 257]] * 4, dtype=np.uint16)
        im = Image.fromarray(a)
        assert im.mode == "I;16"
        im.save(path, "PNG")

    ds = _pair(tmp_path / "i16", "d.png", write, hw=(4, 4))
    assert ds.image_shape == (4, 4, 1)
    row = by_name(ds)["a/d.png"][0][0, :, 0].tolist()
    assert row == [255, 128, 0, 1]
