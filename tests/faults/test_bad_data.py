"""Bad input: unreadable files are skipped with a reason (or refused under strict), hostile
archives are refused before anything is read, and malformed array files name themselves."""
from __future__ import annotations

import gzip
import io
import logging
import os
import struct
import subprocess
import sys
import tarfile
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from scipy.io import loadmat, savemat

from conftest import write_image
from visionlab.data import DataConfig, load_dataset
from visionlab.data.archives import list_archive
from visionlab.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def load(source, **kw):
    return load_dataset(DataConfig(source=str(source), **kw))


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A small valid gray PNG whose IHDR is patched to declare width x height (CRC fixed)."""
    data = bytearray(png_bytes(np.full((8, 8), 9, np.uint8)))
    assert data[12:16] == b"IHDR"
    data[16:20] = struct.pack(">I", width)
    data[20:24] = struct.pack(">I", height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


# ----------------------------------------------------------------------------- unreadable files

@pytest.fixture
def dirty_folder(class_folder):
    """class_folder (3 x 10 good 12x12 images) plus every kind of file that must be skipped."""
    rng = np.random.default_rng(1)
    good = png_bytes(rng.integers(0, 256, (12, 12), dtype=np.uint8))
    (class_folder / "cat" / "truncated.png").write_bytes(good[: len(good) // 2])
    corrupt = bytearray(good)
    idat = corrupt.index(b"IDAT")
    corrupt[idat + 4: idat + 40] = b"\xff" * 36  # garbage compressed data
    (class_folder / "cat" / "corrupt.png").write_bytes(bytes(corrupt))
    (class_folder / "dog" / "empty.png").write_bytes(b"")
    (class_folder / "dog" / "notes.jpg").write_text("this is not a jpeg\n")
    (class_folder / "eel" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1\x00")
    (class_folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1\x00")
    (class_folder / "eel" / "README.txt").write_text("eels\n")
    return class_folder


EXPECTED_REASONS = {
    "cat/truncated.png": "corrupt or truncated",
    "cat/corrupt.png": "corrupt or truncated",
    "dog/empty.png": "empty file",
    "dog/notes.jpg": "not an image",
    "eel/.DS_Store": "hidden",
    ".DS_Store": "hidden",
    "eel/README.txt": "not an image file",
}


def test_unreadable_files_are_skipped_with_reasons(dirty_folder, caplog):
    with caplog.at_level(logging.WARNING):
        ds = load(dirty_folder)
    reasons = {s["path"]: s["reason"] for s in ds.skipped}
    assert sorted(reasons) == sorted(EXPECTED_REASONS)
    for path, words in EXPECTED_REASONS.items():
        assert words in reasons[path], (path, reasons[path])
    # the 30 good images all load, with the right labels
    assert len(ds.train) + len(ds.val) + len(ds.test) == 30
    assert ds.classes == ["cat", "dog", "eel"]
    assert ds.summary()["skipped"] == ds.skipped
    names = [n for s in ("train", "val", "test") for n in ds.names(s)]
    assert not any(n.endswith(("truncated.png", "corrupt.png", "empty.png", "notes.jpg")) for n in names)


def test_strict_turns_skips_into_an_error(dirty_folder):
    with pytest.raises(UserError, match="strict") as info:
        load(dirty_folder, strict=True)
    message = str(info.value)
    assert "7 file(s)" in message
    assert str(dirty_folder) in message
    assert sum(path in message for path in EXPECTED_REASONS) >= 3  # the first few are named


def test_strict_clean_folder_loads(class_folder):
    ds = load(class_folder, strict=True)
    assert ds.skipped == [] and len(ds.train) == 24


@pytest.mark.parametrize("side", [20000, 10000], ids=["over-2x-limit", "over-limit"])
def test_decompression_bomb_is_refused_undecoded(class_folder, monkeypatch, side):
    (class_folder / "cat" / "bomb.png").write_bytes(bomb_png(side, side))
    loaded_sizes = []
    real_load = ImageFile.ImageFile.load

    def spy(self):
        loaded_sizes.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    ds = load(class_folder)
    [entry] = [s for s in ds.skipped if s["path"] == "cat/bomb.png"]
    assert "decompression bomb" in entry["reason"]
    assert (side, side) not in loaded_sizes, "the bomb's pixels were decoded"
    assert len(ds.train) + len(ds.val) + len(ds.test) == 30


def test_empty_class_folder_warns_and_is_ignored(class_folder, caplog, monkeypatch):
    # another test's CLI run may have set propagate=False on the package logger
    monkeypatch.setattr(logging.getLogger("visionlab"), "propagate", True)
    (class_folder / "zebra").mkdir()
    with caplog.at_level(logging.WARNING):
        ds = load(class_folder)
    assert ds.classes == ["cat", "dog", "eel"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("zebra" in m and "no images" in m for m in warnings), warnings


def test_one_class_only_is_an_error(tmp_path):
    write_image(tmp_path / "only" / "cat" / "0.png", np.zeros((4, 4), np.uint8))
    write_image(tmp_path / "only" / "cat" / "1.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError, match="at least two"):
        load(tmp_path / "only")


def test_one_class_only_in_idx_is_an_error(tmp_path):
    folder = tmp_path / "oneidx"
    folder.mkdir()
    _idx(folder / "train-images-idx3-ubyte", np.zeros((5, 4, 4), np.uint8))
    _idx(folder / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(UserError, match="at least two"):
        load(folder)


def test_no_images_is_an_error(tmp_path):
    root = tmp_path / "noimg"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "README.txt").write_text("x")
    (root / "dog").mkdir()
    with pytest.raises(UserError, match="no images"):
        load(root)


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError):
        load(tmp_path / "empty")


def test_only_unreadable_images_is_an_error(tmp_path):
    root = tmp_path / "allbad"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        (root / c / "x.png").write_text("nope")
    with pytest.raises(UserError, match="could be read"):
        load(root)


def test_unknown_source_name_lists_builtins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="digits") as info:
        load("imagenet-mini")
    assert "unknown dataset 'imagenet-mini'" in str(info.value)
    assert "mnist" in str(info.value)


def test_nonexistent_path(tmp_path):
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(UserError, match="no such file or folder") as info:
        load(missing)
    assert str(missing) in str(info.value)


def test_unsupported_file_type(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="unsupported file type") as info:
        load(csv)
    assert "data.csv" in str(info.value)


@pytest.mark.parametrize("kw,match", [
    ({"channels": "2"}, "channels"),
    ({"image_size": 2}, "image_size"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "below 1"),
    ({"test_fraction": -0.1}, "test_fraction"),
])
def test_bad_config_values(class_folder, kw, match):
    with pytest.raises(UserError, match=match):
        load(class_folder, **kw)


# ----------------------------------------------------------------------------- hostile archives

def _tar_with(path: Path, members: list[tarfile.TarInfo], payload=b"abc"):
    with tarfile.open(path, "w") as tf:
        good = png_bytes(np.zeros((4, 4), np.uint8))
        for cls in ("cat", "dog"):
            info = tarfile.TarInfo(f"{cls}/ok.png")
            info.size = len(good)
            tf.addfile(info, io.BytesIO(good))
        for m in members:
            if m.isfile():
                m.size = len(payload)
                tf.addfile(m, io.BytesIO(payload))
            else:
                tf.addfile(m)
    return path


def _symlink(name, target, hard=False):
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Work from a nested folder so '..' targets stay inside tmp_path and can be checked."""
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    return work


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "vlhome" not in p.parts}


