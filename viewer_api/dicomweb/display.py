"""A decoded frame made fit for a screen, and encoded as PNG or JPEG (the rendered routes).

Greyscale values pass the modality transform (the Modality LUT Sequence, else RescaleSlope /
RescaleIntercept), then the VOI transform: the requested window, else the file's VOI LUT
Sequence (its first LUT), else its first WindowCenter / WindowWidth, else a modality default
(CT: brain 40/80 for a head, soft tissue 40/400 otherwise). Only an image with none of these
is stretched min..max. MONOCHROME1 is inverted so that it looks like MONOCHROME2.

Colour: PALETTE COLOR goes through its lookup tables (segmented ones too; 16-bit entries
keep their high byte), YBR_FULL / YBR_FULL_422 / YBR_ICT / YBR_RCT arrive decoded as RGB
(``Frames.decoded``), more than 8 bits per sample are scaled to 8.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

from viewer_api.dicomweb.access import bad_request
from viewer_api.dicomweb.pixels import Attributes

PNG, JPEG = "image/png", "image/jpeg"
FUNCTIONS = {"linear": "LINEAR", "linear_exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}
HEAD_WORDS = ("HEAD", "BRAIN", "SKULL", "头", "颅", "脑")
LUT_MIN_PIXELS = 4096
LUT_MAX_ENTRIES = 1 << 17
# no stored pixel value (32 bits at most) is further out: larger windows only overflow
MAX_WINDOW = 1e10


@dataclass(frozen=True, slots=True)
class Window:
    center: float
    width: float
    function: str = "LINEAR"


def parse_window(value: str) -> Window:
    parts = [p.strip() for p in value.split(",")]
    if len(parts) not in (2, 3):
        raise bad_request("window must be center,width[,function]")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise bad_request("window center and width must be numbers") from None
    if not np.isfinite(center) or not np.isfinite(width) or width <= 0:
        raise bad_request("window width must be a positive number")
    if abs(center) > MAX_WINDOW or width > MAX_WINDOW:
        raise bad_request(f"window center and width must be within {MAX_WINDOW:g}")
    function = "LINEAR"
    if len(parts) == 3:
        key = parts[2].lower().replace("-", "_")
        if key not in FUNCTIONS:
            raise bad_request("window function must be linear, linear-exact or sigmoid")
        function = FUNCTIONS[key]
    return Window(center, width, function)


def _first_number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def file_window(ds: Attributes) -> Window | None:
    center = _first_number(ds.get("WindowCenter"))
    width = _first_number(ds.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    return Window(center, width, function if function in FUNCTIONS.values() else "LINEAR")


def default_window(ds: Attributes) -> Window | None:
    if str(ds.get("Modality", "")).upper() != "CT":
        return None
    text = " ".join(
        str(ds.get(k, "") or "")
        for k in ("BodyPartExamined", "StudyDescription", "SeriesDescription")
    ).upper()
    if any(word in text for word in HEAD_WORDS):
        return Window(40.0, 80.0)
    return Window(40.0, 400.0)


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Modality values -> 0..255 floats (PS3.3 C.11.2.1.2)."""
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        with np.errstate(over="ignore"):  # far below the centre: exp -> inf, the value -> 0
            return 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    if window.function == "LINEAR_EXACT":
        return np.clip(((values - c) / w + 0.5) * 255.0, 0.0, 255.0)
    if w <= 1:
        return np.where(values > c - 0.5, 255.0, 0.0)
    return np.clip(((values - (c - 0.5)) / (w - 1) + 0.5) * 255.0, 0.0, 255.0)


