"""Image decoding: file bytes -> one uint8 (H, W, C) array, with every conversion a real
dataset needs (EXIF orientation, CMYK, palette, alpha on white, 16-bit), and the parallel
engine that decodes a whole dataset once.

PIL does the decoding. What is written here is the policy around it (which conversions,
what counts as a bad file) and the process pool that writes results straight into the
output arrays with a bounded window of work in flight, so a large archive never sits in
memory whole.
"""
from __future__ import annotations

import io
import os
import warnings
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .jfif .bmp .gif .tif .tiff .webp .ppm .pgm .pbm .pnm".split()
)
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
CHUNK = 256  # items per task sent to a worker: large enough to hide the IPC cost


@dataclass(frozen=True)
class Target:
    """What every decoded image becomes."""

    channels: int  # 1 or 3
    size: tuple[int, int] | None  # (H, W) the image must already have, when not resizing
    resize: int | None  # square side: resize the short side, centre-crop; None keeps the size
    mixed_channels: bool = False  # channels == 1 but colour images come back as 3 (auto mode)


def is_gray(mode: str) -> bool:
    return mode in GRAY_MODES


def _to_mode(im: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode to 'L' or 'RGB'; alpha is composited on white, 16-bit is scaled."""
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        a = np.asarray(im)
        if mode.startswith("I;16") or (mode == "I" and (im.format == "PNG" or a.max() > 255)):
            a = (a.astype(np.float32) / 257.0).round()  # 16-bit: 65535 -> 255, scaled not clipped
        elif mode == "F" and a.size and a.max() <= 1.0:
            a = a * 255.0
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    elif mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    if im.mode in ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba).convert("RGB")
        if is_gray(mode):
            im = im.convert("L")
    want = "L" if channels == 1 else "RGB"
    return im if im.mode == want else im.convert(want)  # CMYK, YCbCr, LAB, HSV -> RGB


def fit_square(im: Image.Image, side: int) -> Image.Image:
    """Resize the short side to `side` keeping the aspect ratio, then centre-crop a square."""
    if im.size == (side, side):
        return im
    return ImageOps.fit(im, (side, side), Image.Resampling.BICUBIC, centering=(0.5, 0.5))


def _describe(exc: BaseException, n_bytes: int) -> str:
    """A reason a user can act on, for a file that will not decode."""
    if n_bytes == 0:
        return "empty file (0 bytes)"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"decompression bomb refused, not decoded ({exc})"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image PIL can read (wrong extension or corrupt header)"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"corrupt or truncated image: {text}"


def decode_image(data: bytes, target: Target) -> tuple[np.ndarray | None, tuple[int, int], str]:
    """Decode one image. Returns (array or None, original (H, W), error reason or '')."""
    try:
        with warnings.catch_warnings():
            # Above MAX_IMAGE_PIXELS PIL only warns; a bomb must be refused before decoding.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            hw = (im.height, im.width)
            orientation = im.getexif().get(0x0112, 1)  # EXIF orientation; 1 = upright
            if target.resize is None and target.size is not None:
                upright = hw[::-1] if orientation in (5, 6, 7, 8) else hw
                if upright != target.size:
                    return None, hw, ""  # another size: the caller picks a size and decodes again
            if target.resize is not None and im.format == "JPEG":
                im.draft("RGB", (target.resize, target.resize))  # DCT-domain downscale: faster
            if orientation != 1:
                im = ImageOps.exif_transpose(im)  # orientation 6 etc.: pixels as the camera meant
            channels = 3 if target.mixed_channels and not is_gray(im.mode) else target.channels
            im = _to_mode(im, channels)
            if target.resize is not None:
                im = fit_square(im, target.resize)
            array = np.asarray(im, dtype=np.uint8)
        return (array[:, :, None] if array.ndim == 2 else array), hw, ""
    except MemoryError:
        raise
    except Exception as exc:  # untrusted bytes: any decoder failure is a bad file, not a crash
        return None, (0, 0), _describe(exc, len(data))


def probe_image(data: bytes) -> tuple[tuple[int, int], bool] | None:
    """Header only: the upright (H, W) and whether the image is grayscale; None if unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            hw = (im.height, im.width)
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                hw = hw[::-1]
            return hw, is_gray(im.mode)
    except Exception:
        return None


def _read(item: str | bytes) -> bytes:
    if isinstance(item, bytes):
        return item
    with open(item, "rb") as f:
        return f.read()


def _decode_chunk(chunk: list, target: Target) -> list:
    return [(key, *decode_image(_read(item), target)) for key, item in chunk]


def n_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 16))


def decode_stream(items, target: Target, sink, progress=None, parallel: bool = True) -> None:
    """Decode (key, path-or-bytes) items; call sink(key, array, hw, error) in order.

    With parallel, worker processes decode while this one reads the source, with at most
    2 chunks per worker in flight, so memory stays bounded however large the source is.
    Small jobs decode in this process: starting workers would cost more than they save.
    """
    def chunks():
        chunk = []
        for item in items:
            chunk.append(item)
            if len(chunk) == CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    workers = n_workers()
    if not parallel or workers == 1:
        for chunk in chunks():
            for result in _decode_chunk(chunk, target):
                sink(*result)
            if progress:
                progress(len(chunk))
        return
    # forkserver: workers do not inherit the parent's threads (torch's, a progress bar's).
    with ProcessPoolExecutor(workers, mp_context=get_context("forkserver")) as pool:
        pending: deque = deque()
        for chunk in chunks():
            pending.append(pool.submit(_decode_chunk, chunk, target))
            while len(pending) >= 2 * workers:
                _drain(pending.popleft(), sink, progress)
        while pending:
            _drain(pending.popleft(), sink, progress)


def _drain(future, sink, progress) -> None:
    results = future.result()
    for result in results:
        sink(*result)
    if progress:
        progress(len(results))