@pytest.mark.parametrize("member", [
    "dotdot", "deep_dotdot", "absolute", "symlink_out", "symlink_abs", "hardlink_out",
])
def test_hostile_tar_is_refused(tmp_path, sandbox, member):
    abs_target = tmp_path / "abs_evil.png"
    members = {
        "dotdot": lambda: [tarfile.TarInfo("../evil.png")],
        "deep_dotdot": lambda: [tarfile.TarInfo("cat/../../evil.png")],
        "absolute": lambda: [tarfile.TarInfo(str(abs_target))],
        "symlink_out": lambda: [_symlink("cat/link.png", "../../etc/passwd")],
        "symlink_abs": lambda: [_symlink("cat/link.png", "/etc/passwd")],
        "hardlink_out": lambda: [_symlink("cat/hard.png", "../../etc/passwd", hard=True)],
    }[member]()
    archive = _tar_with(sandbox / "evil.tar", members)
    before = _snapshot(tmp_path)
    with pytest.raises(UserError, match="refused") as info:
        load(archive)
    assert str(archive) in str(info.value)
    assert _snapshot(tmp_path) == before, "something was written while refusing the archive"
    assert not (sandbox.parent / "evil.png").exists() and not abs_target.exists()
    home = Path(os.environ["VISIONLAB_HOME"])
    assert not list(home.rglob("*.npy")), "a refused archive must not leave a cache entry"


def test_tar_symlink_inside_archive_is_not_followed_but_allowed(tmp_path):
    archive = _tar_with(tmp_path / "ok.tar", [_symlink("cat/link.png", "ok.png")])
    ds = load(archive, val_fraction=0, test_fraction=0)
    assert sorted(ds.names("train")) == ["cat/ok.png", "dog/ok.png"]


