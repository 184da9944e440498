"""Reading a dataset's layout from its file list: class folders, optionally under split folders.

Works on relative POSIX paths, so a folder on disk and the members of an archive go through
the same rules:

    root/<class>/**/<image>                 one set, split 80/10/10 later
    root/<split>/<class>/**/<image>         split in {train, training, val, valid,
                                            validation, test, testing}

Single wrapping folders (``mnist/`` in ``mnist/training/3/x.png``) are looked through.
Hidden files (``.DS_Store``), ``__MACOSX`` resource forks, non-image files and files outside
any class folder are skipped and listed with the reason. Classes are sorted by name, as
torchvision's ImageFolder sorts them, so indices agree with a notebook's.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..errors import UserError
from .decode import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

SPLIT_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}


@dataclass
class Layout:
    classes: list[str]
    items: dict[str, list[tuple[str, int]]]  # split ('train'/'val'/'test' or 'all') -> [(path, label)]
    skipped: list[dict] = field(default_factory=list)  # [{"path", "reason"}]


def is_junk(parts) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _strip_wrappers(files: list[tuple[str, ...]], dirs: set[tuple[str, ...]]) -> int:
    """How many leading single-folder levels wrap everything (e.g. 'mnist/')."""
    depth = 0
    while files and all(len(f) > depth + 2 for f in files):  # stays <class>/<image> after
        heads = {f[depth] for f in files} | {d[depth] for d in dirs if len(d) > depth}
        if len(heads) != 1 or next(iter(heads)).lower() in SPLIT_NAMES:
            break
        depth += 1
    return depth


def plan_layout(file_paths: list[str], dir_paths: list[str], where: str) -> Layout:
    """Decide splits, classes and labels from the relative paths of files and folders."""
    skipped: list[dict] = []
    files: list[tuple[str, ...]] = []
    for path in file_paths:  # string operations, not pathlib: this runs once per file
        parts = tuple(path.split("/"))
        suffix = os.path.splitext(path)[1]
        if is_junk(parts):
            skipped.append({"path": path, "reason": "hidden or system file"})
        elif suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append({"path": path, "reason": f"not an image file (extension '{suffix}')"})
        else:
            files.append(parts)
    dirs = {tuple(d.strip("/").split("/")) for d in dir_paths if d.strip("/") not in ("", ".")}
    dirs = {d for d in dirs if not is_junk(d)}
    depth = _strip_wrappers(files, dirs)
    rel = [f[depth:] for f in files]
    rel_dirs = {d[depth:] for d in dirs if len(d) > depth}
    split_layout = any(f[0].lower() in SPLIT_NAMES and len(f) >= 3 for f in rel)

    items: dict[str, list[tuple[str, str]]] = {}
    class_dirs: dict[str, set[str]] = {}
    for full, r in zip(files, rel):
        path = "/".join(full)
        if split_layout:
            if r[0].lower() not in SPLIT_NAMES or len(r) < 3:
                skipped.append({"path": path, "reason": "not inside <split>/<class>/ (split layout)"})
                continue
            split, cls = SPLIT_NAMES[r[0].lower()], r[1]
        else:
            if len(r) < 2:
                skipped.append({"path": path, "reason": "not inside a class folder"})
                continue
            split, cls = "all", r[0]
        items.setdefault(split, []).append((path, cls))
    for d in rel_dirs:  # every class folder, to warn about the empty ones
        if split_layout and len(d) >= 2 and d[0].lower() in SPLIT_NAMES:
            class_dirs.setdefault(SPLIT_NAMES[d[0].lower()], set()).add(d[1])
        elif not split_layout and len(d) >= 1:
            class_dirs.setdefault("all", set()).add(d[0])
    return _label(items, class_dirs, skipped, where)


def _label(items, class_dirs, skipped, where) -> Layout:
    used = {cls for pairs in items.values() for _, cls in pairs}
    for split, names in sorted(class_dirs.items()):
        for name in sorted(names - {cls for _, cls in items.get(split, [])}):
            log.warning("%s: class folder '%s' (%s) holds no images; ignored", where, name, split)
    if not items:
        raise UserError(f"{where}: no images found; expected class folders (<class>/<image>) or <split>/<class>/<image>")
    if len(used) < 2:
        raise UserError(
            f"{where}: found {len(used)} class ({', '.join(sorted(used))}); a classification dataset needs "
            "at least two class folders"
        )
    classes = sorted(used)
    index = {c: i for i, c in enumerate(classes)}
    # sorted by path: the seeded split must not depend on the order a file system or an
    # archive happens to list files in (ImageFolder sorts the same way)
    labelled = {split: sorted((p, index[c]) for p, c in pairs) for split, pairs in items.items()}
    if "train" not in labelled and "all" not in labelled:
        raise UserError(f"{where}: split folders found ({', '.join(sorted(labelled))}) but no train/ or training/")
    return Layout(classes, labelled, skipped)
