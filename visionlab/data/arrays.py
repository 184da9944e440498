"""Formats that ship images as arrays: idx (MNIST, Fashion-MNIST), SVHN .mat, Keras .npz,
CIFAR-10's binary batches and scikit-learn's digits.

Every check is an explicit ``raise`` (never ``assert``, which ``python -O`` strips) of a
``UserError`` (a ``ValueError``) naming the file.
"""
from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import numpy as np

from ..errors import UserError
from .parts import Decoded, array_part

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# md5 of Fashion-MNIST's label files, gzipped (as published) and plain: MNIST's idx files
# have the same names, so a label file with these contents says "this is Fashion-MNIST".
FASHION_LABEL_MD5 = {
    "25c81989df183df01b3e8a0aad5dffbe", "bb300cfdad3c16e7a12a480ee83cd310",
    "9018921c3c673c538a1fc5bad174d6f9", "15d484375f8d13e6eb1aabb0c3f46965",
}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def read_idx(path: Path) -> np.ndarray:
    """Parse one idx file (optionally gzipped): magic 0x0000 TT DD, then DD big-endian sizes."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UserError(f"{path}: cannot read idx file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or not 1 <= raw[3] <= 4:
        raise UserError(f"{path}: bad idx magic number {raw[:4].hex() or '(empty)'}; expected 0000 08 01 or 0000 08 03")
    ndim, header = raw[3], 4 + 4 * raw[3]
    if len(raw) < header:
        raise UserError(f"{path}: idx header truncated ({len(raw)} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise UserError(f"{path}: idx size mismatch: header says {dims} ({expected:,} bytes), file holds {len(raw) - header:,}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def idx_files(folder: Path) -> dict[tuple[str, str], Path]:
    """{('train'|'t10k', 'images'|'labels'): path} for the idx files in a folder."""
    found = {}
    for p in sorted(folder.iterdir()):
        m = IDX_NAME.match(p.name)
        if m and p.is_file():
            found.setdefault((m.group(1), m.group(2)), p)
    return found


def is_fashion(folder: Path, labels: Path) -> bool:
    # the folder or its two parents name it (FashionMNIST/raw, fashion-mnist/, data/fashion/...)
    if any("fashion" in part.lower() for part in folder.resolve().parts[-3:]):
        return True
    return hashlib.md5(labels.read_bytes()).hexdigest() in FASHION_LABEL_MD5


def read_idx_folder(folder: Path, channels: str, image_size: int | None) -> Decoded:
    files = idx_files(folder)
    parts = {}
    for prefix, split in (("train", "train"), ("t10k", "test")):
        if (prefix, "images") not in files:
            continue
        if (prefix, "labels") not in files:
            raise UserError(f"{files[prefix, 'images']}: no matching {prefix}-labels-idx1-ubyte file beside it")
        images, labels = read_idx(files[prefix, "images"]), read_idx(files[prefix, "labels"])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(
                f"{files[prefix, 'images']}: {images.shape} images do not match {labels.shape} labels in "
                f"{files[prefix, 'labels'].name}"
            )
        parts[split] = array_part(images, labels, files[prefix, "images"].name, channels, image_size)
    if "train" not in parts:
        raise UserError(f"{folder}: no train-images-idx3-ubyte[.gz] with its labels file")
    fashion = is_fashion(folder, files["train", "labels"])
    n_classes = int(max(p.labels.max() for p in parts.values())) + 1
    classes = FASHION_CLASSES if fashion and n_classes == 10 else [str(i) for i in range(n_classes)]
    return Decoded(classes, parts)


def read_svhn(paths: list[Path], channels: str, image_size: int | None) -> Decoded:
    """SVHN format 2: X is (32, 32, 3, N) uint8, y is (N, 1) with label 10 meaning digit 0."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    parts = {}
    for path in paths:
        split = "test" if path.name.startswith("test") else "extra" if path.name.startswith("extra") else "train"
        try:
            mat = loadmat(path)
        except NotImplementedError:
            raise UserError(f"{path}: MATLAB v7.3 (HDF5) file; SVHN format 2 is v5 .mat, re-save with -v7") from None
        except (ValueError, OSError, TypeError, IndexError, MatReadError) as exc:
            raise UserError(f"{path}: not a readable .mat file ({exc or type(exc).__name__}); is the download complete?") from None
        if "X" not in mat or "y" not in mat:
            raise UserError(f"{path}: expected keys 'X' and 'y' (SVHN format 2), found {sorted(k for k in mat if not k.startswith('__'))}")
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
        if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
            raise UserError(f"{path}: X has shape {x.shape}, y has {len(y)} labels; expected X (32, 32, 3, N) with N labels")
        labels = np.where(y == 10, 0, y).astype(np.int64)
        if labels.min() < 0 or labels.max() > 9:
            raise UserError(f"{path}: labels outside 1..10 ({labels.min()}..{labels.max()})")
        parts[split] = array_part(np.ascontiguousarray(x.transpose(3, 0, 1, 2)), labels, path.name, channels, image_size)
    if "train" not in parts:
        raise UserError(f"{paths[0].parent}: no train_32x32.mat")
    parts.pop("extra", None)  # 531k easier images: opt-in by passing the file alone
    return Decoded([str(i) for i in range(10)], parts)