@pytest.mark.parametrize("name", ["../x.png", "/abs/x.png", "cat/../../x.png"])
def test_hostile_zip_is_refused(tmp_path, sandbox, name):
    archive = sandbox / "evil.zip"
    good = png_bytes(np.zeros((4, 4), np.uint8))
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cat/ok.png", good)
        zf.writestr("dog/ok.png", good)
        zf.writestr(zipfile.ZipInfo(name), good)
    before = _snapshot(tmp_path)
    with pytest.raises(UserError, match="refused"):
        load(archive)
    assert _snapshot(tmp_path) == before
    assert not (sandbox.parent / "x.png").exists()


def test_zip_bomb_is_refused(tmp_path, class_folder):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for p in sorted(class_folder.rglob("*.png")):
            zf.write(p, p.relative_to(class_folder).as_posix())
        zf.writestr("cat/zeros.png", b"\0" * 50_000_000)
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("cat/zeros.png")
        assert info.file_size / info.compress_size > 1000  # precondition: it is a bomb by ratio
    with pytest.raises(UserError, match="refused") as err:
        load(archive)
    assert "zip bomb" in str(err.value) and "cat/zeros.png" in str(err.value)


@pytest.fixture(params=["zip", "tar", "tar.gz"])
def five_member_archive(request, tmp_path):
    path = tmp_path / f"five.{request.param}"
    names = [f"c{i % 2}/{i}.png" for i in range(5)]
    data = png_bytes(np.zeros((4, 4), np.uint8))
    if request.param == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            for n in names:
                zf.writestr(n, data)
    else:
        with tarfile.open(path, "w:gz" if request.param == "tar.gz" else "w") as tf:
            for n in names:
                info = tarfile.TarInfo(n)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path, names


