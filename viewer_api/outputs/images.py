"""Small PNG renderings of stored images for the share page: the file's own window
(Window Center/Width, or its VOI LUT), else the image's value range; grey-scale only."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import ExplicitVRLittleEndian

from storage.decoding import decoding_plugin

MAX_EDGE = 1024


class NotRenderable(Exception):
    """This object has no grey-scale image we can render."""


def _first(value: Any) -> float:
    """The first of a multi-valued DS (several windows), or the value."""
    if isinstance(value, str) or not hasattr(value, "__len__"):
        return float(value)
    return float(value[0])


def _to_8bit(ds: Any, pixels: np.ndarray) -> np.ndarray:
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        # the linear VOI function of PS3.3 C.11.2.1.2.1, to 0..255
        centre, width = _first(ds.WindowCenter), max(_first(ds.WindowWidth), 1.0)
        scaled = ((values - (centre - 0.5)) / (width - 1 if width > 1 else 1) + 0.5) * 255.0
    else:
        if "VOILUTSequence" in ds:
            values = apply_voi_lut(values, ds, index=0).astype(np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        scaled = 255.0 - scaled
    return np.clip(scaled, 0, 255).astype(np.uint8)


def render_png(data: bytes, *, max_edge: int = MAX_EDGE) -> bytes:
    """The first frame of a Part-10 grey-scale image as PNG, at most ``max_edge`` pixels wide
    or high. Raises ``NotRenderable``."""
    try:
        ds = dcmread(BytesIO(data))
        if "PixelData" not in ds or int(ds.get("SamplesPerPixel", 1)) != 1:
            raise NotRenderable()
        ts = ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)
        pixels = pixel_array(ds, index=0, decoding_plugin=decoding_plugin(ts))
    except (
        InvalidDicomError,
        AttributeError,
        ValueError,
        RuntimeError,
        NotImplementedError,
    ) as exc:
        raise NotRenderable() from exc
    image = Image.fromarray(_to_8bit(ds, pixels), mode="L")
    image.thumbnail((max_edge, max_edge))
    out = BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


__all__ = ["NotRenderable", "render_png"]
