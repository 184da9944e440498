"""Data augmentation of the whole batch at once, on the training device.

A batch arrives as float (B, C, H, W) in [0, 1] (uint8 converted on the device, before
normalisation) and leaves with the same shape, dtype and device, still in [0, 1]. Every
per-sample random parameter comes from ONE draw on the ``torch.Generator`` the caller passes,
so one seed drives a run, and saving ``generator.get_state()`` in a checkpoint makes it
resumable. There is no Python loop over samples; each step is a few tensor ops on the batch:

1. geometry: random crop (== integer translation within +-pad, zero or mirrored fill), horizontal flip
   (at random, or airbench's alternating flip: each image mirrored on every other epoch),
   rotation, scale and shear fold into one (B, 2, 3) affine matrix per sample, applied with one
   ``F.affine_grid`` + ``F.grid_sample``. With only integer shifts and flips every sample point
   is a pixel centre, so 'nearest' copies pixels exactly; anything else uses 'bilinear'.
2. colour jitter: brightness (multiply), contrast (around the image's grey mean), saturation
   (blend with grey; 3 channels only), each clamped to [0, 1] as torchvision does.
3. random erasing: one rectangle per chosen sample, from broadcast coordinate comparisons,
   filled with a random colour per sample (or a fixed value).

``parse_augment`` turns a spec (a preset name, a list of tokens, or a comma string) into an
``Augment``; ``preview`` runs the same code on a few uint8 images for a look before training.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError

__all__ = ["Augment", "PRESETS", "TOKENS", "parse_augment", "preview"]

# Columns of the (B, _N_COLS + C) uniform draw, one per random parameter. Every column is drawn
# whether its step is on or off, so each call advances the generator by the same amount.
TX, TY, FLIP, ANGLE, SCALE, SHEAR, BRIGHT, CONTRAST, SAT, ERASE, AREA, RATIO, TOP, LEFT = range(14)
_N_COLS = 14  # then C columns: the erase fill colour
ERASE_RATIO = (0.3, 3.3)  # erased rectangle's height/width range, log-uniform (torchvision's)
GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights for RGB -> grey


@dataclass(frozen=True)
class Augment:
    """Augmentation parameters; ``aug(batch, generator)`` applies them. Defaults: identity."""

    crop_px: int = 0  # max integer translation in pixels (a random crop of the zero-padded image)
    translate: float = 0.0  # the same as a fraction of each side, rounded, at least 1 px; 0: off
    flip: bool = False  # mirror left-right with probability 1/2
    flip_alternate: bool = False  # with flip: each image mirrored on alternate epochs instead (airbench)
    reflect: bool = False  # shifted-in border pixels mirror the image (grid_sample 'reflection') instead of 0
    rotate: tuple[float, float] = (0.0, 0.0)  # angle range in degrees, counter-clockwise positive
    scale: tuple[float, float] = (1.0, 1.0)  # zoom range; > 1 enlarges the content
    shear: tuple[float, float] = (0.0, 0.0)  # horizontal shear angle range in degrees
    brightness: float = 0.0  # multiply by a factor in [1 - b, 1 + b]
    contrast: float = 0.0  # scale deviations from the grey mean by a factor in [1 - c, 1 + c]
    saturation: float = 0.0  # blend with grey by a factor in [1 - s, 1 + s]; 3-channel images only
    erase_p: float = 0.0  # probability that a sample gets one erased rectangle
    erase_area: tuple[float, float] = (0.02, 0.2)  # erased area range, fraction of the image
    erase_value: float | None = None  # fill value in [0, 1]; None: a uniform random colour per sample

    def __post_init__(self):
        for name in ("rotate", "scale", "shear", "erase_area"):  # YAML gives lists
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        _check(isinstance(self.crop_px, int) and not isinstance(self.crop_px, bool) and self.crop_px >= 0,
               f"crop must be whole pixels >= 0, got {self.crop_px}")
        _check(0 <= self.translate <= 0.5, f"translate must be a fraction of the side in [0, 0.5], got {self.translate}")
        _check(not (self.crop_px and self.translate), "set crop (pixels) or translate (fraction), not both")
        _check(self.flip or not self.flip_alternate, "flip_alternate needs flip")
        _check_range("rotate", self.rotate, -180, 180)
        _check_range("scale", self.scale, 1e-3, 10)
        _check_range("shear", self.shear, -45, 45)
        for name in ("brightness", "contrast", "saturation", "erase_p"):
            _check(0 <= getattr(self, name) <= 1, f"{name} must be in [0, 1], got {getattr(self, name)}")
        _check_range("erase area", self.erase_area, 1e-6, 1)
        _check(self.erase_value is None or 0 <= self.erase_value <= 1,
               f"erase value must be in [0, 1], got {self.erase_value}")

    @property
    def is_identity(self) -> bool:
        """True when every step is off: the batch comes back untouched."""
        return not (self._moves or self.brightness or self.contrast or self.saturation or self.erase_p)

    @property
    def _moves(self) -> bool:
        return bool(self.crop_px or self.translate or self.flip or self._bends)

    @property
    def _bends(self) -> bool:
        """True when some transform is not an integer shift or a flip (so needs interpolation)."""
        return self.rotate != (0.0, 0.0) or self.scale != (1.0, 1.0) or self.shear != (0.0, 0.0)

    def describe(self) -> str:
        """One line for logs and reports, e.g. 'crop(pad=4) + flip + rotate(±15°)'."""
        parts = []
        border = ", mirrored border" if self.reflect else ""
        if self.crop_px:
            parts.append(f"crop(pad={self.crop_px}{border})")
        elif self.translate:  # 'side/8' reads better than '0.125×side'
            inverse = 1 / self.translate
            side = f"side/{inverse:g}" if inverse.is_integer() else f"{self.translate:g}×side"
            parts.append(f"crop(pad={side}{border})")
        if self.flip:
            parts.append("flip(alternate epochs)" if self.flip_alternate else "flip")
        for name, (lo, hi) in (("rotate", self.rotate), ("shear", self.shear)):
            if (lo, hi) != (0, 0):
                parts.append(f"{name}(±{hi:g}°)" if lo == -hi else f"{name}({lo:g}°–{hi:g}°)")
        if self.scale != (1, 1):
            parts.append(f"scale({self.scale[0]:g}–{self.scale[1]:g})")
        jitter = {k: getattr(self, k) for k in ("brightness", "contrast", "saturation") if getattr(self, k)}
        if jitter:
            parts.append("jitter(" + ", ".join(f"{k}={v:g}" for k, v in jitter.items()) + ")")
        if self.erase_p:
            fill = "" if self.erase_value is None else f", fill={self.erase_value:g}"
            parts.append(f"erase(p={self.erase_p:g}, area={self.erase_area[0]:g}–{self.erase_area[1]:g}{fill})")
        return " + ".join(parts) or "none"

    def __call__(self, x: torch.Tensor, generator: torch.Generator, index: torch.Tensor | None = None,
                 epoch: int = 0) -> torch.Tensor:
        """(B, C, H, W) float in [0, 1] -> the same shape, dtype and device, augmented.
        ``index`` (B,): the images' places in the training set, and ``epoch``, for alternating
        flips; without ``index`` they flip at random."""
        if self.is_identity:
            return x
        if x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"augment expects a float (B, C, H, W) batch, got {x.dtype} {tuple(x.shape)}")
        n, c = x.shape[:2]
        no_autocast = (torch.autocast(x.device.type, enabled=False)
                       if torch.amp.is_autocast_available(x.device.type) else contextlib.nullcontext())
        with no_autocast:  # float32 throughout: bf16 sample points would misplace pixels
            # All random parameters in one draw, on the generator's own device (CPU or the
            # training device), then moved: (B, 14 + C) uniforms in [0, 1).
            u = torch.rand(n, _N_COLS + c, generator=generator, device=generator.device).to(x.device)
            if self.flip_alternate and index is not None:
                u[:, FLIP] = torch.where(alternate_flips(index.to(x.device), epoch), 0.25, 0.75)  # < 0.5 mirrors
            y = x.float()
            if self._moves:
                y = self._geometry(y, u)
            if self.brightness or self.contrast or self.saturation:
                y = self._jitter(y, u)
            if self.erase_p:
                y = self._erase(y, u)
        return y.to(x.dtype)

    def _geometry(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        theta = _theta(self, u, h, w)  # (B, 2, 3)
        grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)  # (B, H, W, 2) in [-1, 1]
        mode = "bilinear" if self._bends else "nearest"
        y = F.grid_sample(x, grid, mode=mode, padding_mode="reflection" if self.reflect else "zeros",
                          align_corners=False)
        return y.clamp_(0, 1) if self._bends else y  # bilinear weights may sum to 1 + eps

    def _jitter(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]

        def factor(col: int, strength: float) -> torch.Tensor:  # (B, 1, 1, 1) in [1 - s, 1 + s]
            return (1 + strength * (2 * u[:, col] - 1)).view(n, 1, 1, 1)

        if self.brightness:
            x = (x * factor(BRIGHT, self.brightness)).clamp_(0, 1)
        if self.contrast:
            mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
            x = torch.lerp(mean, x, factor(CONTRAST, self.contrast)).clamp_(0, 1)
        if self.saturation and c == 3:  # a grey image has no saturation to change
            x = torch.lerp(_grey(x), x, factor(SAT, self.saturation)).clamp_(0, 1)
        return x

    def _erase(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        lo, hi = self.erase_area
        area = (lo + (hi - lo) * u[:, AREA]) * (h * w)  # (B,) pixels
        log_lo, log_hi = math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, RATIO])  # (B,) height / width
        eh = (area * ratio).sqrt().round().clamp(1, h)  # (B,) rectangle height, whole pixels
        ew = (area / ratio).sqrt().round().clamp(1, w)
        top = torch.floor(u[:, TOP] * (h - eh + 1)).view(n, 1, 1, 1)  # uniform over valid positions
        left = torch.floor(u[:, LEFT] * (w - ew + 1)).view(n, 1, 1, 1)
        ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
        xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
        inside = ((ys >= top) & (ys < top + eh.view(n, 1, 1, 1))
                  & (xs >= left) & (xs < left + ew.view(n, 1, 1, 1)))  # (B, 1, H, W)
        inside &= (u[:, ERASE] < self.erase_p).view(n, 1, 1, 1)  # only the chosen samples
        fill = u[:, _N_COLS:].view(n, c, 1, 1) if self.erase_value is None else x.new_tensor(self.erase_value)
        return torch.where(inside, fill, x)


def alternate_flips(index: torch.Tensor, epoch: int) -> torch.Tensor:
    """(B,) bool: which images are mirrored this epoch under airbench's alternating flip. Each
    image has a fixed coin (the top bit of a multiplicative hash of its index: no state to keep
    or checkpoint) and is mirrored when the coin differs from the epoch's parity, so every image
    is seen both ways in any two consecutive epochs; random flips leave a quarter unseen one way."""
    coin = (index.long() * 2654435761) % 2**32 >= 2**31  # Knuth's multiplicative hash, top bit
    return coin ^ bool(epoch % 2)


def _theta(aug: Augment, u: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per-sample (B, 2, 3) matrices mapping output to input positions, in affine_grid's units."""
    pad_h, pad_w = _pad(aug, h, w)
    # Integer shifts in [-pad, pad]: the content moves right by tx, down by ty.
    tx = torch.floor(u[:, TX] * (2 * pad_w + 1)).clamp(max=2 * pad_w) - pad_w  # (B,)
    ty = torch.floor(u[:, TY] * (2 * pad_h + 1)).clamp(max=2 * pad_h) - pad_h
    sx = 1 - 2 * (u[:, FLIP] < 0.5).float() if aug.flip else torch.ones_like(tx)  # -1: mirrored
    angle = torch.deg2rad(aug.rotate[0] + (aug.rotate[1] - aug.rotate[0]) * u[:, ANGLE])
    zoom = aug.scale[0] + (aug.scale[1] - aug.scale[0]) * u[:, SCALE]
    k = torch.tan(torch.deg2rad(aug.shear[0] + (aug.shear[1] - aug.shear[0]) * u[:, SHEAR]))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Forward map on centred pixel coordinates (x right, y down): out = R Sh Z F in + t, with
    # R = [[cos, sin], [-sin, cos]] turning the content counter-clockwise on screen. grid_sample
    # wants the inverse, in = F Z^-1 Sh^-1 R^-1 (out - t), written out here as M (B, 2, 2):
    m = torch.stack([torch.stack([sx * (cos - k * sin), sx * (-sin - k * cos)], -1),
                     torch.stack([sin, cos], -1)], -2) / zoom.view(-1, 1, 1)
    # Normalised coordinates are pixels / half-side (align_corners=False puts pixel centres at
    # (2i + 1) / W - 1), so M_n = D^-1 M D with D = diag(W/2, H/2), and b_n = -D^-1 M t.
    half = torch.tensor([w / 2, h / 2], device=u.device)  # (2,) for (x, y)
    m_n = m * half.view(1, 1, 2) / half.view(1, 2, 1)
    b_n = -(m @ torch.stack([tx, ty], -1).unsqueeze(-1)).squeeze(-1) / half  # (B, 2)
    return torch.cat([m_n, b_n.unsqueeze(-1)], dim=-1)