def test_list_archive_caps(five_member_archive):
    path, names = five_member_archive
    listing = list_archive(path)
    assert sorted(getattr(listing, "files", listing)) == sorted(names)
    with pytest.raises(UserError, match="refused"):
        list_archive(path, max_members=3)
    with pytest.raises(UserError, match="refused"):
        list_archive(path, max_bytes=10)
    assert len(getattr(list_archive(path, max_members=5), "files", None) or list_archive(path, max_members=5)) == 5


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz", ".tar"])
def test_damaged_archive_is_a_user_error(tmp_path, class_folder, suffix):
    archive = tmp_path / f"whole{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for p in sorted(class_folder.rglob("*.png")):
                zf.write(p, p.relative_to(class_folder).as_posix())
    else:
        with tarfile.open(archive, "w:gz" if suffix == ".tar.gz" else "w") as tf:
            tf.add(class_folder, arcname="ds")
    raw = archive.read_bytes()
    broken = tmp_path / f"broken{suffix}"
    broken.write_bytes(raw[: len(raw) // 3] if suffix != ".tar" else b"garbage" * 10)
    with pytest.raises(UserError) as info:
        load(broken)
    assert str(broken) in str(info.value)


# ----------------------------------------------------------------------------- idx

def _idx(path: Path, array: np.ndarray, magic: int | None = None, gz: bool = False, cut: int = 0) -> Path:
    magic = 0x00000800 | array.ndim if magic is None else magic
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    raw = raw[: len(raw) - cut]
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def _bad_idx_folder(folder: Path, problem: str, gz: bool) -> Path:
    folder.mkdir(parents=True)
    sfx = ".gz" if gz else ""
    images = np.zeros((10, 6, 6), np.uint8)
    labels = np.arange(10) % 2
    bad = folder / f"train-images-idx3-ubyte{sfx}"
    _idx(bad, images, magic=0xDEADBEEF if problem == "magic" else None, gz=gz, cut=7 if problem == "size" else 0)
    _idx(folder / f"train-labels-idx1-ubyte{sfx}", labels, gz=gz)
    return bad


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("problem,match", [("magic", "magic"), ("size", "size mismatch")])
def test_bad_idx_names_the_file(tmp_path, problem, match, gz):
    bad = _bad_idx_folder(tmp_path / "idx", problem, gz)
    with pytest.raises(UserError, match=match) as info:
        load(bad.parent)
    assert isinstance(info.value, ValueError)
    assert str(bad) in str(info.value)


def test_idx_images_and_labels_count_mismatch(tmp_path):
    folder = tmp_path / "idxmm"
    folder.mkdir()
    _idx(folder / "train-images-idx3-ubyte", np.zeros((10, 4, 4), np.uint8))
    _idx(folder / "train-labels-idx1-ubyte", np.arange(9) % 2)
    with pytest.raises(UserError, match="do not match"):
        load(folder)


def test_idx_images_without_labels(tmp_path):
    folder = tmp_path / "idxnolab"
    folder.mkdir()
    _idx(folder / "train-images-idx3-ubyte", np.zeros((10, 4, 4), np.uint8))
    with pytest.raises(UserError, match="labels"):
        load(folder)


def test_bad_idx_checks_survive_python_O(tmp_path):
    magic = _bad_idx_folder(tmp_path / "m", "magic", gz=False)
    size = _bad_idx_folder(tmp_path / "s", "size", gz=True)
    script = textwrap.dedent(f"""
        import sys
        from visionlab.data import DataConfig, load_dataset
        from visionlab.errors import UserError
        if __debug__:
            print("ASSERTS-ON")
            sys.exit(3)
        for folder in ({str(magic.parent)!r}, {str(size.parent)!r}):
            try:
                load_dataset(DataConfig(source=folder))
            except UserError as exc:
                print("USERERROR", exc)
            else:
                print("LOADED", folder)
    """)
    out = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=REPO, env={**os.environ})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stdout
    assert lines[0].startswith("USERERROR") and "magic" in lines[0] and str(magic) in lines[0]
    assert lines[1].startswith("USERERROR") and "size mismatch" in lines[1] and str(size) in lines[1]


# ----------------------------------------------------------------------------- .mat and .npz

def test_mat_with_wrong_keys_names_the_file(tmp_path):
    path = tmp_path / "train_32x32.mat"
    savemat(path, {"images": np.zeros((32, 32, 3, 4), np.uint8), "labels": np.ones((4, 1))})
    with pytest.raises(ValueError, match="expected keys 'X' and 'y'") as info:
        load(path)
    assert isinstance(info.value, UserError)
    assert str(path) in str(info.value)
    assert "images" in str(info.value)


def test_mat_with_wrong_x_shape(tmp_path):
    path = tmp_path / "train_32x32.mat"
    savemat(path, {"X": np.zeros((32, 32, 4), np.uint8), "y": np.ones((4, 1))})
    with pytest.raises(UserError, match="X has shape") as info:
        load(path)
    assert str(path) in str(info.value)


def _v5_mat_bytes() -> bytes:
    buf = io.BytesIO()
    savemat(buf, {"X": np.arange(32 * 32 * 3 * 20, dtype=np.uint32).astype(np.uint8).reshape(32, 32, 3, 20),
                  "y": np.ones((20, 1))})
    return buf.getvalue()


@pytest.mark.parametrize("damage", ["text", "tiny", "zeros", "header_only", "half"])
def test_damaged_mat_is_a_user_error(tmp_path, damage):
    """A partial download or a wrong file renamed .mat: one UserError naming it, not a traceback."""
    raw = _v5_mat_bytes()
    data = {"text": b"definitely not matlab" * 3, "tiny": b"MATLAB", "zeros": b"\0" * 200,
            "header_only": raw[:100], "half": raw[: len(raw) // 2]}[damage]
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(data)
    with pytest.raises(UserError) as info:
        load(path)
    assert str(path) in str(info.value)


def _matlab_v73(path: Path) -> Path:
    """The start of a MATLAB v7.3 file: a 128-byte text header (version 0x0200, 'IM'),
    padded to 512 bytes, then the HDF5 superblock signature."""
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    assert len(header) == 128
    path.write_bytes(header.ljust(512, b"\x00") + b"\x89HDF\r\n\x1a\n" + b"\x00" * 512)
    return path


def test_matlab_v73_file_is_explained(tmp_path):
    path = _matlab_v73(tmp_path / "train_32x32.mat")
    with pytest.raises(NotImplementedError):  # precondition: scipy sees a v7.3 file
        loadmat(path)
    with pytest.raises(UserError, match="v7.3") as info:
        load(path)
    assert str(path) in str(info.value)


def test_npz_with_object_arrays_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    x = np.empty(3, dtype=object)
    x[:] = [Evil(), Evil(), Evil()]
    path = tmp_path / "evil.npz"
    np.savez(path, x_train=x, y_train=np.arange(3))
    with pytest.raises(UserError) as info:
        load(path)
    assert str(path) in str(info.value)
    assert not marker.exists(), "the npz was unpickled"


def test_npz_missing_keys(tmp_path):
    path = tmp_path / "k.npz"
    np.savez(path, images=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(UserError, match="x_train") as info:
        load(path)
    assert str(path) in str(info.value)


def test_npz_bad_labels(tmp_path):
    path = tmp_path / "neg.npz"
    np.savez(path, x_train=np.zeros((3, 4, 4), np.uint8), y_train=np.array([0, -1, 1]))
    with pytest.raises(UserError, match="non-negative"):
        load(path)
