"""Decoding a dataset of image files (a folder on disk or an archive) into Parts.

One pass in the common case: the first readable image fixes the reference size and channel
count, and every image of that size decodes while the source is still being read. Only when sizes turn out to
differ (a folder of photos) is there a second pass, resizing everything to ``image_size``
(default 128: a size a 2-core CPU can train on; EDA recommends one from the real sizes).
"""
from __future__ import annotations

import itertools
import logging
import os
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import UserError
from . import archives
from .decode import IMAGE_EXTENSIONS, Target, decode_stream, probe_image
from .layout import Layout, is_junk, plan_layout
from .parts import Decoded, Part

log = logging.getLogger(__name__)
DEFAULT_VARIED_SIZE = 128  # square side for datasets whose images differ in size
MAX_NATIVE_SIDE = 512  # uniform images larger than this are resized to DEFAULT_VARIED_SIZE too


def scan_folder(root: Path) -> tuple[list[str], list[str]]:
    """Relative POSIX paths of the files and folders under root (links are not followed)."""
    files, dirs = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        dirs.extend(prefix + d for d in dirnames)
        files.extend(prefix + f for f in filenames)
    return files, dirs


def read_folder(root: Path, channels: str, image_size: int | None) -> Decoded:
    files, dirs = scan_folder(root)

    def entries():  # workers open the files themselves: only paths travel
        yield from ((d, None) for d in dirs)
        yield from ((f, str(root / f)) for f in files)

    return _decode_entries(entries, channels, image_size, str(root), parallel=len(files) > 1000)


def read_archive(path: Path, channels: str, image_size: int | None) -> Decoded:
    return _decode_entries(lambda: archives.iter_archive(path), channels, image_size, str(path),
                           parallel=path.stat().st_size > 1_000_000)


def _decodable(name: str) -> bool:
    # plain string operations: this runs once per file on the reading thread, pathlib costs 10x
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not is_junk(name.split("/"))


def _decode_entries(entries, channels: str, image_size: int | None, where: str, parallel: bool) -> Decoded:
    """Decode every image while the source is still being read, then lay out classes and splits.

    entries() yields (name, bytes | path) for files and (name, None) for folders, afresh at
    each call. Decoding starts with the first image, so reading an archive (one core) and
    decoding it (the others) overlap; the layout is decided from the names at the end.
    """
    files, dirs = [], []

    def images():
        for name, payload in entries():
            if payload is None:
                dirs.append(name)
                continue
            files.append(name)
            if _decodable(name):
                yield name, payload

    stream = images()
    head = list(itertools.islice(stream, 16))
    probes = [p for p in (probe_image(_payload_bytes(data)) for _, data in head) if p]
    if head and not probes:
        raise UserError(f"{where}: none of the first {len(head)} images could be read; is this an image dataset?")
    ref_hw, ref_gray = probes[0] if probes else ((0, 0), True)
    n_channels = 1 if channels == "1" or (channels == "auto" and ref_gray) else 3
    mixed = channels == "auto" and n_channels == 1
    results = None
    if image_size is None and max(ref_hw) <= MAX_NATIVE_SIDE:
        results = _decode_all(itertools.chain(head, stream), Target(n_channels, ref_hw, None, mixed), parallel)
        if results is None:
            log.info("%s: images differ in size; resizing all to %dx%d (set image_size to choose)",
                     where, DEFAULT_VARIED_SIZE, DEFAULT_VARIED_SIZE)
    if results is None:
        if image_size is None and max(ref_hw) <= MAX_NATIVE_SIDE:  # first pass found other sizes: read again
            files.clear()
            dirs.clear()
            stream = images()
        else:
            stream = itertools.chain(head, stream)
        results = _decode_all(stream, Target(n_channels, None, image_size or DEFAULT_VARIED_SIZE, mixed), parallel)
    layout = plan_layout(files, dirs, where)
    return _assemble(layout, results, where)


def _payload_bytes(payload: str | bytes) -> bytes:
    return payload if isinstance(payload, bytes) else Path(payload).read_bytes()


def _decode_all(stream, target: Target, parallel: bool) -> dict | None:
    """{name: (array | None, original (H, W), error)}; None when an image of another size appears."""
    results: dict[str, tuple] = {}
    varied = []

    def sink(name, array, hw, error):
        if array is None and not error:
            varied.append(name)
        results[name] = (array, hw, error)

    with tqdm(desc="decode", unit="img", disable=not sys.stderr.isatty(), leave=False) as bar:
        decode_stream(stream, target, sink, bar.update, parallel)
    return None if varied else results


def _assemble(layout: Layout, results: dict, where: str) -> Decoded:
    """Stack the decoded arrays per split in layout order; record the failures as skipped."""
    skipped = list(layout.skipped)
    parts = {}
    for split, pairs in layout.items.items():
        arrays, labels, names, sizes = [], [], [], []
        for name, label in pairs:
            array, hw, error = results[name]
            if error:
                skipped.append({"path": name, "reason": error})
                continue
            arrays.append(array)
            labels.append(label)
            names.append(name)
            sizes.append(hw)
        if arrays:
            channels = max(a.shape[2] for a in arrays)
            if channels == 3 and any(a.shape[2] == 1 for a in arrays):  # colour among gray: all to 3
                log.info("%s: colour images among grayscale ones: keeping 3 channels", where)
                arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
            parts[split] = Part(np.stack(arrays), np.array(labels, np.int64), names, np.array(sizes, np.int32))
    if not parts:
        raise UserError(f"{where}: no image could be decoded ({len(skipped)} skipped); see the reasons with --json")
    shapes = {p.images.shape[3] for p in parts.values()}
    if len(shapes) > 1:  # one split gray, another with colour
        parts = {s: Part(np.repeat(p.images, 3, axis=3) if p.images.shape[3] == 1 else p.images, p.labels, p.names,
                         p.sizes) for s, p in parts.items()}
    return Decoded(layout.classes, parts, skipped)
