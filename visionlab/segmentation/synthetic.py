"""A synthetic street-scene dataset with exact masks, written in the Cityscapes, IDD or folders layout.

Real street scenes cannot be downloaded here, so tests and benchmarks draw their own: sky, a row
of buildings with windows, trees, a road in perspective with lane marks between two sidewalks,
poles, cars and people sized by their distance to the horizon, and sometimes the ego vehicle's
bonnet at the bottom (an 'ignore' region). Every region is a textured polygon drawn onto the
image and, with its class, onto the mask, so the mask is exact by construction.

The IDD layout's scenes are drawn in an Indian-road style, so that evaluating across layouts
meets a domain shift, as with the real datasets: a dustier road, often without lane marks, with
dirt edges ('drivable fallback') and autorickshaws among the cars. Both classes are IDD's own;
the Cityscapes classes have no place for them, so the built-in map ignores them.

File names follow the real layouts exactly (what ``layouts.py`` reads, plus the files the real
datasets ship beside them):

    cityscapes  leftImg8bit/<split>/<city>/<city>_<seq:06>_000019_leftImg8bit.png
                gtFine/<split>/<city>/<city>_<seq:06>_000019_gtFine_{labelIds,color,instanceIds}.png
                gtFine/<split>/<city>/<city>_<seq:06>_000019_gtFine_polygons.json
    idd         leftImg8bit/<split>/<seq>/<frame:06>_leftImg8bit.png
                gtFine/<split>/<seq>/<frame:06>_gtFine_{polygons.json,labelids.png,labellevel3Ids.png}
    folders     images/<i:05>.png, masks/<i:05>.png (train ids), classes.yaml
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

from ..errors import UserError
from . import classes as C

STREET_CLASSES = ("road", "sidewalk", "building", "pole", "vegetation", "sky", "person", "car")  # Cityscapes names
IDD_ONLY = ("drivable fallback", "autorickshaw")  # drawn in IDD-style scenes only (IDD label names)
SCENE_CLASSES = STREET_CLASSES + IDD_ONLY  # what a scene mask's values index
EGO = len(SCENE_CLASSES)  # scene index of the ego vehicle (ignored in every layout)
CITIES = {"train": ("aachen", "bochum", "bremen"), "val": ("frankfurt", "lindau", "munster")}  # real city names
INSTANCE_CLASSES = ("person", "car")  # Cityscapes instanceIds: id * 1000 + instance for these
BUILDING_COLORS = [(150, 120, 100), (185, 165, 135), (120, 110, 115), (160, 90, 70), (200, 190, 170)]


def make_street_dataset(root, layout: str = "cityscapes", n_train: int = 200, n_val: int = 50,
                        size: tuple[int, int] = (128, 256), seed: int = 0,
                        idd_labels: tuple[str, ...] = ("id", "level3")) -> Path:
    """Write n_train + n_val scenes of (H, W) = size under root in the given layout; returns root.

    ``idd_labels``: which IDD label images to write, 'id' (``_gtFine_labelids.png``) and/or
    'level3' (``_gtFine_labellevel3Ids.png``)."""
    if layout not in ("cityscapes", "idd", "folders"):
        raise UserError(f"Invalid layout '{layout}'. Only cityscapes, idd and folders are supported.")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            image, scene, objects = render_scene(rng, size, style="idd" if layout == "idd" else "cityscapes")
            index = i if split == "train" else n_train + i
            {"cityscapes": _write_cityscapes, "idd": _write_idd, "folders": _write_folders}[layout](
                root, split, index, image, scene, objects, idd_labels)
    if layout == "folders":
        classes = [{"name": n, "ids": [k], "color": list(_cs_color(n))} for k, n in enumerate(STREET_CLASSES)]
        (root / "classes.yaml").write_text(yaml.safe_dump({"name": "synthetic streets", "classes": classes},
                                                          sort_keys=False))
    return root


# ---- drawing ------------------------------------------------------------------------------------

class _Canvas:
    """An image (H, W, 3) float and a scene-index mask drawn together, polygon by polygon."""

    def __init__(self, rng, size):
        self.rng, (self.h, self.w) = rng, size
        self.image = np.zeros((self.h, self.w, 3), np.float32)
        self.scene = np.zeros((self.h, self.w), np.uint8)
        self.noise = rng.standard_normal((self.h, self.w, 3)).astype(np.float32)  # per-pixel texture
        self.objects: list[dict] = []  # Cityscapes polygons.json objects, in drawing order

    def region(self, polygon) -> np.ndarray:
        layer = Image.new("L", (self.w, self.h))
        ImageDraw.Draw(layer).polygon([tuple(p) for p in polygon], fill=1)
        return np.asarray(layer, bool)

    def fill(self, polygon, label: int | None, color, texture: float, name: str | None = None) -> np.ndarray:
        """Paint polygon with colour + texture * noise; label it (None: paint only, e.g. windows)."""
        where = self.region(polygon)
        self.image[where] = np.asarray(color, np.float32) + texture * self.noise[where]
        if label is not None:
            self.scene[where] = label
            self.objects.append({"label": name or SCENE_CLASSES[label],
                                 "polygon": [[int(round(x)), int(round(y))] for x, y in polygon]})
        return where


def _rect(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _ellipse(cx, cy, rx, ry, n=20):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


def render_scene(rng, size: tuple[int, int], style: str = "cityscapes") -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """One street scene: ((H, W, 3) uint8 image, (H, W) uint8 scene mask indexing SCENE_CLASSES
    (EGO for the ego vehicle), polygon objects). ``style``: cityscapes | idd (see the docstring)."""
    idd = style == "idd"
    cv = _Canvas(rng, size)
    h, w = cv.h, cv.w
    horizon = rng.uniform(0.38, 0.5) * h
    sky = cv.fill(_rect(0, 0, w, h), 5, (0, 0, 0), 4.0)  # sky: a vertical gradient
    cv.image[sky] += (np.array([95, 140, 210]) + np.linspace(0, 50, h)[:, None, None] * np.ones((1, w, 1)))[sky]
    _buildings(cv, horizon)
    for _ in range(rng.integers(1, 4)):  # trees in front of the buildings
        cx, r = rng.uniform(0, w), rng.uniform(0.06, 0.12) * w
        cv.fill(_rect(cx - r * 0.12, horizon - r, cx + r * 0.12, horizon + 0.04 * h), 4, (90, 70, 45), 10)
        cv.fill(_ellipse(cx, horizon - 1.3 * r, r, r * 0.9), 4, rng.uniform([40, 90, 20], [80, 140, 50]), 22)
    cv.fill(_rect(0, horizon, w, h), 1, rng.uniform(150, 180) * np.ones(3), 6)  # ground: sidewalk everywhere
    vanish, spread = w * rng.uniform(0.4, 0.6), w * rng.uniform(0.02, 0.06)
    road = [(vanish - spread, horizon), (vanish + spread, horizon), (w * 0.95, h), (w * 0.05, h)]
    if idd:  # dirt edges between the road and the sidewalks
        (tl, _), (tr, _), (br, _), (bl, _) = road
        dirt = rng.uniform(0.04, 0.1) * w
        for edge in ([(tl - 0.3 * spread, horizon), (tl, horizon), (bl, h), (bl - dirt, h)],
                     [(tr, horizon), (tr + 0.3 * spread, horizon), (br + dirt, h), (br, h)]):
            cv.fill(edge, SCENE_CLASSES.index("drivable fallback"), rng.uniform([125, 100, 70], [155, 130, 95]), 9)
    cv.fill(road, 0, rng.uniform(85, 105) * (np.array([1.12, 1.02, 0.88]) if idd else np.ones(3)), 8 if idd else 5)
    for k in range(6 if not idd or rng.random() < 0.4 else 0):  # lane marks: part of the road
        y0, y1 = horizon + (h - horizon) * (k / 6) ** 1.4, horizon + (h - horizon) * ((k + 0.5) / 6) ** 1.4
        half = lambda y: 0.004 * w + 0.01 * w * (y - horizon) / (h - horizon)  # noqa: E731
        cv.fill([(vanish - half(y0), y0), (vanish + half(y0), y0), (vanish + half(y1), y1), (vanish - half(y1), y1)],
                None, (225, 225, 215), 4)
    things = [("car", rng.uniform(horizon + 0.12 * h, h)) for _ in range(rng.integers(1, 4))]
    things += [("person", rng.uniform(horizon + 0.15 * h, h)) for _ in range(rng.integers(0, 4))]
    things += [("pole", rng.uniform(horizon + 0.1 * h, 0.9 * h)) for _ in range(rng.integers(1, 3))]
    things += [("autorickshaw", rng.uniform(horizon + 0.12 * h, h)) for _ in range(rng.integers(1, 3) if idd else 0)]
    for kind, base in sorted(things, key=lambda t: t[1]):  # far (high on the image) first
        scale = (base - horizon) / (h - horizon)  # 0 at the horizon, 1 at the bottom
        {"car": _car, "person": _person, "pole": _pole, "autorickshaw": _autorickshaw}[kind](cv, base, scale, road)
    if rng.random() < 0.5:  # the ego vehicle's bonnet: ignored in every layout
        top = h * rng.uniform(0.9, 0.95)
        cv.fill([(0, h), (0, top + 0.03 * h), (w / 2, top), (w, top + 0.03 * h), (w, h)], EGO, (30, 30, 35), 6,
                name="ego vehicle")
    light = rng.uniform(0.8, 1.15)  # the scene's exposure
    return np.clip(cv.image * light, 0, 255).astype(np.uint8), cv.scene, cv.objects


def _buildings(cv: _Canvas, horizon: float) -> None:
    x, w, rng = 0.0, cv.w, cv.rng
    while x < w:
        width = rng.uniform(0.15, 0.35) * w
        top = rng.uniform(0.04, 0.75) * horizon
        color = np.array(BUILDING_COLORS[rng.integers(len(BUILDING_COLORS))]) + rng.uniform(-15, 15, 3)
        cv.fill(_rect(x, top, x + width, horizon + 2), 2, color, 7)
        step = max(4.0, rng.uniform(0.035, 0.06) * w)
        for wy in np.arange(top + step * 0.5, horizon - step * 0.6, step):  # windows: paint only, still building
            for wx in np.arange(x + step * 0.4, x + width - step * 0.6, step):
                cv.fill(_rect(wx, wy, wx + step * 0.5, wy + step * 0.55), None, (60, 70, 90), 5)
        x += width


def _car(cv: _Canvas, base: float, scale: float, road) -> None:
    rng, w = cv.rng, cv.w
    width, height = (0.12 + 0.3 * scale) * w, (0.05 + 0.13 * scale) * cv.h
    left_edge, right_edge = _road_span(road, base)
    cx = rng.uniform(left_edge + width / 2, max(left_edge + width / 2, right_edge - width / 2))
    top, waist, sill = base - height, base - height * 0.55, base - height * 0.1
    body = [(cx - width / 2, waist), (cx - width * 0.3, top), (cx + width * 0.3, top), (cx + width / 2, waist),
            (cx + width / 2, sill), (cx - width / 2, sill)]
    color = rng.uniform(20, 235, 3)
    cv.fill(body, 7, color, 5)
    window = _rect(cx - width * 0.25, base - height * 0.92, cx + width * 0.25, base - height * 0.6)
    cv.fill(window, None, (50, 60, 75), 4)
    for side in (-1, 1):  # wheels: black, part of the car
        wheel = _ellipse(cx + side * width * 0.3, base - height * 0.12, width * 0.09, height * 0.13)
        cv.fill(wheel, 7, (20, 20, 20), 4)


def _autorickshaw(cv: _Canvas, base: float, scale: float, road) -> None:
    """A three-wheeler seen from behind: a tall rounded canopy (yellow or green over black), two wheels."""
    rng, w = cv.rng, cv.w
    label = SCENE_CLASSES.index("autorickshaw")
    width, height = (0.07 + 0.16 * scale) * w, (0.07 + 0.2 * scale) * cv.h
    left_edge, right_edge = _road_span(road, base)
    cx = rng.uniform(left_edge + width / 2, max(left_edge + width / 2, right_edge - width / 2))
    top, waist = base - height, base - height * 0.5
    canopy = [(cx - width / 2, waist), (cx - width * 0.4, top), (cx + width * 0.4, top), (cx + width / 2, waist)]
    cv.fill(canopy, label, [(230, 190, 30), (60, 150, 60)][rng.integers(2)], 6)
    cv.fill(_rect(cx - width / 2, base - height * 0.5, cx + width / 2, base - height * 0.12), label, (25, 25, 25), 5)
    for side in (-1, 1):
        wheel = _ellipse(cx + side * width * 0.38, base - height * 0.1, width * 0.08, height * 0.1)
        cv.fill(wheel, label, (15, 15, 15), 3)


def _person(cv: _Canvas, base: float, scale: float, road) -> None:
    rng, w = cv.rng, cv.w
    height = (0.08 + 0.32 * scale) * cv.h
    left_edge, right_edge = _road_span(road, base)
    side = [(2, left_edge - 2), (right_edge + 2, w - 2)][rng.integers(2)]  # on a sidewalk
    cx = rng.uniform(*side) if side[1] > side[0] else side[0]
    half = max(1.5, height * 0.13)
    clothes = rng.uniform(10, 200, 3)
    cv.fill(_rect(cx - half, base - height * 0.8, cx + half, base - height * 0.35), 6, clothes, 6)  # torso
    cv.fill([(cx - half, base - height * 0.35), (cx + half, base - height * 0.35), (cx + half * 0.9, base),
             (cx - half * 0.9, base)], 6, clothes * 0.5, 5)  # legs
    cv.fill(_ellipse(cx, base - height * 0.89, half * 0.8, height * 0.1), 6, (205, 160, 130), 5)  # head


def _pole(cv: _Canvas, base: float, scale: float, road) -> None:
    left_edge, right_edge = _road_span(road, base)
    x = left_edge - 3 if cv.rng.random() < 0.5 else right_edge + 3
    half = max(1.0, (0.006 + 0.012 * scale) * cv.w)
    cv.fill(_rect(x - half, base - (0.3 + 0.6 * scale) * cv.h, x + half, base), 3, (120, 125, 130), 3)


def _road_span(road, y: float) -> tuple[float, float]:
    """The road's left and right x at image row y (the trapezoid's edges)."""
    (tlx, ty), (trx, _), (brx, by), (blx, _) = road
    t = (y - ty) / (by - ty)
    return tlx + t * (blx - tlx), trx + t * (brx - trx)


# ---- writing ------------------------------------------------------------------------------------

def _cs_color(name: str) -> tuple[int, int, int]:
    return next(c for n, _, _, c in C.CITYSCAPES_LABELS if n == name)


def _raw_ids(kind: str) -> np.ndarray:
    """(256,) uint8: scene index -> the raw id a layout's mask file stores for that class."""
    if kind == "cityscapes":
        ids = {n: i for n, i, _, _ in C.CITYSCAPES_LABELS}
    elif kind == "idd-id":
        ids = {n: i for n, i, *_ in C.IDD_LABELS}
    elif kind == "idd-level3":
        ids = {n: l3 for n, _, _, _, l3, _ in C.IDD_LABELS}
    else:  # folders: train ids, ego ignored
        ids = {n: k for k, n in enumerate(STREET_CLASSES)} | {"ego vehicle": C.IGNORE}
    table = np.full(256, C.IGNORE, np.uint8)  # a class the layout has no id for (IDD's in Cityscapes) is ignored
    table[: EGO + 1] = [ids.get(n, C.IGNORE) for n in (*SCENE_CLASSES, "ego vehicle")]
    return table


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _polygons(path: Path, image: np.ndarray, objects: list[dict]) -> None:
    path.write_text(json.dumps({"imgHeight": image.shape[0], "imgWidth": image.shape[1], "objects": objects}))


