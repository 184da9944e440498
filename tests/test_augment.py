"""Contracts of the batch augmentation: shape/range/device, determinism, exact crops and flips,
rotation direction, jitter and erasing semantics, parsing errors, and the preview helper."""
import numpy as np
import pytest
import torch

from visionlab.errors import UserError
from visionlab.training.augment import PRESETS, TOKENS, Augment, alternate_flips, parse_augment, preview

LIST_SPECS = [["crop:4", "flip", "rotate:15", "affine", "jitter:0.2", "erase:0.25"], "crop:2,flip", ["translate:0.1"],
              ["scale:0.8-1.2"], ["shear:20"], ["jitter"], ["erase:1"], ["crop"], ["rotate"]]
ALL_SPECS = list(PRESETS) + LIST_SPECS
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def batch(n=6, c=3, h=32, w=32, seed=0):
    return torch.rand(n, c, h, w, generator=gen(seed))


def shifted(x, dy, dx):
    """(C, H, W) content moved down by dy and right by dx, zero fill."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = x[:, max(-dy, 0):h - max(dy, 0),
                                                                     max(-dx, 0):w - max(dx, 0)]
    return out


@pytest.mark.parametrize("spec", ALL_SPECS, ids=str)
@pytest.mark.parametrize("c,size", [(1, 8), (3, 8), (1, 32), (3, 32), (3, 17)])
@pytest.mark.parametrize("device", DEVICES)
def test_shape_dtype_device_range(spec, c, size, device):
    x = batch(c=c, h=size, w=size + 3).to(device)
    y = parse_augment(spec, flip_allowed=True)(x, gen())
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("spec", ["light", "standard", "strong"])
def test_channels_last_input_gives_the_same_result(spec):
    x = batch()
    aug = parse_augment(spec, True)
    y = aug(x.contiguous(memory_format=torch.channels_last), gen())
    assert y.shape == x.shape
    torch.testing.assert_close(y, aug(x, gen()))


@pytest.mark.parametrize("spec", ["light", "standard", "strong"])
def test_autocast_computes_in_float32(spec):
    x = batch()
    aug = parse_augment(spec, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = aug(x, gen())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, aug(x, gen()))


def test_half_precision_input_keeps_its_dtype():
    y = PRESETS["strong"](batch().to(torch.bfloat16), gen())
    assert y.dtype == torch.bfloat16 and y.min() >= 0 and y.max() <= 1


def test_none_returns_input_untouched_and_leaves_generator_alone():
    x, g = batch(), gen()
    state = g.get_state()
    for spec in ("none", [], ""):
        aug = parse_augment(spec, True)
        assert aug.is_identity and aug.describe() == "none"
        assert aug(x, g) is x
    assert torch.equal(g.get_state(), state)
    assert not any(PRESETS[k].is_identity for k in ("light", "standard", "strong"))


@pytest.mark.parametrize("spec", ["light", "standard", "strong"] + LIST_SPECS[:1])
def test_same_seed_same_output_different_seed_different(spec):
    aug, x = parse_augment(spec, True), batch()
    assert torch.equal(aug(x, gen(1)), aug(x, gen(1)))
    assert not torch.equal(aug(x, gen(1)), aug(x, gen(2)))


def test_generator_state_resumes_the_stream():
    aug, x, g = PRESETS["strong"], batch(), gen(3)
    aug(x, g)
    state = g.get_state()
    second = aug(x, g)
    assert not torch.equal(second, aug(x, g))  # successive batches differ
    g.set_state(state)  # as restored from a checkpoint
    assert torch.equal(second, aug(x, g))


def test_every_sample_gets_its_own_parameters():
    x = batch(n=1).expand(16, -1, -1, -1)
    y = PRESETS["standard"](x, gen()).flatten(1)
    distinct = torch.cdist(y, y) > 1e-3
    assert distinct.sum() == 16 * 15  # every pair differs


@pytest.mark.parametrize("pad", [1, 3])
def test_crop_is_an_exact_integer_shift_with_zero_fill(pad):
    x = batch(n=40, h=12, w=10) + 0.01  # no zeros in the input, so the fill is visible
    y = Augment(crop_px=pad)(x, gen())
    seen = set()
    for xi, yi in zip(x, y):
        matches = [(dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)
                   if torch.equal(yi, shifted(xi, dy, dx))]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) >= (2 * pad + 1) ** 2 // 2  # the shifts spread over the window


def test_reflect_fills_the_border_with_the_mirrored_image():
    """grid_sample's 'reflection' at align_corners=False mirrors about the image edge: a shift
    right by 2 shows columns 1, 0, then the image (the edge pixel repeats)."""
    x = batch(n=40, h=8, w=8) + 0.01
    y = parse_augment("crop:2,reflect", True)(x, gen())
    assert (y > 0).all()  # no black border anywhere
    seen = 0
    for xi, yi in zip(x, y):
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                rows = [min(max(r - dy, -1 - (r - dy)), 2 * 8 - 1 - (r - dy)) for r in range(8)]
                cols = [min(max(c - dx, -1 - (c - dx)), 2 * 8 - 1 - (c - dx)) for c in range(8)]
                if torch.equal(yi, xi[:, rows][:, :, cols]):
                    seen += 1
    assert seen == len(x)  # every output is exactly one mirrored-border shift of its input
    assert "mirrored border" in parse_augment("crop:2,reflect", True).describe()


def test_alternating_flip_mirrors_each_image_on_every_other_epoch():
    x = batch(n=400, h=9, w=9)
    index = torch.arange(1000, 1400)
    aug = parse_augment(["flip:alternate"], flip_allowed=False)
    assert aug.flip and aug.flip_alternate and aug.describe() == "flip(alternate epochs)"
    mirrored = []
    for epoch in range(4):
        y = aug(x, gen(epoch), index=index, epoch=epoch)  # the generator's draw does not decide it
        flipped = (y == x.flip(-1)).flatten(1).all(1)
        assert ((y == x).flatten(1).all(1) ^ flipped).all()
        mirrored.append(flipped)
    assert 0.4 < mirrored[0].float().mean() < 0.6
    assert torch.equal(mirrored[0], ~mirrored[1]) and torch.equal(mirrored[0], mirrored[2])
    assert torch.equal(mirrored[1], mirrored[3])
    assert torch.equal(alternate_flips(index[:7], 5), mirrored[1][:7])  # a pure function of index and epoch
    assert 0.3 < (aug(x, gen()) == x.flip(-1)).flatten(1).all(1).float().mean() < 0.7  # no index: at random


def test_translate_fraction_rounds_to_pixels_and_is_at_least_one():
    x = batch(n=30, h=8, w=8) + 0.01
    y = PRESETS["light"](x, gen())  # 8 / 16 = 0.5 px -> 1 px
    for xi, yi in zip(x, y):
        assert any(torch.equal(yi, shifted(f, dy, dx)) for f in (xi, xi.flip(-1))
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def test_flip_is_exact_and_about_half():
    x = batch(n=400, h=9, w=9)
    y = Augment(flip=True)(x, gen())
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and not (same & mirrored).any()
    assert 0.4 < mirrored.float().mean() < 0.6


def half_bright(n=64, c=1):
    """Left half white, right half black: a flip is the only way to make the right side brighter."""
    x = torch.zeros(n, c, 32, 32)
    x[..., :16] = 1
    return x


def mirrored_fraction(aug, x):
    y = aug(x, gen())
    return (y[..., 16:].mean((1, 2, 3)) > y[..., :16].mean((1, 2, 3))).float().mean().item()


@pytest.mark.parametrize("preset", ["light", "standard", "strong"])
def test_flip_allowed_false_removes_flip_from_presets(preset):
    assert "flip" in parse_augment(preset, True).describe()
    assert "flip" not in parse_augment(preset, False).describe()
    x = half_bright(c=3)
    assert mirrored_fraction(parse_augment(preset, False), x) == 0
    assert 0.25 < mirrored_fraction(parse_augment(preset, True), x) < 0.75


def test_explicit_flip_token_flips_even_when_not_allowed():
    aug = parse_augment("crop:2,flip", flip_allowed=False)
    assert aug.flip and "flip" in aug.describe()
    assert mirrored_fraction(aug, half_bright()) > 0.25


@pytest.mark.parametrize("angle,k", [(90, 1), (-90, -1)])
def test_rotation_is_counter_clockwise_like_rot90(angle, k):
    x = batch(n=3, h=16, w=16)
    y = Augment(rotate=(angle, angle))(x, gen())
    expected = torch.rot90(x, k, dims=(-2, -1))
    torch.testing.assert_close(y[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-4, rtol=0)
    assert not torch.allclose(y, torch.rot90(x, -k, dims=(-2, -1)), atol=0.1)


def test_rotation_keeps_non_square_images_undistorted():
    x = torch.zeros(1, 1, 20, 40)
    x[..., 9:11, 10:30] = 1  # a horizontal bar, 20 px long
    y = Augment(rotate=(90, 90))(x, gen())
    rows, cols = torch.nonzero(y[0, 0] > 0.5, as_tuple=True)
    assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 == 2  # now vertical, same length


def test_scale_enlarges_content():
    x = torch.zeros(1, 1, 32, 32)
    x[..., 12:20, 12:20] = 1
    y = Augment(scale=(2.0, 2.0))(x, gen())
    assert (y > 0.5).sum() == 4 * (x > 0.5).sum()


def test_brightness_multiplies_each_image_by_one_factor():
    x = batch(n=8, c=3) * 0.5 + 0.1  # in [0.1, 0.6]: x 1.5 stays below 1, nothing clamps
    y = Augment(brightness=0.5)(x, gen())
    ratio = y / x  # (B, C, H, W)
    per_image = ratio.flatten(1)
    torch.testing.assert_close(per_image, per_image[:, :1].expand_as(per_image))
    assert per_image[:, 0].std() > 0.05 and (0.5 <= per_image[:, 0]).all() and (per_image[:, 0] <= 1.5).all()


def test_contrast_keeps_each_images_mean_and_saturation_keeps_grey():
    x = batch(n=8, c=1) * 0.2 + 0.4
    y = Augment(contrast=0.5)(x, gen())
    torch.testing.assert_close(y.mean((1, 2, 3)), x.mean((1, 2, 3)))
    assert not torch.allclose(y, x)
    grey = x.expand(-1, 3, -1, -1)
    torch.testing.assert_close(Augment(saturation=0.9)(grey, gen()), grey)


@pytest.mark.parametrize("c", [1, 3])
def test_jitter_stays_in_range(c):
    x = batch(n=32, c=c)
    y = parse_augment(["jitter:1"], True)(x, gen())
    assert y.min() >= 0 and y.max() <= 1 and (y == 1).any() and not torch.allclose(y, x)


@pytest.mark.parametrize("c", [1, 3])
def test_erase_fills_one_constant_rectangle(c):
    x = batch(n=32, c=c, h=24, w=20)
    y = Augment(erase_p=1.0, erase_area=(0.05, 0.2))(x, gen())
    for xi, yi in zip(x, y):
        changed = torch.nonzero((yi != xi).any(0))
        top, left = changed.min(0).values
        bottom, right = changed.max(0).values + 1
        box = yi[:, top:bottom, left:right]
        assert (box == box[:, :1, :1]).all()  # the whole bounding box is one colour
        assert 0.02 <= box[0].numel() / (24 * 20) <= 0.3


def test_erase_probability_and_fixed_fill():
    x = batch(n=200) + 0.01
    y = Augment(erase_p=0.5, erase_value=0.0)(x, gen())
    erased = (y == 0).flatten(1).any(1)
    assert 0.35 < erased.float().mean() < 0.65
    assert torch.equal(y[~erased], x[~erased])


@pytest.mark.parametrize("spec,fields", [
    ("crop:4,flip", dict(crop_px=4, flip=True)),
    (["crop:4", "flip"], dict(crop_px=4, flip=True)),
    (" Crop , FLIP ", dict(translate=1 / 8, flip=True)),
    (["affine"], dict(rotate=(-10, 10), scale=(0.9, 1.1), shear=(-10, 10))),
    (["rotate"], dict(rotate=(-15, 15))),
    (["jitter:0.3"], dict(brightness=0.3, contrast=0.3, saturation=0.3)),
    (["erase"], dict(erase_p=0.5)),
    (["scale:0.8-1.25"], dict(scale=(0.8, 1.25))),
    (["affine", "rotate:5"], dict(rotate=(-5, 5), scale=(0.9, 1.1), shear=(-10, 10))),  # later wins
    (["crop:2", "reflect", "flip:alternate"], dict(crop_px=2, reflect=True, flip=True, flip_alternate=True)),
])
def test_list_form_parses_to_fields(spec, fields):
    assert parse_augment(spec, flip_allowed=False) == Augment(**fields)


def test_presets_have_the_documented_parameters():
    assert PRESETS["light"] == Augment(translate=1 / 16, flip=True)
    std = PRESETS["standard"]
    assert (std.translate, std.rotate, std.scale, std.brightness, std.contrast, std.saturation) == (
        1 / 8, (-10, 10), (0.9, 1.1), 0.2, 0.2, 0)
    assert PRESETS["strong"].erase_p == 0.5 and PRESETS["strong"].shear == (-10, 10)
    assert parse_augment("crop:4,flip,rotate:15", True).describe() == "crop(pad=4) + flip + rotate(±15°)"


@pytest.mark.parametrize("spec,named", [
    ("blur", "blur"), (["crop:x"], "crop:x"), (["rotate:-5"], "rotate:-5"), (["flip:2"], "flip:2"), (["reflect:1"], "reflect:1"),
    (["scale:1.2"], "scale:1.2"), (["scale:1.2-0.8"], "scale:1.2-0.8"), (["jitter:2"], "jitter:2"),
    (["erase:1.5"], "erase:1.5"), (["crop:2.5"], "crop:2.5"), ("standard,flip", "standard"),
    ("strongest", "strongest"), (["crop:4", "translate:nan"], "translate:nan"),
])
def test_bad_tokens_name_the_token_and_the_valid_choices(spec, named):
    with pytest.raises(UserError) as info:
        parse_augment(spec, True)
    message = str(info.value)
    assert f"'{named}'" in message
    assert all(token in message for token in TOKENS) and all(name in message for name in PRESETS)


def test_bad_direct_construction_is_a_user_error():
    with pytest.raises(UserError, match="rotate"):
        Augment(rotate=(10, -10))
    with pytest.raises(UserError, match="not both"):
        Augment(crop_px=2, translate=0.1)
    with pytest.raises(UserError, match="none, light, standard, strong"):
        parse_augment(42, True)


def test_preview_is_what_training_sees():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 12, 12, 3), dtype=np.uint8)
    out = preview(images, "strong", flip_allowed=True, seed=7, n_variants=4)
    assert out.shape == (4, 5, 12, 12, 3) and out.dtype == np.uint8
    assert np.array_equal(out, preview(images, "strong", True, seed=7, n_variants=4))
    # the same code path: uint8 -> float / 255 -> one Augment call per variant
    g, x = gen(7), torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    first = PRESETS["strong"](x, g)
    assert np.abs(out[0].astype(int) - (first * 255).round().permute(0, 2, 3, 1).numpy()).max() <= 1
    assert not np.array_equal(out[0], out[1])  # variants differ
    assert np.array_equal(preview(images, "none", True, 0, 2)[1], images)


def test_preview_gray_images():
    images = np.full((2, 8, 8, 1), 128, np.uint8)
    assert preview(images, "light", flip_allowed=False, seed=0, n_variants=3).shape == (3, 2, 8, 8, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("gen_device", ["cpu", "cuda"])
def test_cuda_batch_with_cpu_or_cuda_generator(gen_device):
    x = batch().cuda()
    g = torch.Generator(device=gen_device).manual_seed(0)
    y = PRESETS["strong"](x, g)
    assert y.device == x.device and y.min() >= 0 and y.max() <= 1
    if gen_device == "cpu":  # a CPU generator gives the same parameters on any device
        torch.testing.assert_close(y.cpu(), PRESETS["strong"](x.cpu(), gen(0)), atol=1e-4, rtol=0)
