"""``load_segmentation``: image/mask pairs -> uint8 arrays, decoded once and cached.

    find_pairs (layouts.py) --decode (cache miss only)--> raw masks + images --cache--> memmaps
        --class map (a lookup table)--> train-id masks --split--> SegDataset(train, val)

The cache entry (``$VISIONLAB_HOME/datasets/segment-<key>/``, keyed like the classification
cache by the files' names, sizes and times and the decode size) stores the masks' *raw* ids, so
one decode serves every class map: the built-in one, a --classes YAML, or a cross-dataset map.

    meta.json              layout, id kind, parts, image shape
    <part>.images.npy      (N, H, W, 3) uint8
    <part>.masks.npy       (N, H, W) uint8 raw mask values
    <part>.names.json      [[image path, mask path], ...]
"""
from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data import cache
from ..data.decode import Target, decode_image, n_workers
from ..errors import UserError
from . import classes as C
from .layouts import find_pairs

log = logging.getLogger(__name__)
MASK_MODES = frozenset({"L", "P", "I", "I;16", "I;16B", "I;16L", "1"})  # single-band modes: a value per pixel


@dataclass
class SegDataConfig:
    source: str  # dataset folder (see layouts.py)
    layout: str = "auto"  # auto | folders | cityscapes | idd
    image_size: tuple[int, int] | None = None  # (H, W) every pair is resized to; None: native (must be uniform)
    classes: str | None = None  # class-map YAML; None: the layout's built-in (or folders' classes.yaml)
    val_fraction: float = 0.2  # share of a pool without its own val split that becomes val
    seed: int = 0  # draws that split


@dataclass
class SegSplit:
    images: np.ndarray  # (N, H, W, 3) uint8
    masks: np.ndarray  # (N, H, W) uint8 train ids, 255 = ignore
    names: list[str]  # (N,) image file of each pair

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class SegDataset:
    source: str
    layout: str  # folders | cityscapes | idd
    id_kind: str  # what the raw mask values mean (classes.ID_KINDS)
    classes: C.ClassMap
    train: SegSplit
    val: SegSplit
    cache_dir: Path
    cached: bool  # True when this load decoded nothing

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.train.images.shape[1:3] if len(self.train) else self.val.images.shape[1:3])

    def summary(self) -> dict:
        k = self.classes.n_classes
        pixels = {s: np.bincount(getattr(self, s).masks.ravel(), minlength=256)[:k].tolist() for s in ("train", "val")}
        return {"source": self.source, "layout": self.layout, "id_kind": self.id_kind, "class_map": self.classes.name,
                "classes": list(self.classes.names), "image_shape": list(self.image_shape),
                "splits": {"train": len(self.train), "val": len(self.val)}, "class_pixels": pixels,
                "cache_dir": str(self.cache_dir), "cached": self.cached}


def load_segmentation(config: SegDataConfig, map_for=None) -> SegDataset:
    """Load a dataset, decoding only on a cache miss. ``map_for(id_kind, own_class_map)``, when
    given, returns the class map to apply instead of the dataset's own (cross-dataset evaluation
    maps the target's ids into the model's classes)."""
    root = Path(config.source).expanduser()
    layout = find_pairs(root, config.layout)
    entry = cache.entry_dir(cache.home_dir(), "segment", str(root.resolve()), _identity(layout), "3",
                            list(config.image_size) if config.image_size else None)
    meta = cache.read_meta(entry)
    cached = meta is not None
    if not cached:
        _write_entry(entry, layout, config.image_size)
        meta = cache.read_meta(entry)
    class_map = _class_map(config, layout, meta)
    if map_for is not None:
        class_map = map_for(layout.id_kind, class_map)
    lut = class_map.lut()
    parts = {p: _load_part(entry, p, lut) for p in meta["parts"]}
    if "all" in parts:
        train, val = _seeded_split(parts.pop("all"), config.val_fraction, config.seed)
        parts.setdefault("train", train)
        parts.setdefault("val", val)
    h, w, c = meta["image_shape"]
    empty = SegSplit(np.zeros((0, h, w, c), np.uint8), np.zeros((0, h, w), np.uint8), [])
    return SegDataset(str(root), layout.name, layout.id_kind, class_map, parts.get("train", empty),
                      parts.get("val", empty), entry, cached)


def _class_map(config: SegDataConfig, layout, meta: dict) -> C.ClassMap:
    if config.classes:
        return C.load_class_map(config.classes)
    if layout.class_file is not None:
        return C.load_class_map(layout.class_file)
    builtin = C.builtin_for(layout.id_kind)
    if builtin is not None:
        return builtin
    values = set(meta["mask_values"]) - {C.IGNORE}
    log.info("%s: no class map given; masks hold train ids 0..%d", config.source, max(values, default=0))
    return C.identity(max(values, default=0) + 1)