def to_display(arr: np.ndarray, ds: Attributes, window: Window | None) -> np.ndarray:
    """A decoded frame (colour as RGB, ``Frames.decoded``) -> uint8 grey (H x W) or RGB
    (H x W x 3). The lookup-table sequences are read from a parsed ``Dataset`` only (a
    ``JsonHeader`` never carries them: ``pixels.native_layout`` leaves such instances to
    pydicom)."""
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR" and isinstance(ds, Dataset):
        rgb = apply_color_lut(arr, ds)
        return rgb if rgb.dtype == np.uint8 else (rgb >> 8).astype(np.uint8)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 3 or arr.ndim == 3:
        if arr.dtype == np.uint8:
            return arr
        top = float(2 ** int(ds.get("BitsStored", 8) or 8) - 1)
        return np.clip(arr.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
    invert = photometric == "MONOCHROME1"
    if isinstance(ds, Dataset) and ds.get("ModalityLUTSequence"):
        arr = apply_modality_lut(arr, ds)
        slope, intercept = 1.0, 0.0
    else:
        slope = _first_number(ds.get("RescaleSlope")) or 1.0
        intercept = _first_number(ds.get("RescaleIntercept")) or 0.0
    if window is None and isinstance(ds, Dataset) and ds.get("VOILUTSequence"):
        return voi_lut(arr * slope + intercept if slope != 1 or intercept else arr, ds, invert)
    window = window or file_window(ds) or default_window(ds)
    if arr.dtype.kind in "iu" and arr.size > LUT_MIN_PIXELS:
        # integer pixels: window each distinct stored value once, then look them up
        low, high = int(arr.min()), int(arr.max())
        if high - low < LUT_MAX_ENTRIES:
            stored = np.arange(low, high + 1, dtype=np.float32)
            return look_up(_grey(stored * slope + intercept, window, invert), arr, low)
    return _grey(arr.astype(np.float32) * slope + intercept, window, invert)


def voi_lut(values: np.ndarray, ds: Dataset, invert: bool) -> np.ndarray:
    """Modality values through the file's first VOI LUT, its output range (0 .. 2**bits - 1,
    bits from the LUT Descriptor) mapped to 0..255."""
    bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
    if values.dtype.kind not in "iu":  # the LUT is indexed by whole values
        values = np.rint(values).astype(np.int64)
    out = apply_voi(values, ds).astype(np.float32) * (255.0 / (2**bits - 1))
    if invert:
        out = 255.0 - out
    return (out + 0.5).astype(np.uint8)


def look_up(lut: np.ndarray, arr: np.ndarray, low: int) -> np.ndarray:
    """``lut[arr - low]`` for integer pixels whose values lie in ``low .. low + len(lut) - 1``.

    When the table changes only within 256 consecutive entries (a window narrower than that
    in stored values: brain 80, stroke 40, subdural 215 wide), the pixels are clipped to that
    stretch, made bytes and mapped by ``bytes.translate``: several times faster than numpy's
    ``take``, which first widens every index to 64 bits. Exact: outside the stretch the
    table is constant."""
    changes = np.flatnonzero(lut[1:] != lut[:-1])  # i where lut[i] != lut[i + 1]
    if changes.size == 0:
        return np.full(arr.shape, lut[0], dtype=np.uint8)
    first, last = int(changes[0]), int(changes[-1]) + 1  # constant on ..first and last..
    if last - first < 256:
        table = lut[first : last + 1].tobytes().ljust(256, b"\0")
        index = np.clip(arr, low + first, low + last)
        # 0 .. last - first; in int8 that may wrap, and the cast to uint8 undoes it
        index -= arr.dtype.type(low + first)
        mapped = index.astype(np.uint8).tobytes().translate(table)
        return np.frombuffer(mapped, dtype=np.uint8).reshape(arr.shape)
    # offsets from ``low`` in the pixels' own width: the subtraction may wrap, but every
    # true offset (0..high-low) fits that width unsigned, so the view is exact
    offsets = arr - arr.dtype.type(low)
    return lut.take(offsets.view(np.dtype(f"u{arr.itemsize}")))


def _grey(values: np.ndarray, window: Window | None, invert: bool) -> np.ndarray:
    if window is None:  # nothing says how to show it: stretch
        low, high = float(values.min()), float(values.max())
        window = Window((low + high) / 2 + 0.5, max(high - low + 1, 1.0))
    out = apply_window(values, window)
    if invert:
        out = 255.0 - out
    return (out + 0.5).astype(np.uint8)


def encode(
    pixels: np.ndarray, media_type: str, *, quality: int, viewport: tuple[int, int] | None
) -> bytes:
    image = Image.fromarray(pixels)
    if viewport is not None:
        scale = min(viewport[0] / image.width, viewport[1] / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    if media_type != JPEG:
        return png_bytes(np.asarray(image))
    buf = BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(pixels: np.ndarray) -> bytes:
    """A PNG of 8-bit grey (H x W) or RGB (H x W x 3) pixels, deflated with zlib's run-length
    strategy: a few times faster than Pillow's default for a similar size on CT images
    (large flat areas), which is what keeps a scrolled series smooth."""
    height, width = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    rows = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(height, -1)
    filtered = np.zeros((height, rows.shape[1] + 1), dtype=np.uint8)  # filter byte 0: None
    filtered[:, 1:] = rows
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = deflate.compress(filtered.tobytes()) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"".join(
        (b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header), _chunk(b"IDAT", idat), _chunk(b"IEND", b""))
    )
