"""Where the image/mask pairs of a segmentation dataset are: one ``find_pairs`` over three layouts.

    folders      root/images/<stem>.* + root/masks/<stem>.png (one pool, split by seed), or
                 root/<split>/images + root/<split>/masks; masks hold train ids (or the raw ids
                 of root/classes.yaml, which is then the class map)
    cityscapes   root/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png with
                 root/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png
    idd          root/leftImg8bit/<split>/<seq>/<frame>_leftImg8bit.{png,jpg} with
                 root/gtFine/<split>/<seq>/<frame>_gtFine_labelids.png (IDD ids), or, when a
                 dataset has none of those, ..._gtFine_labellevel3Ids.png (level-3 ids): the
                 names the IDD toolkit's createLabels.py writes for --id-type id / level3Id

Only the layout's train and val splits are read: the public test splits ship no labels. Every
image must have its mask and every mask its image; a missing partner is an error naming it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..data.decode import IMAGE_EXTENSIONS
from ..errors import UserError

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "folders", "cityscapes", "idd")
SPLITS = ("train", "val")
IMAGE_SUFFIX = "_leftImg8bit"
CITYSCAPES_MASK = "_gtFine_labelIds.png"
IDD_MASKS = {"idd-id": "_gtFine_labelids.png", "idd-level3": "_gtFine_labellevel3Ids.png"}  # in preference order
CLASSES_FILE = "classes.yaml"  # a folders dataset's own class map, used when no --classes is given


@dataclass
class Layout:
    """What ``find_pairs`` found: the pairs by split, and what the mask values mean."""

    name: str  # folders | cityscapes | idd
    id_kind: str  # cityscapes | idd-id | idd-level3 | train-ids (see classes.ID_KINDS)
    pairs: dict[str, list[tuple[Path, Path]]] = field(default_factory=dict)  # split -> [(image, mask)]
    class_file: Path | None = None  # folders: root/classes.yaml when present

    @property
    def files(self) -> list[Path]:
        return [p for pairs in self.pairs.values() for pair in pairs for p in pair]


def find_pairs(root: Path, layout: str = "auto") -> Layout:
    """The one dispatch: detect (or take) the layout of root and list its image/mask pairs."""
    root = Path(root)
    if layout not in LAYOUTS:
        raise UserError(f"Invalid layout '{layout}'. Only {', '.join(LAYOUTS)} are supported.")
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; a segmentation dataset is a folder "
                        "(images/ + masks/, or the Cityscapes or IDD layout)")
    if layout == "auto":
        layout = _detect(root)
    found = {"folders": _folders, "cityscapes": _cityscapes, "idd": _idd}[layout](root)
    if not any(found.pairs.values()):
        raise UserError(f"{root}: no image/mask pairs found in the {layout} layout")
    log.info("%s: %s layout, %s", root, layout, ", ".join(f"{s} {len(p)} pairs" for s, p in found.pairs.items()))
    return found


def _detect(root: Path) -> str:
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        for path in (root / "gtFine").rglob("*.png"):
            if path.name.endswith(CITYSCAPES_MASK):
                return "cityscapes"
            if path.name.endswith(tuple(IDD_MASKS.values())):
                return "idd"
        raise UserError(f"{root}/gtFine: no *{CITYSCAPES_MASK} (Cityscapes) or *{IDD_MASKS['idd-id']} / "
                        f"*{IDD_MASKS['idd-level3']} (IDD) label images; IDD ships polygons only: create them with "
                        "the IDD toolkit's preperation/createLabels.py")
    if (root / "images").is_dir() or any((root / s / "images").is_dir() for s in SPLITS):
        return "folders"
    raise UserError(f"{root}: not a segmentation dataset: expected images/ and masks/ (or <split>/images and "
                    "<split>/masks), or leftImg8bit/ and gtFine/ (Cityscapes, IDD)")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def _folders(root: Path) -> Layout:
    class_file = root / CLASSES_FILE if (root / CLASSES_FILE).is_file() else None
    found = Layout("folders", "train-ids", {}, class_file)
    if (root / "images").is_dir():
        found.pairs["all"] = _match_stems(root / "images", root / "masks")
    else:
        for split in SPLITS:
            if (root / split / "images").is_dir():
                found.pairs[split] = _match_stems(root / split / "images", root / split / "masks")
        if "train" in found.pairs and "val" not in found.pairs:
            found.pairs["all"] = found.pairs.pop("train")  # no val folder: split train by seed
    return found


def _match_stems(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    if not masks.is_dir():
        raise UserError(f"{images} has no sibling masks/ folder with a mask per image")
    by_stem = {p.relative_to(images).with_suffix("").as_posix(): p for p in _images_in(images)}
    mask_by_stem = {p.relative_to(masks).with_suffix("").as_posix(): p for p in _images_in(masks)}
    _check_partners(images, masks, set(by_stem) - set(mask_by_stem), "image(s) without a mask", masks)
    _check_partners(images, masks, set(mask_by_stem) - set(by_stem), "mask(s) without an image", images)
    return [(by_stem[s], mask_by_stem[s]) for s in sorted(by_stem)]


def _check_partners(images: Path, masks: Path, orphans: set[str], what: str, where: Path) -> None:
    if orphans:
        listed = ", ".join(sorted(orphans)[:5]) + (f" (and {len(orphans) - 5} more)" if len(orphans) > 5 else "")
        raise UserError(f"{images.parent}: {len(orphans)} {what} of the same name (stem) in {where}: {listed}")


def _city_pairs(root: Path, split: str, mask_suffix: str) -> list[tuple[Path, Path]]:
    """leftImg8bit/<split>/<sub>/<stem>_leftImg8bit.* -> gtFine/<split>/<sub>/<stem><mask_suffix>."""
    pairs, missing = [], []
    for image in _images_in(root / "leftImg8bit" / split):
        stem = image.name[: image.name.rfind(IMAGE_SUFFIX)] if IMAGE_SUFFIX in image.name else None
        if stem is None:
            continue  # not a camera image (a README, a preview): the layouts name every image *_leftImg8bit
        rel = image.parent.relative_to(root / "leftImg8bit" / split)
        mask = root / "gtFine" / split / rel / f"{stem}{mask_suffix}"
        (pairs if mask.is_file() else missing).append((image, mask))
    if missing:
        image, mask = missing[0]
        raise UserError(f"{len(missing)} image(s) in {root / 'leftImg8bit' / split} have no label image, e.g. "
                        f"{image} has no {mask}")
    return pairs


def _splits_with_labels(root: Path) -> list[str]:
    present = [s for s in SPLITS if (root / "leftImg8bit" / s).is_dir() and (root / "gtFine" / s).is_dir()]
    if not present:
        raise UserError(f"{root}: no leftImg8bit/<split> with a gtFine/<split> for split train or val")
    return present


def _cityscapes(root: Path) -> Layout:
    splits = _splits_with_labels(root)
    return Layout("cityscapes", "cityscapes", {s: _city_pairs(root, s, CITYSCAPES_MASK) for s in splits})


def _idd(root: Path) -> Layout:
    splits = _splits_with_labels(root)
    for kind, suffix in IDD_MASKS.items():  # IDD ids first: level 3 and Cityscapes classes both derive from them
        if any(p.name.endswith(suffix) for s in splits for p in (root / "gtFine" / s).rglob(f"*{suffix}")):
            return Layout("idd", kind, {s: _city_pairs(root, s, suffix) for s in splits})
    raise UserError(f"{root}/gtFine: no *{IDD_MASKS['idd-id']} or *{IDD_MASKS['idd-level3']} label images; create them "
                    "with the IDD toolkit's preperation/createLabels.py (--id-type id or level3Id)")