def _pad(aug: Augment, h: int, w: int) -> tuple[int, int]:
    """The max integer shift (rows, columns) for an H x W image."""
    if aug.crop_px:
        return aug.crop_px, aug.crop_px
    if aug.translate:  # round half up, at least one pixel: 1/16 of 8 px is still a shift
        return max(1, math.floor(aug.translate * h + 0.5)), max(1, math.floor(aug.translate * w + 0.5))
    return 0, 0


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W) luma for RGB, the channel mean otherwise."""
    if x.shape[1] == 3:
        return (x * x.new_tensor(GREY).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    return x.mean(dim=1, keepdim=True)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(f"augment: {message}")


def _check_range(name: str, pair: tuple[float, ...], lo: float, hi: float) -> None:
    _check(len(pair) == 2 and lo <= pair[0] <= pair[1] <= hi,
           f"{name} must be a range LO <= HI within [{lo:g}, {hi:g}], got {pair}")


# Presets carry flip=True; parse_augment drops it where flips change the class (digits).
PRESETS = {
    # identity: the batch is returned untouched and the generator is not used
    "none": Augment(),
    # integer shifts within +-1/16 of the side (at least 1 px) and mirror images
    "light": Augment(translate=1 / 16, flip=True),
    # airbench-style crop of 1/8 side, mirror, a mild affine wobble and brightness/contrast
    "standard": Augment(translate=1 / 8, flip=True, rotate=(-10, 10), scale=(0.9, 1.1),
                        brightness=0.2, contrast=0.2),
    # as standard, stronger, plus shear, saturation and random erasing of 2-20% of the image
    "strong": Augment(translate=1 / 8, flip=True, rotate=(-15, 15), scale=(0.85, 1.15), shear=(-10, 10),
                      brightness=0.4, contrast=0.4, saturation=0.4, erase_p=0.5, erase_area=(0.02, 0.2)),
}

TOKENS = {
    "crop[:PAD]": "integer shifts within +-PAD pixels, zero fill (default 1/8 of the side)",
    "translate[:FRAC]": "integer shifts within +-FRAC of the side (default 0.125)",
    "flip": "mirror left-right half the time (even for digit datasets)",
    "flip:alternate": "mirror each image on every other epoch (airbench's alternating flip)",
    "reflect": "shifts fill the border with the mirrored image instead of black",
    "rotate[:DEG]": "rotate within +-DEG degrees (default 15)",
    "scale[:LO-HI]": "zoom within LO..HI (default 0.9-1.1)",
    "shear[:DEG]": "shear within +-DEG degrees (default 10)",
    "affine": "rotate:10 + scale:0.9-1.1 + shear:10",
    "jitter[:S]": "brightness, contrast and saturation within 1 +- S (default 0.2)",
    "erase[:P]": "erase a random rectangle of 2-20% of the image with probability P (default 0.5)",
}
_VALID = f"valid tokens: {', '.join(TOKENS)}; presets (on their own): {', '.join(PRESETS)}"


def parse_augment(spec, flip_allowed: bool) -> Augment:
    """A preset name, a list of tokens or a comma string of tokens -> an ``Augment``.

    ``flip_allowed=False`` (digits: a mirrored 2 is not a 2) removes flips from presets; an
    explicit 'flip' token still asks for them. Later tokens override earlier ones.
    """
    if isinstance(spec, Augment):
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in PRESETS:
            return PRESETS[key] if flip_allowed else dataclasses.replace(PRESETS[key], flip=False)
        tokens = key.split(",")
    elif isinstance(spec, (list, tuple)):
        tokens = [str(t) for t in spec]
    else:
        raise UserError(f"augment must be a preset name or a list of tokens, got {type(spec).__name__}; {_VALID}")
    fields: dict = {}
    for token in (t.strip().lower() for t in tokens):
        if not token:
            continue
        try:
            _apply_token(fields, token)
            Augment(**fields)  # check ranges now, so the error names this token
        except ValueError as exc:  # UserError included
            reason = str(exc).removeprefix("augment: ")
            raise UserError(f"augment: bad token '{token}': {reason}; {_VALID}") from None
    return Augment(**fields)


def _apply_token(fields: dict, token: str) -> None:
    """Update ``fields`` (Augment keyword arguments) for one token like 'crop:4'."""
    name, _, arg = token.partition(":")
    name, arg = name.strip(), arg.strip()
    if name in ("affine", "reflect") and arg or name == "flip" and arg not in ("", "alternate"):
        raise ValueError(f"'{name}' takes no value" if name != "flip" else "'flip' takes no value or 'alternate'")
    if name == "crop":  # crop:PAD in pixels; plain crop scales with the image (1/8 of the side)
        fields.update(crop_px=int(_number(arg, whole=True)) if arg else 0, translate=0.0 if arg else 1 / 8)
    elif name == "translate":
        fields.update(crop_px=0, translate=_number(arg) if arg else 1 / 8)
    elif name == "flip":
        fields.update(flip=True, flip_alternate=arg == "alternate")
    elif name == "reflect":
        fields["reflect"] = True
    elif name in ("rotate", "shear"):
        deg = _number(arg) if arg else {"rotate": 15.0, "shear": 10.0}[name]
        fields[name] = (-deg, deg)
    elif name == "scale":
        lo, sep, hi = arg.partition("-")
        if arg and not sep:
            raise ValueError(f"expected scale:LO-HI like scale:0.9-1.1, got '{arg}'")
        fields["scale"] = (_number(lo), _number(hi)) if arg else (0.9, 1.1)
    elif name == "affine":
        fields.update(rotate=(-10, 10), scale=(0.9, 1.1), shear=(-10, 10))
    elif name == "jitter":
        s = _number(arg) if arg else 0.2
        fields.update(brightness=s, contrast=s, saturation=s)
    elif name == "erase":
        fields["erase_p"] = _number(arg) if arg else 0.5
    elif name in PRESETS:
        raise ValueError("presets cannot be combined with tokens; give the preset name on its own")
    else:
        raise ValueError("unknown preset or token")


def _number(text: str, whole: bool = False) -> float:
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a {'whole number' if whole else 'number'}") from None
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"expected a number >= 0, got '{text}'")
    return value


def preview(images_uint8: np.ndarray, spec, flip_allowed: bool, seed: int = 0, n_variants: int = 8) -> np.ndarray:
    """(N, H, W, C) uint8 -> (n_variants, N, H, W, C) uint8: what training would see.

    The conversion matches the training loop's (permute, float, / 255), then one ``Augment``
    call per variant, as one call per batch in training, from a CPU generator seeded ``seed``.
    """
    if images_uint8.ndim != 4 or images_uint8.dtype != np.uint8:
        raise ValueError(f"preview expects (N, H, W, C) uint8 images, got {images_uint8.dtype} {images_uint8.shape}")
    aug = parse_augment(spec, flip_allowed)
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).permute(0, 3, 1, 2).float().div_(255.0)  # (N, C, H, W)
    generator = torch.Generator().manual_seed(seed)
    out = torch.stack([aug(x, generator) for _ in range(n_variants)])  # (V, N, C, H, W)
    return out.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
