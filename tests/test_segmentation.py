"""Segmentation contracts: metrics against hand-computed values, the three dataset layouts read from
generated files, class maps, joint augmentation alignment, the model contract, and tiny end-to-end
studies through the ``visionlab segment`` parser (train, evaluate, cross-dataset, resume)."""
import argparse
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from visionlab.errors import UserError
from visionlab.segmentation import (SegDataConfig, build_seg_model, cityscapes, cross_map, idd_level3, load_class_map,
                                    load_segmentation, make_street_dataset)
from visionlab.segmentation import command
from visionlab.segmentation import loop as train_module
from visionlab.segmentation.augment import JointAugment
from visionlab.segmentation.metrics import confusion_matrix, per_image_confusion, segmentation_metrics
from visionlab.segmentation.visuals import colorize

SIZE = (32, 64)  # (H, W) of every generated test scene


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def parser():
    p = argparse.ArgumentParser(prog="visionlab")
    command.register(p.add_subparsers(dest="command", required=True))
    return p


def cli(*argv) -> int:
    args = parser().parse_args(["segment", *map(str, argv)])
    return args.func(args)


# ---- metrics -----------------------------------------------------------------------------------

# One 3x3 image, 4 classes. Truth 255 (ignored) at two pixels, one of them predicted as class 3,
# so class 3 is never true and never predicted where it counts; class 2 is predicted once, never true.
TRUTH_A = [[0, 0, 1], [1, 1, 255], [0, 1, 255]]
PRED_A = [[0, 1, 1], [1, 2, 0], [0, 1, 3]]
# counted pixels: (t0,p0) x2, (t0,p1) x1, (t1,p1) x3, (t1,p2) x1 -> 7 pixels, 5 right


