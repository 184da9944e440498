"""Class maps: which raw mask value is which training class, with names and colours.

A mask file stores raw ids (Cityscapes' 34 label ids, IDD's 40 ids or its 26 level-3 ids, or
whatever a folder of masks uses). Training needs train ids 0..K-1 and 255 for "ignore". A
``ClassMap`` holds, per train id, a name, an RGB colour and the raw ids that become it; every
raw id it does not list becomes 255. Applying one is a 256-entry lookup table on uint8 masks.

Built in, from the datasets' own label tables (cityscapesScripts' ``labels.py`` and the IDD
toolkit's ``anue_labels.py``, transcribed below):

    cityscapes          Cityscapes label ids -> the 19 Cityscapes train classes
    idd-level3          IDD level-3 ids (0..25) -> the 26 IDD level-3 classes
    idd-id              IDD ids (0..39) -> the same 26 level-3 classes

and, for evaluating a model on another dataset, ``cross_map(model_classes, target_id_kind)``
maps the target's raw ids into the model's classes (Cityscapes <-> IDD, both directions).

A YAML class map (``--classes`` / ``--class-map``) lists the classes in train-id order:

    name: my-streets            # optional
    classes:
      - {name: road, ids: [7], color: [128, 64, 128]}   # color optional: a default palette
      - {name: car, ids: [26, 27]}                      # ids optional: [the class's position]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

IGNORE = 255  # the train id of pixels that count for nothing (loss and metrics)

# Cityscapes (cityscapesScripts helpers/labels.py): name, label id, train id, RGB colour.
CITYSCAPES_LABELS = [
    ("unlabeled", 0, 255, (0, 0, 0)), ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)), ("out of roi", 3, 255, (0, 0, 0)), ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)), ("ground", 6, 255, (81, 0, 81)), ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)), ("parking", 9, 255, (250, 170, 160)), ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)), ("wall", 12, 3, (102, 102, 156)), ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)), ("bridge", 15, 255, (150, 100, 100)), ("tunnel", 16, 255, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)), ("polegroup", 18, 255, (153, 153, 153)), ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)), ("vegetation", 21, 8, (107, 142, 35)), ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)), ("person", 24, 11, (220, 20, 60)), ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)), ("truck", 27, 14, (0, 0, 70)), ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, 255, (0, 0, 90)), ("trailer", 30, 255, (0, 0, 110)), ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)), ("bicycle", 33, 18, (119, 11, 32)),
]

# IDD (AutoNUE toolkit anue_labels.py): name, id, Cityscapes label id, Cityscapes train id, level-3 id, colour.
IDD_LABELS = [
    ("road", 0, 7, 0, 0, (128, 64, 128)), ("parking", 1, 9, 255, 1, (250, 170, 160)),
    ("drivable fallback", 2, 255, 255, 1, (81, 0, 81)), ("sidewalk", 3, 8, 1, 2, (244, 35, 232)),
    ("rail track", 4, 10, 255, 3, (230, 150, 140)), ("non-drivable fallback", 5, 255, 9, 3, (152, 251, 152)),
    ("person", 6, 24, 11, 4, (220, 20, 60)), ("animal", 7, 255, 255, 4, (246, 198, 145)),
    ("rider", 8, 25, 12, 5, (255, 0, 0)), ("motorcycle", 9, 32, 17, 6, (0, 0, 230)),
    ("bicycle", 10, 33, 18, 7, (119, 11, 32)), ("autorickshaw", 11, 255, 255, 8, (255, 204, 54)),
    ("car", 12, 26, 13, 9, (0, 0, 142)), ("truck", 13, 27, 14, 10, (0, 0, 70)), ("bus", 14, 28, 15, 11, (0, 60, 100)),
    ("caravan", 15, 29, 255, 12, (0, 0, 90)), ("trailer", 16, 30, 255, 12, (0, 0, 110)),
    ("train", 17, 31, 16, 12, (0, 80, 100)), ("vehicle fallback", 18, 255, 255, 12, (136, 143, 153)),
    ("curb", 19, 255, 255, 13, (220, 190, 40)), ("wall", 20, 12, 3, 14, (102, 102, 156)),
    ("fence", 21, 13, 4, 15, (190, 153, 153)), ("guard rail", 22, 14, 255, 16, (180, 165, 180)),
    ("billboard", 23, 255, 255, 17, (174, 64, 67)), ("traffic sign", 24, 20, 7, 18, (220, 220, 0)),
    ("traffic light", 25, 19, 6, 19, (250, 170, 30)), ("pole", 26, 17, 5, 20, (153, 153, 153)),
    ("polegroup", 27, 18, 255, 20, (153, 153, 153)), ("obs-str-bar-fallback", 28, 255, 255, 21, (169, 187, 214)),
    ("building", 29, 11, 2, 22, (70, 70, 70)), ("bridge", 30, 15, 255, 23, (150, 100, 100)),
    ("tunnel", 31, 16, 255, 23, (150, 120, 90)), ("vegetation", 32, 21, 8, 24, (107, 142, 35)),
    ("sky", 33, 23, 10, 25, (70, 130, 180)), ("fallback background", 34, 255, 255, 25, (169, 187, 214)),
    ("unlabeled", 35, 0, 255, 255, (0, 0, 0)), ("ego vehicle", 36, 1, 255, 255, (0, 0, 0)),
    ("rectification border", 37, 2, 255, 255, (0, 0, 0)), ("out of roi", 38, 3, 255, 255, (0, 0, 0)),
    ("license plate", 39, 255, 255, 255, (0, 0, 142)),
]
IDD_LEVEL3_NAMES = [
    "road", "drivable fallback", "sidewalk", "non-drivable fallback", "person", "rider", "motorcycle", "bicycle",
    "autorickshaw", "car", "truck", "bus", "vehicle fallback", "curb", "wall", "fence", "guard rail", "billboard",
    "traffic sign", "traffic light", "pole", "obs-str-bar-fallback", "building", "bridge", "vegetation", "sky",
]
ID_KINDS = ("cityscapes", "idd-id", "idd-level3", "train-ids")  # what the raw values of a mask file mean


@dataclass(frozen=True)
class ClassMap:
    """Train id k is ``names[k]``, drawn in ``colors[k]``; raw mask values ``ids[k]`` become k."""

    name: str  # e.g. 'cityscapes' or the YAML file it came from
    names: tuple[str, ...]  # (K,) class names in train-id order
    colors: tuple[tuple[int, int, int], ...]  # (K,) RGB
    ids: tuple[tuple[int, ...], ...]  # (K,) raw mask values of each class

    @property
    def n_classes(self) -> int:
        return len(self.names)

    def lut(self) -> np.ndarray:
        """(256,) uint8: raw value -> train id; every unlisted value -> IGNORE."""
        table = np.full(256, IGNORE, np.uint8)
        for k, raw in enumerate(self.ids):
            table[list(raw)] = k
        return table

    def encode(self, raw_masks: np.ndarray) -> np.ndarray:
        """uint8 raw masks (any shape) -> uint8 train ids, same shape."""
        return self.lut()[raw_masks]

    def palette(self) -> np.ndarray:
        """(256, 3) uint8: train id -> colour; IGNORE (and anything unused) black."""
        table = np.zeros((256, 3), np.uint8)
        table[: self.n_classes] = np.asarray(self.colors, np.uint8).reshape(-1, 3)
        return table

    def to_dict(self) -> dict:
        """The YAML/JSON form ``from_dict`` reads back (run.json keeps the run's class map)."""
        return {"name": self.name, "classes": [{"name": n, "color": list(c), "ids": list(i)}
                                               for n, c, i in zip(self.names, self.colors, self.ids)]}


def _default_color(k: int) -> tuple[int, int, int]:
    """A distinct colour per index (matplotlib's tab20), for classes a YAML gives none."""
    import matplotlib

    r, g, b, _ = matplotlib.colormaps["tab20"](k % 20)
    return int(r * 255), int(g * 255), int(b * 255)


def cityscapes() -> ClassMap:
    train = sorted({t for _, _, t, _ in CITYSCAPES_LABELS if t != IGNORE})
    first = {t: (n, c) for n, _, t, c in reversed(CITYSCAPES_LABELS)}  # the first label of each train id names it
    ids = tuple(tuple(i for _, i, t, _ in CITYSCAPES_LABELS if t == k) for k in train)
    return ClassMap("cityscapes", tuple(first[k][0] for k in train), tuple(first[k][1] for k in train), ids)


def idd_level3(raw: str = "level3") -> ClassMap:
    """IDD's 26 level-3 classes, from level-3 ids (``raw='level3'``) or from IDD ids (``raw='id'``)."""
    color_of = {n: c for n, *_, c in IDD_LABELS}  # every level-3 class has a namesake IDD label
    colors = tuple(color_of[name] for name in IDD_LEVEL3_NAMES)
    if raw == "level3":
        ids = tuple((k,) for k in range(len(IDD_LEVEL3_NAMES)))
    else:
        ids = tuple(tuple(i for _, i, _, _, l3, _ in IDD_LABELS if l3 == k) for k in range(len(IDD_LEVEL3_NAMES)))
    return ClassMap(f"idd-level3 (from {'level-3 ids' if raw == 'level3' else 'IDD ids'})",
                    tuple(IDD_LEVEL3_NAMES), colors, ids)


def builtin_for(id_kind: str) -> ClassMap | None:
    """The class map a dataset's own masks come with, or None ('train-ids': a YAML or identity)."""
    return {"cityscapes": cityscapes, "idd-id": lambda: idd_level3("id"),
            "idd-level3": lambda: idd_level3("level3")}.get(id_kind, lambda: None)()


def identity(n_classes: int) -> ClassMap:
    """Masks that already hold train ids 0..K-1 (255 ignored), named 'class 0', 'class 1', ..."""
    return ClassMap("train ids", tuple(f"class {k}" for k in range(n_classes)),
                    tuple(_default_color(k) for k in range(n_classes)), tuple((k,) for k in range(n_classes)))


def family(class_map: ClassMap) -> str | None:
    """'cityscapes' or 'idd-level3' when the class names are a built-in set, else None."""
    if list(class_map.names) == list(cityscapes().names):
        return "cityscapes"
    return "idd-level3" if list(class_map.names) == IDD_LEVEL3_NAMES else None


def cross_map(model_classes: ClassMap, target_id_kind: str) -> ClassMap | None:
    """Raw ids of another dataset -> the model's classes, when both are built-in; else None.

    Cityscapes model on IDD ids: each IDD id goes to its Cityscapes train id (IDD's csTrainId).
    Cityscapes model on IDD level-3 ids: a level-3 class goes where its namesake IDD label goes
    ('non-drivable fallback' -> terrain; 'vehicle fallback', 'curb', 'billboard' -> ignore).
    IDD level-3 model on Cityscapes ids: each Cityscapes id goes to the level-3 class of the IDD
    label that has that Cityscapes id (caravan, trailer, train -> vehicle fallback, ...).
    Cityscapes classes IDD lacks (terrain's grass, 'train') simply never appear in the target.
    """
    source = family(model_classes)
    if source is None or target_id_kind == "train-ids":
        return None
    if source == target_id_kind or (source == "idd-level3" and target_id_kind in ("idd-id", "idd-level3")):
        return builtin_for(target_id_kind)
    k = model_classes.n_classes
    if source == "cityscapes" and target_id_kind == "idd-id":
        ids = [[i for _, i, _, t, _, _ in IDD_LABELS if t == c] for c in range(k)]
    elif source == "cityscapes" and target_id_kind == "idd-level3":
        to_cs = {l3: t for n, _, _, t, l3, _ in IDD_LABELS if l3 != IGNORE and n == IDD_LEVEL3_NAMES[l3]}
        ids = [[l3 for l3, t in sorted(to_cs.items()) if t == c] for c in range(k)]
    elif source == "idd-level3" and target_id_kind == "cityscapes":
        to_l3 = {}
        for _, _, cs, _, l3, _ in IDD_LABELS:
            if cs != IGNORE and l3 != IGNORE:
                to_l3.setdefault(cs, l3)
        ids = [[cs for cs, l3 in sorted(to_l3.items()) if l3 == c] for c in range(k)]
    else:
        return None
    return ClassMap(f"{target_id_kind} -> {source}", model_classes.names, model_classes.colors,
                    tuple(tuple(i) for i in ids))


# ---- YAML ---------------------------------------------------------------------------------------

def from_dict(data, where: str) -> ClassMap:
    """A class map from its YAML/JSON form; one clear line naming the problem otherwise."""
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not data["classes"]:
        raise UserError(f"{where}: a class map is a mapping with a non-empty 'classes' list, e.g. "
                        "classes: [{name: road, ids: [7]}, {name: car, ids: [26]}]")
    unknown = set(data) - {"name", "classes"}
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; valid keys: name, classes")
    names, colors, ids, seen = [], [], [], {}
    for k, entry in enumerate(data["classes"]):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise UserError(f"{where}: class {k} needs a name, e.g. {{name: road, ids: [7]}}; got {entry!r}")
        bad = set(entry) - {"name", "ids", "color"}
        if bad:
            raise UserError(f"{where}: class '{entry['name']}': unknown key(s) {', '.join(sorted(map(str, bad)))}; "
                            "valid keys: name, ids, color")
        raw = entry.get("ids", [k])
        raw = [raw] if isinstance(raw, int) else raw
        if (not isinstance(raw, list) or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < 255
                                             for i in raw)):
            raise UserError(f"{where}: class '{entry['name']}': ids must be a list of mask values 0..254, got {raw!r}")
        for i in raw:
            if i in seen:
                raise UserError(f"{where}: mask value {i} is listed for both '{seen[i]}' and '{entry['name']}'")
            seen[i] = entry["name"]
        color = entry.get("color", _default_color(k))
        if (not isinstance(color, (list, tuple)) or len(color) != 3
                or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255 for v in color)):
            raise UserError(f"{where}: class '{entry['name']}': color must be [R, G, B] in 0..255, got {color!r}")
        names.append(entry["name"].strip())
        colors.append(tuple(color))
        ids.append(tuple(raw))
    if len(set(names)) != len(names):
        raise UserError(f"{where}: class names repeat: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    return ClassMap(str(data.get("name") or where), tuple(names), tuple(colors), tuple(ids))


def load_class_map(path: str | Path) -> ClassMap:
    """A class map from a YAML file (the module docstring shows the format)."""
    from ..training.config import read_yaml

    return from_dict(read_yaml(path), str(path))


def align(class_map: ClassMap, model_classes: ClassMap, where: str) -> ClassMap:
    """A target class map (``--class-map``) re-ordered into the model's train ids by class name.

    Model classes the YAML does not list never appear in the target's ground truth."""
    unknown = [n for n in class_map.names if n not in model_classes.names]
    if unknown:
        raise UserError(f"{where}: class(es) {', '.join(unknown)} are not classes of the model; "
                        f"valid: {', '.join(model_classes.names)}")
    by_name = dict(zip(class_map.names, class_map.ids))
    return ClassMap(class_map.name, model_classes.names, model_classes.colors,
                    tuple(by_name.get(n, ()) for n in model_classes.names))