def _write_cityscapes(root, split, index, image, scene, objects, _):
    city = CITIES[split][index % len(CITIES[split])]
    stem = f"{city}_{index:06d}_000019"
    _save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
    gt = root / "gtFine" / split / city
    ids = _raw_ids("cityscapes")[scene]
    _save(gt / f"{stem}_gtFine_labelIds.png", ids)
    colors = np.array([_cs_color(n) for n, *_ in C.CITYSCAPES_LABELS], np.uint8)[ids]  # label id -> colour
    _save(gt / f"{stem}_gtFine_color.png", np.dstack([colors, np.full(ids.shape, 255, np.uint8)]))
    instances = ids.astype(np.uint16)
    from scipy import ndimage  # connected pieces of person/car pixels stand in for instances

    for name in INSTANCE_CLASSES:
        label_id = int(_raw_ids("cityscapes")[STREET_CLASSES.index(name)])
        pieces, n = ndimage.label(ids == label_id)
        instances[pieces > 0] = label_id * 1000 + pieces[pieces > 0] - 1
    _save(gt / f"{stem}_gtFine_instanceIds.png", instances)
    _polygons(gt / f"{stem}_gtFine_polygons.json", image, objects)


def _write_idd(root, split, index, image, scene, objects, idd_labels):
    seq, frame = str(index // 10), f"{index:06d}"
    _save(root / "leftImg8bit" / split / seq / f"{frame}_leftImg8bit.png", image)
    gt = root / "gtFine" / split / seq
    gt.mkdir(parents=True, exist_ok=True)
    _polygons(gt / f"{frame}_gtFine_polygons.json", image, objects)
    if "id" in idd_labels:
        _save(gt / f"{frame}_gtFine_labelids.png", _raw_ids("idd-id")[scene])
    if "level3" in idd_labels:
        _save(gt / f"{frame}_gtFine_labellevel3Ids.png", _raw_ids("idd-level3")[scene])


def _write_folders(root, split, index, image, scene, objects, _):
    _save(root / "images" / f"{index:05d}.png", image)
    _save(root / "masks" / f"{index:05d}.png", _raw_ids("train-ids")[scene])
