"""``run_eda``: a loaded dataset -> DIR/eda.json, the figures and DIR/eda.html.

    counts -> image statistics -> samples -> pixel correlation -> duplicates, blanks, outliers
           -> hand-crafted features and the HOG baseline -> augmentation previews -> observations

Each step's seconds are in ``eda.json["seconds"]``; a statistic computed on a subsample says
how many images it used.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from ..data.splits import SPLITS
from . import figures, handcrafted, quality, stats
from ..files import write_text

log = logging.getLogger(__name__)
SAMPLES_PER_CLASS = 8
PREVIEW_IMAGES = 8
PRESETS = ("light", "standard", "strong")
LOW_CONTRAST = 20.0  # median grey-level std (0-255) below which images are called low-contrast


class _Clock:
    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now


def run_eda(dataset, out: Path, *, seed: int = 0, samples_per_class: int = SAMPLES_PER_CLASS) -> dict:
    """Explore a loaded ``visionlab.data.Dataset``; write everything under out; return eda.json's dict."""
    from ..training.augment import preview
    from ..training.run import digit_like

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    classes = list(dataset.classes)
    k = len(classes)
    train = dataset.train
    labels = {s: np.asarray(dataset.split(s).labels) for s in SPLITS}
    figs: dict[str, str] = {}

    def save(name: str, path: Path) -> None:
        figs[name] = path.name

    # 1. class distribution
    dist = stats.class_distribution(labels, classes)
    save("class_distribution", figures.class_distribution(dist, classes, out / "class_distribution.png"))
    clock.lap("class_distribution")

    # 2. image statistics (train split: what training sees and normalises with)
    channels = stats.channel_stats(train.images)
    bright, contrast = {}, {}
    for s in SPLITS:
        bright[s], contrast[s] = stats.intensity(dataset.split(s).images)
    mean_img, std_img = stats.class_images(train.images, labels["train"], k)
    sizes = stats.image_sizes(np.concatenate([dataset.column(s, "sizes") for s in SPLITS]), dataset.image_shape)
    save("class_mean_images", figures.class_images(mean_img, std_img, classes, out / "class_mean_images.png"))
    save("brightness_contrast", figures.intensity(bright["train"], contrast["train"], labels["train"], classes,
                                                  out / "brightness_contrast.png"))
    clock.lap("image_statistics")

    # 3. samples
    save("samples", figures.samples(train.images, labels["train"], classes, samples_per_class, out / "samples.png",
                                    seed))
    clock.lap("samples")

    # 4. pixel correlation
    corr = stats.pixel_correlation(train.images, seed)
    save("pixel_correlation", figures.correlation(corr, out / "pixel_correlation.png"))
    clock.lap("pixel_correlation")

    # 5. noise and artifacts, over all splits at once
    split_of = np.concatenate([np.full(len(labels[s]), i) for i, s in enumerate(SPLITS)])
    index = np.concatenate([np.arange(len(labels[s])) for s in SPLITS])
    names = [n for s in SPLITS for n in dataset.names(s)]
    hashes = np.concatenate([dataset.column(s, "hashes") for s in SPLITS])
    everything = _AllSplits(dataset)
    exact = quality.exact_duplicates(hashes, split_of, list(SPLITS), index, names)
    near = quality.near_duplicates(everything, hashes, seed)
    all_bright, all_contrast = np.concatenate([bright[s] for s in SPLITS]), np.concatenate([contrast[s] for s in SPLITS])
    blank = quality.blank_images(all_contrast)
    odd = quality.outliers(all_bright, all_contrast)

    def place(i: int) -> dict:
        return {"split": SPLITS[split_of[i]], "index": int(index[i]), "name": names[i],
                "label": classes[all_labels[i]]}

    all_labels = np.concatenate([labels[s] for s in SPLITS])
    near_pairs = [{"a": place(a), "b": place(b), "similarity": round(float(sim), 4),
                   "across_splits": bool(split_of[a] != split_of[b]), "same_label": bool(all_labels[a] == all_labels[b])}
                  for (a, b), sim in zip(near["pairs"][: quality.LISTED], near["similarity"][: quality.LISTED])]
    quality_record = {
        "exact_duplicates": exact,
        "near_duplicates": {"pairs": int(len(near["pairs"])),
                            "across_splits": int((split_of[near["pairs"][:, 0]] != split_of[near["pairs"][:, 1]]).sum()),
                            "different_labels": int((all_labels[near["pairs"][:, 0]] != all_labels[near["pairs"][:, 1]]).sum()),
                            "searched": near["searched"], "of": near["of"],
                            "method": f"cosine >= {near['threshold']} between standardised {near['thumbnail']}x"
                                      f"{near['thumbnail']} grey thumbnails; identical pixels excluded",
                            "examples": near_pairs},
        "blank": {"images": int(len(blank)), "threshold_std": quality.BLANK_STD,
                  "examples": [{**place(i), "contrast": round(float(all_contrast[i]), 2)} for i in blank[: quality.LISTED]]},
        "outliers": {"images": int(len(odd["positions"])), "threshold_z": odd["threshold"],
                     "examples": [{**place(i), "brightness": round(float(all_bright[i]), 1),
                                   "contrast": round(float(all_contrast[i]), 1), "z_brightness": round(float(zb), 1),
                                   "z_contrast": round(float(zc), 1)}
                                  for i, zb, zc in zip(odd["positions"][: quality.LISTED], odd["z_brightness"],
                                                       odd["z_contrast"])]},
        "skipped": list(dataset.skipped),
    }
    _quality_figures(out, everything, exact, near, blank, odd, split_of, index, all_labels, classes, save)
    clock.lap("noise_and_artifacts")

    # 6. hand-crafted features and the HOG baseline
    firsts = [np.flatnonzero(labels["train"] == i)[:1] for i in range(min(k, figures.MAX_CLASSES_SHOWN))]
    shown = [(i, int(f[0])) for i, f in enumerate(firsts) if len(f)]
    panels = [handcrafted.feature_panels(np.asarray(train.images[j])) for _, j in shown]
    save("handcrafted", figures.handcrafted(panels, [classes[i] for i, _ in shown], out / "handcrafted.png"))
    test = dataset.test if len(dataset.test) else dataset.val
    baseline = handcrafted.hog_baseline(train.images, labels["train"], test.images, test.labels, seed)
    baseline["scored_on"] = "test" if len(dataset.test) else "val"
    clock.lap("handcrafted")

    # 7. augmentation previews: the same images under each preset, as training applies it
    flip = not digit_like(classes)
    pick = np.random.default_rng(seed).choice(len(train), min(PREVIEW_IMAGES, len(train)), replace=False)
    originals = np.asarray(train.images[np.sort(pick)])
    previews = {p: preview(originals, p, flip_allowed=flip, seed=seed, n_variants=1)[0] for p in PRESETS}
    save("augmentations", figures.augmentations(originals, previews, out / "augmentations.png"))
    clock.lap("augmentation_previews")

    record = {
        "source": dataset.source, "classes": classes, "image_shape": list(dataset.image_shape),
        "images": {s: int(len(labels[s])) for s in SPLITS},
        "class_distribution": dist,
        "image_statistics": {
            "channel_mean": channels["mean"], "channel_std": channels["std"], "computed_on": "train, every pixel",
            "brightness": {s: stats.five_numbers(bright[s]) for s in SPLITS},
            "contrast": {s: stats.five_numbers(contrast[s]) for s in SPLITS},
            "brightness_per_class": stats.per_class_summary(bright["train"], labels["train"], classes),
            "contrast_per_class": stats.per_class_summary(contrast["train"], labels["train"], classes),
            "sizes": sizes,
        },
        "pixel_correlation": {k2: v for k2, v in corr.items() if k2 != "matrix"},
        "quality": quality_record,
        "handcrafted": {"views": ["Sobel", "Canny", "LBP (uniform, P=8, R=1)", "HOG"], "hog_baseline": baseline},
        "augmentation": {"presets": list(PRESETS), "flip_allowed": flip, "images": int(len(originals))},
        "figures": figs,
    }
    record["observations"] = observations(record)
    clock.lap("observations")
    record["seconds"] = {**clock.seconds, "total": round(sum(clock.seconds.values()), 3)}
    write_text(out / "eda.json", json.dumps(record, indent=1, default=_plain))
    from ..report import write_eda_html

    write_eda_html(out, record)
    log.info("EDA of %s: %d images in %.1f s -> %s", dataset.source, sum(record["images"].values()),
             record["seconds"]["total"], out / "eda.html")
    return record