def read_npz(path: Path, channels: str, image_size: int | None) -> Decoded:
    """Keras-style archive: x_train, y_train, x_test, y_test (x_val, y_val optional)."""
    try:
        with np.load(path, allow_pickle=False) as z:  # never unpickle object arrays
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise UserError(f"{path}: not a readable .npz ({exc})") from None
    if "x_train" not in arrays or "y_train" not in arrays:
        raise UserError(f"{path}: expected keys x_train, y_train (and x_test, y_test), found {sorted(arrays)}")
    parts = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" not in arrays:
            continue
        x, y = arrays[f"x_{split}"], arrays.get(f"y_{split}")
        if y is None:
            raise UserError(f"{path}: x_{split} has no y_{split}")
        y = np.asarray(y).reshape(-1)
        if x.ndim not in (3, 4) or len(x) != len(y) or (x.ndim == 4 and x.shape[3] not in (1, 3)):
            raise UserError(f"{path}: x_{split} {x.shape} and y_{split} {y.shape} are not (N, H, W[, 1|3]) and (N,)")
        if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise UserError(f"{path}: y_{split} must hold non-negative integer class indices")
        parts[split] = array_part(x, y, f"{path.name}:x_{split}", channels, image_size)
    n_classes = int(max(p.labels.max() for p in parts.values() if len(p.labels))) + 1
    return Decoded([str(i) for i in range(n_classes)], parts)


def read_cifar10_binary(folder: Path, channels: str, image_size: int | None) -> Decoded:
    """CIFAR-10 binary version: records of 1 label byte + 3072 bytes (R, G, B planes of 32x32)."""
    parts = {}
    for split, names in (("train", [f"data_batch_{i}.bin" for i in range(1, 6)]), ("test", ["test_batch.bin"])):
        raw = b"".join((folder / n).read_bytes() for n in names)
        if len(raw) % 3073:
            raise UserError(f"{folder}: CIFAR-10 batch sizes are not a multiple of 3073-byte records")
        records = np.frombuffer(raw, np.uint8).reshape(-1, 3073)
        images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        parts[split] = array_part(images, records[:, 0].astype(np.int64), names[0], channels, image_size)
    return Decoded(CIFAR10_CLASSES, parts)


def read_digits(channels: str, image_size: int | None) -> Decoded:
    """scikit-learn's bundled 8x8 digits: 1,797 images, values 0..16 scaled to 0..255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    part = array_part(images, bunch.target, "digits", channels, image_size)
    return Decoded([str(i) for i in range(10)], {"all": part})
