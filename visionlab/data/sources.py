"""The one dispatch from what the user typed (a name or a path) to a reader.

``resolve_source`` is cheap: it only looks at names, sizes and mtimes, which is what keys the
decode cache. The reader (``Source.read``) runs only on a cache miss, and imports what its
format needs inside its branch.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError
from . import arrays, downloads
from .archives import ARCHIVE_SUFFIXES, is_archive
from .files import read_archive, read_folder, scan_folder
from .parts import Decoded

FORMATS = "a class folder, a .zip/.tar/.tar.gz archive, idx files, SVHN .mat files or a Keras .npz"


@dataclass(frozen=True)
class Source:
    kind: str  # digits | mnist | fashion-mnist | cifar10 | svhn | folder | archive | idx | svhn-mat | npz
    location: str  # what the user named, resolved: a built-in name or an absolute path
    identity: str  # fingerprint of the input files (paths, sizes, mtimes): part of the cache key
    read: Callable[[str, int | None], Decoded]  # (channels 'auto'|'1'|'3', image_size) -> Decoded


def _stat_fingerprint(paths: list[Path], root: Path | None = None) -> str:
    digest = hashlib.sha256()
    for p in sorted(paths):
        st = p.stat()
        name = p.relative_to(root).as_posix() if root else str(p.resolve())
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def resolve_source(spec: str, home: Path) -> Source:
    """Map a dataset name or path to a Source; an unknown name lists the valid ones."""
    name = spec.strip().lower()
    if name == "digits":
        return Source("digits", "digits", "sklearn-digits", lambda ch, size: arrays.read_digits(ch, size))
    if name in downloads.FILES:
        return _builtin(name, home)
    path = Path(spec).expanduser()
    if not path.exists():
        if os.sep not in spec and "." not in spec:
            raise UserError(f"unknown dataset '{spec}': built-in names are {', '.join(downloads.BUILTIN)}; or give a path to {FORMATS}")
        raise UserError(f"{spec}: no such file or folder; give a built-in name ({', '.join(downloads.BUILTIN)}) or a path to {FORMATS}")
    path = path.resolve()
    if path.is_file():
        return _file_source(path)
    return _folder_source(path)


def _builtin(name: str, home: Path) -> Source:
    def read(channels, size):
        folder = downloads.fetch(name, home)
        if name == "cifar10":
            return arrays.read_cifar10_binary(folder, channels, size)
        if name == "svhn":
            return arrays.read_svhn(sorted(folder.glob("*_32x32.mat")), channels, size)
        decoded = arrays.read_idx_folder(folder, channels, size)
        if name == "fashion-mnist":
            decoded.classes = arrays.FASHION_CLASSES
        return decoded

    folder = home / "downloads" / name
    files = [folder / url.rsplit("/", 1)[1] for url, _ in downloads.FILES[name]]
    present = all(f.exists() for f in files)
    # Missing files: an identity that cannot match a cache entry, so read() downloads them.
    identity = _stat_fingerprint(files) if present else "missing"
    return Source(name, name, identity, read)


def _file_source(path: Path) -> Source:
    lower = path.name.lower()
    fingerprint = _stat_fingerprint([path])
    if is_archive(path):
        return Source("archive", str(path), fingerprint, functools.partial(_call, read_archive, path))
    if lower.endswith(".npz"):
        return Source("npz", str(path), fingerprint, functools.partial(_call, arrays.read_npz, path))
    if lower.endswith(".mat"):
        return _mat_source([path])
    if arrays.IDX_NAME.match(path.name):
        return _folder_source(path.parent)
    raise UserError(f"{path}: unsupported file type; give {FORMATS} (archives: {', '.join(ARCHIVE_SUFFIXES)})")


def _mat_source(paths: list[Path]) -> Source:
    where = str(paths[0]) if len(paths) == 1 else str(paths[0].parent)
    return Source("svhn-mat", where, _stat_fingerprint(paths), lambda ch, size: arrays.read_svhn(paths, ch, size))


def _folder_source(path: Path) -> Source:
    idx = arrays.idx_files(path)
    if idx:
        return Source("idx", str(path), _stat_fingerprint(list(idx.values())),
                      functools.partial(_call, arrays.read_idx_folder, path))
    mats = sorted(p for p in path.glob("*_32x32.mat") if not p.name.startswith("extra"))
    if mats:
        return _mat_source(mats)
    files, _ = scan_folder(path)
    fingerprint = _stat_fingerprint([path / f for f in files], root=path)
    return Source("folder", str(path), fingerprint, functools.partial(_call, read_folder, path))


def _call(reader, path, channels, size):
    return reader(path, channels, size)