class _AllSplits:
    """train + val + test as one indexable sequence of images, without copying them."""

    def __init__(self, dataset):
        self.parts = [dataset.split(s).images for s in SPLITS]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, positions):
        positions = np.atleast_1d(np.asarray(positions))
        part = np.searchsorted(self.offsets, positions, side="right") - 1
        out = np.empty((len(positions), *self.parts[0].shape[1:]), np.uint8)
        for p in np.unique(part):
            sel = part == p
            out[sel] = self.parts[p][positions[sel] - self.offsets[p]]
        return out


def _quality_figures(out, everything, exact, near, blank, odd, split_of, index, labels, classes, save) -> None:
    def caption(i: int) -> str:
        return f"{SPLITS[split_of[i]]} #{index[i]}\n{short_name(classes[labels[i]])}"

    def short_name(name: str) -> str:
        return name if len(name) <= 12 else name[:11] + "…"

    if near["pairs"].size:
        pairs = near["pairs"][:12]
        imgs = everything[pairs.reshape(-1)]
        caps = [caption(i) for i in pairs.reshape(-1)]
        save("near_duplicates", figures.gallery(list(imgs), caps, "near-duplicate pairs, most similar first "
                                                "(side by side)", out / "near_duplicates.png", per_row=8))
    groups = exact["examples"][:8]
    if groups:
        # one image per group (they are identical) with where all its copies are
        firsts = [_position(split_of, index, g[0]) for g in groups]
        caps = [" / ".join(f"{m['split']} #{m['index']}" for m in g[:3]) + (" …" if len(g) > 3 else "") for g in groups]
        save("exact_duplicates", figures.gallery(list(everything[firsts]), caps,
                                                 "exact duplicates: one image per group, where its copies are",
                                                 out / "exact_duplicates.png", per_row=4))
    flagged = np.concatenate([blank[:8], odd["positions"][:16]]).astype(int)
    if len(flagged):
        caps = [("blank " if i < len(blank[:8]) else "outlier ") + caption(p) for i, p in enumerate(flagged)]
        save("blank_and_outliers", figures.gallery(list(everything[flagged]), caps,
                                                   "near-constant images, then brightness/contrast outliers",
                                                   out / "blank_and_outliers.png", frame="#c0392b"))