def test_metrics_match_hand_computed_values():
    cm = confusion_matrix(torch.tensor(TRUTH_A), torch.tensor(PRED_A), 4).numpy()
    assert cm.tolist() == [[2, 1, 0, 0], [0, 3, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    m = segmentation_metrics(cm, ["a", "b", "c", "d"])
    iou = m["per_class_iou"]
    assert iou["a"] == pytest.approx(2 / 3, abs=1e-6)  # 2 / (3 true + 2 predicted - 2)
    assert iou["b"] == pytest.approx(3 / 5, abs=1e-6)  # 3 / (4 + 4 - 3)
    assert iou["c"] == 0.0  # absent from the truth but predicted once: counts, as 0
    assert iou["d"] is None  # neither true nor predicted (its one prediction sits on an ignored pixel)
    assert m["miou"] == pytest.approx((2 / 3 + 3 / 5 + 0) / 3, abs=1e-6)
    assert m["pixel_accuracy"] == pytest.approx(5 / 7, abs=1e-6)
    assert m["per_class_precision"] == pytest.approx({"a": 1.0, "b": 0.75, "c": 0.0, "d": None}, abs=1e-6)
    assert m["per_class_recall"] == {"a": pytest.approx(2 / 3, abs=1e-6), "b": 0.75, "c": None, "d": None}
    assert m["classes_present"] == ["a", "b", "c"] and m["n_pixels"] == 7


def test_metrics_accumulate_over_the_split_not_per_image():
    truth = torch.tensor([TRUTH_A, [[0] * 3] * 3])  # image B: all class 0, predicted perfectly
    pred = torch.tensor([PRED_A, [[0] * 3] * 3])
    per_image = per_image_confusion(truth, pred, 4)
    assert per_image.shape == (2, 4, 4) and per_image[1, 0, 0] == 9
    assert torch.equal(per_image.sum(0), confusion_matrix(truth, pred, 4))
    m = segmentation_metrics(per_image.sum(0).numpy(), list("abcd"))
    assert m["miou"] == pytest.approx((11 / 12 + 3 / 5 + 0) / 3, abs=1e-6)  # class a: 11 / (12 + 11 - 11)
    assert m["pixel_accuracy"] == pytest.approx(14 / 16, abs=1e-6)
    # averaging per-image mIoUs would give ((2/3 + 3/5 + 0) / 3 + 1) / 2 = 0.711: a different number
    assert abs(m["miou"] - 0.7111) > 0.1


# ---- class maps --------------------------------------------------------------------------------

def test_builtin_and_cross_dataset_class_maps():
    cs = cityscapes()
    assert cs.n_classes == 19 and cs.names[0] == "road" and cs.names[18] == "bicycle"
    lut = cs.lut()
    assert (lut[7], lut[26], lut[33], lut[0], lut[1], lut[9]) == (0, 13, 18, 255, 255, 255)
    l3 = idd_level3("level3")
    assert l3.n_classes == 26 and l3.lut()[25] == 25 and l3.lut()[26] == 255
    ids = idd_level3("id").lut()
    assert (ids[12], ids[11], ids[17], ids[36]) == (9, 8, 12, 255)  # car, autorickshaw, train -> vehicle fallback, ego
    to_cs = cross_map(cs, "idd-id").lut()
    assert (to_cs[12], to_cs[11], to_cs[5], to_cs[29]) == (13, 255, 9, 2)  # car, autorickshaw, non-drivable, building
    to_cs3 = cross_map(cs, "idd-level3").lut()
    assert (to_cs3[9], to_cs3[3], to_cs3[12], to_cs3[4]) == (13, 9, 255, 11)
    to_l3 = cross_map(l3, "cityscapes").lut()
    assert (to_l3[26], to_l3[31], to_l3[7], to_l3[22]) == (9, 12, 0, 255)  # car, train, road, terrain (no IDD match)
    assert cross_map(cs, "train-ids") is None


def test_class_map_yaml(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("name: mine\nclasses:\n  - {name: road, ids: [7, 9], color: [1, 2, 3]}\n  - {name: car, ids: [26]}\n"
                    "  - sky\n")
    m = load_class_map(path)
    assert m.names == ("road", "car", "sky") and m.colors[0] == (1, 2, 3) and len(m.colors[1]) == 3
    lut = m.lut()
    assert (lut[7], lut[9], lut[26], lut[2], lut[0]) == (0, 0, 1, 2, 255)  # 'sky' without ids: its position
    for text, needle in [("classes: []\n", "non-empty 'classes'"), ("classes: [road]\nextra: 1\n", "unknown key(s) extra"),
                         ("classes: [{name: a, ids: [3]}, {name: b, ids: [3]}]\n", "mask value 3 is listed for both"),
                         ("classes: [{name: a, color: [1, 2]}]\n", "color must be [R, G, B]"),
                         ("classes: [{name: a, ids: [300]}]\n", "ids must be a list of mask values"),
                         ("classes: [a, a]\n", "class names repeat")]:
        path.write_text(text)
        with pytest.raises(UserError, match=re.escape(needle)):
            load_class_map(path)


# ---- readers -----------------------------------------------------------------------------------

LAYOUTS = {  # name -> (make_street_dataset arguments, id kind read, file patterns relative to root)
    "cityscapes": (dict(layout="cityscapes"), "cityscapes", [
        r"leftImg8bit/(train|val)/([a-z]+)/\2_\d{6}_000019_leftImg8bit\.png",
        r"gtFine/(train|val)/([a-z]+)/\2_\d{6}_000019_gtFine_(labelIds|color|instanceIds)\.png",
        r"gtFine/(train|val)/([a-z]+)/\2_\d{6}_000019_gtFine_polygons\.json"]),
    "idd-id": (dict(layout="idd", idd_labels=("id",)), "idd-id", [
        r"leftImg8bit/(train|val)/\d+/\d{6}_leftImg8bit\.png", r"gtFine/(train|val)/\d+/\d{6}_gtFine_labelids\.png",
        r"gtFine/(train|val)/\d+/\d{6}_gtFine_polygons\.json"]),
    "idd-level3": (dict(layout="idd", idd_labels=("level3",)), "idd-level3", [
        r"leftImg8bit/(train|val)/\d+/\d{6}_leftImg8bit\.png", r"gtFine/(train|val)/\d+/\d{6}_gtFine_labellevel3Ids\.png",
        r"gtFine/(train|val)/\d+/\d{6}_gtFine_polygons\.json"]),
    "folders": (dict(layout="folders"), "train-ids", [r"images/\d{5}\.png", r"masks/\d{5}\.png", r"classes\.yaml"]),
}


@pytest.mark.parametrize("name", LAYOUTS)
def test_reader_on_generated_layout(name, tmp_path):
    kwargs, id_kind, patterns = LAYOUTS[name]
    root = make_street_dataset(tmp_path / name, n_train=4, n_val=3, size=SIZE, seed=1, **kwargs)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert all(any(re.fullmatch(pat, f) for pat in patterns) for f in files), files  # nothing but the layout's files
    assert all(any(re.fullmatch(pat, f) for f in files) for pat in patterns)  # and every kind of them
    data = load_segmentation(SegDataConfig(str(root), val_fraction=0.3))
    assert data.id_kind == id_kind and data.image_shape == SIZE and data.cached is False
    assert (len(data.train), len(data.val)) == ((5, 2) if name == "folders" else (4, 3))  # folders: split 7 by seed
    assert data.train.images.dtype == np.uint8 and data.train.images.shape[1:] == (*SIZE, 3)
    expected = {"cityscapes": cityscapes().names, "folders": ("road", "sidewalk", "building", "pole", "vegetation",
                                                             "sky", "person", "car")}.get(name, idd_level3().names)
    assert data.classes.names == tuple(expected)
    # the masks are the files' raw ids through the class map, pair by pair
    image_file = data.val.names[0]
    raw = np.asarray(Image.open(_mask_of(image_file, name)))
    assert np.array_equal(data.val.masks[0], data.classes.encode(raw))
    assert np.array_equal(data.val.images[0], np.asarray(Image.open(image_file).convert("RGB")))
    present = set(np.unique(data.train.masks)) - {255}
    assert {data.classes.names.index(c) for c in ("road", "sidewalk", "building", "sky", "car")} <= present
    again = load_segmentation(SegDataConfig(str(root), val_fraction=0.3))
    assert again.cached and np.array_equal(again.val.masks, data.val.masks)


def _mask_of(image_file: str, layout: str) -> str:
    if layout == "folders":
        return image_file.replace("/images/", "/masks/")
    suffix = {"cityscapes": "_gtFine_labelIds.png", "idd-id": "_gtFine_labelids.png",
              "idd-level3": "_gtFine_labellevel3Ids.png"}[layout]
    return image_file.replace("/leftImg8bit/", "/gtFine/").replace("_leftImg8bit.png", suffix)


def test_resize_on_decode_keeps_masks_nearest(tmp_path):
    root = make_street_dataset(tmp_path / "cs", n_train=2, n_val=1, size=(64, 128))
    data = load_segmentation(SegDataConfig(str(root), image_size=(32, 48)))
    assert data.train.images.shape == (2, 32, 48, 3) and data.train.masks.shape == (2, 32, 48)
    assert set(np.unique(data.train.masks)) <= set(range(19)) | {255}  # no blended ids


def test_size_mismatch_names_both_files(tmp_path):
    root = tmp_path / "pairs"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(root / "masks" / "a.png")
    with pytest.raises(UserError) as err:
        load_segmentation(SegDataConfig(str(root)))
    assert str(root / "images" / "a.png") in str(err.value) and str(root / "masks" / "a.png") in str(err.value)
    (root / "masks" / "a.png").unlink()
    with pytest.raises(UserError, match="1 image.s. without a mask.*: a"):
        load_segmentation(SegDataConfig(str(root)))


def test_missing_label_image_and_unknown_layout(tmp_path):
    root = make_street_dataset(tmp_path / "cs", n_train=2, n_val=1, size=SIZE)
    next((root / "gtFine").rglob("*_gtFine_labelIds.png")).unlink()
    with pytest.raises(UserError, match="have no label image, e.g. .*_leftImg8bit.png has no .*_gtFine_labelIds.png"):
        load_segmentation(SegDataConfig(str(root)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a segmentation dataset"):
        load_segmentation(SegDataConfig(str(tmp_path / "empty")))


# ---- augmentation ------------------------------------------------------------------------------

def planted(n=4, h=40, w=56, block=8, seed=0):
    """Masks of random class blocks 0..9 and images whose pixels spell their own class (value / 10)."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 10, (n, h // block, w // block), generator=g)
    masks = blocks.repeat_interleave(block, 1).repeat_interleave(block, 2).to(torch.uint8)  # (n, h, w)
    images = (masks.float() / 10)[:, None].expand(n, 3, h, w).clone()
    return images, masks


@pytest.mark.parametrize("aug", [JointAugment(crop=(24, 32), flip=True), JointAugment(crop=(48, 64), flip=True),
                                 JointAugment(crop=(24, 24), scale=(0.5, 2.0), flip=True)], ids=lambda a: a.describe())
def test_joint_augment_keeps_image_and_mask_aligned(aug):
    images, masks = planted()
    x, y = aug(images, masks, torch.Generator().manual_seed(3))
    assert x.shape == (4, 3, *aug.crop) and y.shape == (4, *aug.crop) and y.dtype == torch.int64
    label = torch.where(y == 255, -1, y).float()
    if aug.scale == (1.0, 1.0):  # whole-pixel moves: every pixel exactly where its label is
        assert torch.allclose(x[:, 0] * 10, label.clamp(min=0), atol=1e-4)
        assert (x[y[:, None].expand_as(x) == 255] == 0).all()  # outside the image: 0 and ignore
    else:  # interpolated: check pixels whose 3x3 neighbourhood has one label (block interiors)
        pad = torch.nn.functional.pad(label[:, None], (1, 1, 1, 1), value=-2)
        same = (torch.nn.functional.max_pool2d(pad, 3, 1) == torch.nn.functional.max_pool2d(-pad, 3, 1).neg())[:, 0]
        inside = same & (label >= 0)
        assert inside.float().mean() > 0.1
        assert torch.allclose(x[:, 0][inside] * 10, label[inside], atol=1e-3)
    if aug.crop == (48, 64):
        assert (y == 255).any()  # a crop larger than the image pads with 'ignore'


def test_joint_augment_flips_both_and_is_seeded():
    images, masks = planted(n=16)
    aug = JointAugment(flip=True)
    x, y = aug(images, masks, torch.Generator().manual_seed(0))
    flipped = (y != masks.long()).flatten(1).any(1)
    assert 0 < flipped.sum() < 16  # about half
    assert torch.equal(y[flipped], masks.long().flip(-1)[flipped])
    assert torch.allclose(x[flipped], images.flip(-1)[flipped], atol=1e-5)
    x2, y2 = aug(images, masks, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_colorize_blends_class_colours_and_darkens_ignore():
    cs = cityscapes()
    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[0, 13], [255, 0]], np.uint8)
    out = colorize(image, mask, cs).astype(int)
    assert np.allclose(out[0, 1], 0.4 * 100 + 0.6 * np.array(cs.colors[13]), atol=1)
    assert (out[1, 0] < 100).all()


# ---- models ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["deeplabv3plus", "deeplabv3", "deeplabv3-resnet50"])
def test_model_contract(name):
    torch.manual_seed(0)
    model = build_seg_model(name, 5, pretrained="none", decoder_channels=32)
    assert model.pretrained_used is False and model.normalization is None
    x = torch.randn(2, 3, 32, 64)
    logits = model(x)
    assert logits.shape == (2, 5, 32, 64) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name,arch,part", [("deeplabv3plus", "resnet18", "encoder"),
                                            ("deeplabv3", "mobilenet_v3_large", "net.backbone")])
def test_pretrained_auto_loads_torchvisions_imagenet_file_when_cached(name, arch, part, tmp_path, monkeypatch):
    """No network here: a stand-in 'ImageNet' file (a fresh torchvision net) is put where torch hub
    caches the real one; pretrained=auto must load exactly those tensors into the encoder."""
    import torchvision
    from visionlab.segmentation.models import imagenet_weights

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    reference = getattr(torchvision.models, arch)(weights=None).state_dict()
    filename = imagenet_weights(arch).url.rsplit("/", 1)[1]
    torch.save(reference, tmp_path / "checkpoints" / filename)
    model = build_seg_model(name, 3, pretrained="auto", decoder_channels=32)
    assert model.pretrained_used and model.normalization[0] == [0.485, 0.456, 0.406] and filename in model.pretrained_note
    loaded = model.get_submodule(part).state_dict()
    key = "layer1.0.conv1.weight" if arch == "resnet18" else "features.1.block.0.0.weight"
    assert torch.equal(loaded[key.removeprefix("features.")], reference[key])
    assert build_seg_model(name, 3, pretrained="none").pretrained_used is False


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(UserError, match="Only deeplabv3plus, deeplabv3, deeplabv3-resnet50 are supported"):
        build_seg_model("unet", 3)


# ---- end to end through the command line -------------------------------------------------------

TINY = ["--epochs", 1, "--batch-size", 4, "--pretrained", "none", "--precision", "fp32", "--device", "cpu"]


@pytest.fixture(scope="module")
def cs_run(tmp_path_factory):
    """One DeepLabV3+ run on a generated Cityscapes-layout set, trained through the parser, shared
    by the tests that evaluate it (training is the slow part)."""
    tmp = tmp_path_factory.mktemp("cs-run")
    cs = make_street_dataset(tmp / "cs", "cityscapes", n_train=6, n_val=3, size=SIZE, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert cli("train", "--data", cs, "--out", tmp / "run", "--crop", "32x32", "--scale", "0.75-1.25", *TINY) == 0
    torch.set_num_threads(threads)
    return cs, tmp / "run"


def test_train_evaluate_and_cross_dataset_from_the_command_line(cs_run, tmp_path, capsys):
    cs, run = cs_run
    capsys.readouterr()  # whatever the shared run printed
    idd = make_street_dataset(tmp_path / "idd", "idd", n_train=2, n_val=3, size=SIZE, seed=1, idd_labels=("level3",))
    for name in ("config.yaml", "run.json", "metrics.jsonl", "model.safetensors", "checkpoint.safetensors",
                 "predictions.npz", "metrics.json", "segment.html", "figures/overlays.png", "figures/failures.png",
                 "figures/iou_bars.png", "figures/confusion.png", "figures/curves.png"):
        assert (run / name).stat().st_size > 0, name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["per_class_iou"]) == set(cityscapes().names) and 0 <= metrics["miou"] <= 1
    assert metrics["n_images"] == 3 and metrics["epochs"] == 1 and metrics["augment"] == "crop 32x32 + scale 0.75-1.25 + flip + jitter 0.2"
    record = np.load(run / "predictions.npz")
    assert record["preds"].shape == (3, *SIZE) and record["per_image_cm"].sum() == metrics["n_pixels"]
    html = (run / "segment.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "figure not available" not in html

    assert cli("evaluate", run, "--json") == 0
    own = json.loads(capsys.readouterr().out)
    assert own["miou"] == pytest.approx(metrics["miou"])  # the same weights on the same split

    assert cli("evaluate", run, "--data", idd, "--out", tmp_path / "cross") == 0
    assert "shared classes" in capsys.readouterr().out
    cross = json.loads((tmp_path / "cross" / "metrics.json").read_text())
    assert cross["id_kind"] == "idd-level3" and cross["class_map"] == "idd-level3 -> cityscapes"
    table = cross["cross_dataset"]
    assert [r["class"] for r in table["rows"]] == list(cityscapes().names)
    assert {"road", "sidewalk", "building", "car"} <= set(table["shared_classes"])
    assert (tmp_path / "cross" / "figures" / "cross_dataset.png").stat().st_size > 0
    assert "Cross-dataset" in (tmp_path / "cross" / "segment.html").read_text()


def test_idd_trained_torchvision_model_evaluated_on_cityscapes(tmp_path, capsys):
    idd = make_street_dataset(tmp_path / "idd", "idd", n_train=4, n_val=2, size=SIZE, seed=2, idd_labels=("id",))
    cs = make_street_dataset(tmp_path / "cs", "cityscapes", n_train=1, n_val=2, size=SIZE, seed=3)
    run = tmp_path / "run-idd"
    assert cli("train", "--data", idd, "--model", "deeplabv3", "--out", run, *TINY) == 0
    capsys.readouterr()
    assert json.loads((run / "metrics.json").read_text())["classes"] == list(idd_level3().names)
    assert cli("evaluate", run, "--data", cs, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["class_map"] == "cityscapes -> idd-level3" and result["n_images"] == 2
    assert result["per_class_iou"]["autorickshaw"] is None or result["per_class_iou"]["autorickshaw"] == 0.0


def test_cross_dataset_needs_a_mapping_and_takes_a_yaml(cs_run, tmp_path, capsys):
    _, run = cs_run
    capsys.readouterr()
    folders = make_street_dataset(tmp_path / "f", "folders", n_train=3, n_val=0, size=SIZE, seed=4)
    (folders / "classes.yaml").write_text("classes: [{name: ground, ids: [0, 1]}, {name: stuff, ids: [2, 3, 4, 5]}]\n")
    with pytest.raises(UserError, match="no built-in mapping from train-ids masks .* give --class-map"):
        cli("evaluate", run, "--data", folders)
    mapping = tmp_path / "to-cs.yaml"
    mapping.write_text("classes: [{name: road, ids: [0]}, {name: sidewalk, ids: [1]}, {name: car, ids: [7]}]\n")
    assert cli("evaluate", run, "--data", folders, "--class-map", mapping, "--split", "train", "--json",
               "--out", tmp_path / "eval") == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["classes_present"]) >= {"road", "sidewalk", "car"}
    assert result["per_class_recall"]["building"] is None  # not mapped: never true in the target
    mapping.write_text("classes: [{name: lorry, ids: [7]}]\n")
    with pytest.raises(UserError, match="lorry are not classes of the model; valid: road, sidewalk"):
        cli("evaluate", run, "--data", folders, "--class-map", mapping)


def test_resume_continues_where_the_run_stopped(tmp_path, monkeypatch):
    data = make_street_dataset(tmp_path / "cs", "cityscapes", n_train=4, n_val=1, size=SIZE, seed=5)
    args = ["--data", data, "--epochs", 2, *TINY[2:]]
    assert cli("train", *args, "--out", tmp_path / "whole") == 0
    real, calls = train_module.train_one_epoch, []

    def dies_in_epoch_two(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill after epoch 1's checkpoint
        return real(*a, **k)

    monkeypatch.setattr(train_module, "train_one_epoch", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        cli("train", *args, "--out", tmp_path / "cut")
    monkeypatch.setattr(train_module, "train_one_epoch", real)
    assert [json.loads(line)["epoch"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()] == [1]
    with pytest.raises(UserError, match="already holds a run; continue it with --resume"):
        cli("train", *args, "--out", tmp_path / "cut")
    assert cli("train", "--out", tmp_path / "cut", "--resume") == 0
    lines = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    whole = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in lines] == [1, 2]
    assert lines[1]["train_loss"] == pytest.approx(whole[1]["train_loss"], rel=1e-4)  # same RNG, same weights
    assert lines[1]["val_miou"] == pytest.approx(whole[1]["val_miou"], abs=1e-6)


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="segment train needs --data"):
        cli("train", "--epochs", 1)
    with pytest.raises(UserError, match="Unknown model 'unet'"):
        cli("train", "--data", make_street_dataset(tmp_path / "cs", n_train=2, n_val=1, size=SIZE), "--model", "unet",
            "--out", tmp_path / "r", *TINY)
    with pytest.raises(UserError, match="bad value for 'encoder'"):
        cli("train", "--data", tmp_path / "cs", "--encoder", "vgg", *TINY)
    with pytest.raises(UserError, match="not a finished segmentation run"):
        cli("evaluate", tmp_path)
    with pytest.raises(SystemExit):
        cli("train", "--data", tmp_path / "cs", "--image-size", "big")


def test_report_escapes_names_and_notes_missing_figures(tmp_path):
    from visionlab.segmentation.report import write_report

    names = ["<b>road</b>", "car"]
    record = {"model": "deeplabv3plus", "data": "<script>x</script>", "split": "val", "n_images": 2, "classes": names,
              **segmentation_metrics(np.array([[3, 1], [0, 4]]), names), "class_map": "mine",
              "figures": {"overlays": "figures/overlays.png"}}
    html = write_report(tmp_path, record).read_text()
    assert "<b>road</b>" not in html and "&lt;b&gt;road&lt;/b&gt;" in html and "<script>x" not in html
    assert "figure not available" in html and "<b>0.7750</b>" in html  # mIoU: (3 / 4 + 4 / 5) / 2


def test_synth_command_writes_a_loadable_layout_and_never_overwrites(tmp_path, capsys):
    from visionlab.cli import main

    out = tmp_path / "synthetic"
    assert main(["segment", "synth", str(out), "--train", "3", "--val", "2", "--size", "32x64"]) == 0
    assert (out / "leftImg8bit" / "train").is_dir() and (out / "gtFine" / "val").is_dir()
    assert len(list((out / "leftImg8bit").rglob("*_leftImg8bit.png"))) == 5
    capsys.readouterr()
    assert main(["segment", "synth", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