def _identity(layout) -> str:
    """Changes when any file of a pair is added, removed, replaced or touched."""
    h = hashlib.sha256(f"{layout.name}:{layout.id_kind}".encode())
    for split, pairs in sorted(layout.pairs.items()):
        for image, mask in pairs:
            for p in (image, mask):
                st = p.stat()
                h.update(f"{split}:{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def read_pair(image_path: Path, mask_path: Path, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """One pair -> ((H, W, 3) uint8 image, (H, W) uint8 raw mask), resized to size when given:
    the image with bilinear filtering, the mask with nearest neighbour (ids are not numbers)."""
    image, hw, error = decode_image(image_path.read_bytes(), Target(channels=3, size=None, resize=None))
    if image is None:
        raise UserError(f"{image_path}: {error}")
    try:
        with Image.open(mask_path) as im:
            mode = im.mode
            mask = np.asarray(im) if mode in MASK_MODES else None
    except Exception as exc:  # untrusted bytes: any decoder failure is a bad file
        raise UserError(f"{mask_path}: not a readable mask image ({exc})") from None
    if mask is None:
        raise UserError(f"{mask_path}: a mask must be one value per pixel (a grey or palette PNG of ids), got mode "
                        f"{mode}; colour-coded masks are not id masks (Cityscapes: use *_gtFine_labelIds.png)")
    if mask.shape != image.shape[:2]:
        raise UserError(f"mask and image differ in size: {mask_path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but "
                        f"{image_path} is {image.shape[1]}x{image.shape[0]}")
    if mask.dtype != np.uint8:
        if mask.size and mask.max() > 255:
            raise UserError(f"{mask_path}: mask values up to {mask.max()}; ids must fit in 0..255")
        mask = mask.astype(np.uint8)
    if size is not None and mask.shape != tuple(size):
        image = np.asarray(Image.fromarray(image).resize(size[::-1], Image.Resampling.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize(size[::-1], Image.Resampling.NEAREST))
    return image, mask


def _decode_part(pairs: list[tuple[Path, Path]], size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Decode pairs in threads (PIL releases the GIL while it decodes) into two stacked arrays."""
    with ThreadPoolExecutor(n_workers()) as pool:
        decoded = list(pool.map(lambda pair: read_pair(*pair, size), pairs))
    first = decoded[0][0].shape[:2]
    other = next((i for i, (img, _) in enumerate(decoded) if img.shape[:2] != first), None)
    if other is not None:
        b = decoded[other][0].shape[:2]
        raise UserError(f"images differ in size ({pairs[0][0]} is {first[1]}x{first[0]}, {pairs[other][0]} is "
                        f"{b[1]}x{b[0]}); give --image-size HxW to resize every pair")
    return np.stack([img for img, _ in decoded]), np.stack([m for _, m in decoded])


def _write_entry(entry: Path, layout, size: tuple[int, int] | None) -> None:
    """Decode every part into a temporary folder, then rename it into place (no half entry)."""
    with cache.staged_entry(entry) as tmp:
        parts, values, shape = {}, set(), None
        for name, pairs in layout.pairs.items():
            if not pairs:
                continue
            images, masks = _decode_part(pairs, size)
            if shape is not None and images.shape[1:] != shape:
                raise UserError(f"{layout.name} splits differ in image size ({shape[:2]} vs {images.shape[1:3]}); "
                                "give --image-size HxW")
            shape = images.shape[1:]
            np.save(tmp / f"{name}.images.npy", images)
            np.save(tmp / f"{name}.masks.npy", masks)
            (tmp / f"{name}.names.json").write_text(json.dumps([[str(i), str(m)] for i, m in pairs]))
            values |= set(np.unique(masks).tolist())
            parts[name] = len(pairs)
        meta = {"version": cache.CACHE_VERSION, "kind": "segment", "layout": layout.name, "id_kind": layout.id_kind,
                "parts": parts, "image_shape": list(shape), "mask_values": sorted(values)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))


def _load_part(entry: Path, name: str, lut: np.ndarray) -> SegSplit:
    images = np.load(entry / f"{name}.images.npy", mmap_mode="r")
    masks = lut[np.load(entry / f"{name}.masks.npy", mmap_mode="r")]  # raw ids -> train ids: (N, H, W) uint8
    names = [image for image, _ in json.loads((entry / f"{name}.names.json").read_text())]
    return SegSplit(images, masks, names)


def _seeded_split(pool: SegSplit, val_fraction: float, seed: int) -> tuple[SegSplit, SegSplit]:
    if not 0 < val_fraction < 1:
        raise UserError(f"val_fraction must be in (0, 1) for a dataset without a val split, got {val_fraction}")
    n = len(pool)
    n_val = min(max(1, round(n * val_fraction)), n - 1) if n > 1 else 0
    order = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])

    def take(idx):
        return SegSplit(np.asarray(pool.images[idx]), pool.masks[idx], [pool.names[i] for i in idx])

    return take(train), take(val)