def _position(split_of: np.ndarray, index: np.ndarray, member: dict) -> int:
    split = SPLITS.index(member["split"])
    return int(np.flatnonzero((split_of == split) & (index == member["index"]))[0])


def observations(r: dict) -> list[str]:
    """What the numbers mean for the model, from the numbers alone."""
    notes = []
    dist = r["class_distribution"]
    ratio = dist["imbalance_ratio"]
    if dist["empty_classes"]:
        notes.append(f"{len(dist['empty_classes'])} class(es) have no image at all ({', '.join(dist['empty_classes'][:5])}): "
                     "remove them or add images; the model cannot learn them.")
    if ratio is not None and ratio >= stats.IMBALANCE:
        notes.append(f"Classes are imbalanced: {dist['largest']['class']} has {dist['largest']['images']:,} images, "
                     f"{dist['smallest']['class']} {dist['smallest']['images']:,} (ratio {ratio:.2f}). Train with "
                     "class_weights: balanced, keep the split stratified (visionlab's is), and read macro F1 "
                     "rather than accuracy.")
    elif ratio is not None:
        notes.append(f"Classes are balanced (largest / smallest = {ratio:.2f}): accuracy is a fair summary.")
    st = r["image_statistics"]
    notes.append(f"Normalise with per-channel mean {st['channel_mean']} and std {st['channel_std']} (train split, "
                 "in [0, 1]); visionlab's training computes the same values.")
    sizes = st["sizes"]
    if not sizes.get("uniform", True):
        notes.append(f"Images come in {sizes['distinct_sizes']:,} sizes (heights {sizes['height']['min']:.0f}-"
                     f"{sizes['height']['max']:.0f}, widths {sizes['width']['min']:.0f}-{sizes['width']['max']:.0f}); "
                     f"recommended image_size: {sizes['recommended_image_size']} ({sizes['recommendation']}).")
    median_contrast = (st["contrast"].get("train") or {}).get("median")
    if median_contrast is not None and median_contrast < LOW_CONTRAST:
        notes.append(f"Low contrast: the median image's grey-level std is {median_contrast:.1f} of 255; "
                     "contrast augmentation or per-image standardisation may help.")
    q = r["quality"]
    ex = q["exact_duplicates"]
    if ex["groups_across_splits"]:
        notes.append(f"Leakage: {ex['groups_across_splits']:,} group(s) of identical images span splits, so the "
                     "validation/test scores partly measure memory; deduplicate before trusting them.")
    if ex["extra_copies"]:
        notes.append(f"{ex['extra_copies']:,} exact duplicate copies in {ex['groups']:,} group(s) "
                     f"({ex['groups_within_a_split']:,} within one split).")
    nd = q["near_duplicates"]
    if nd["pairs"]:
        notes.append(f"{nd['pairs']:,} near-duplicate pair(s) among {nd['searched']:,} images searched "
                     f"({nd['across_splits']:,} across splits, {nd['different_labels']:,} with different labels"
                     + (": label noise to check" if nd["different_labels"] else "") + ").")
    if q["blank"]["images"]:
        notes.append(f"{q['blank']['images']:,} near-constant (blank) image(s): check the files or drop them.")
    if q["outliers"]["images"]:
        notes.append(f"{q['outliers']['images']:,} brightness/contrast outlier(s) beyond {q['outliers']['threshold_z']:.0f} "
                     "robust deviations: see the gallery.")
    if q["skipped"]:
        notes.append(f"{len(q['skipped']):,} file(s) were skipped at decode (listed below).")
    base = r["handcrafted"]["hog_baseline"]
    if base.get("accuracy") is not None:
        notes.append(f"HOG + linear SVM reaches {100 * base['accuracy']:.1f}% on {base['test_images']:,} "
                     f"{base['scored_on']} images (trained on {base['train_images']:,}): a deep model should beat it; "
                     f"chance is {100 / len(r['classes']):.1f}%.")
    corr = r["pixel_correlation"]
    if corr["neighbour_correlation"] is not None:
        notes.append(f"Neighbouring pixels correlate at {corr['neighbour_correlation']:.2f} on average: local "
                     "structure that convolutions exploit and an MLP has to learn from scratch.")
    return notes


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
