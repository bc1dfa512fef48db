"""A stored instance's header as DICOM JSON (PS3.18 F.2), made the same way by the gateway
(the header it announces) and the county API (for an instance announced without one).

- Binary values longer than ``BULK_THRESHOLD`` (OverlayData, WaveformData, curve and LUT
  data, private blobs, an icon's pixels ...) are not left out: they become a ``BulkDataURI``
  relative to the instance, ``bulkdata/<tag path>`` (``bulk_path``), which the API turns into
  its own WADO-RS bulk data URL. Shorter ones are ``InlineBinary``.
- An invalid value (a UID with a leading zero, an IS that is not a number) is kept as it is,
  never the whole top-level element or sequence around it; a value that cannot be written as
  JSON at all is kept as ``UN`` with its bytes as ``InlineBinary``. ``HeaderJson.invalid``
  names the tag paths so (for the log: never the values).

The top-level Pixel Data is not here (the API gives the frames' URI for it); an icon's is.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

BULK_THRESHOLD = 1024  # bytes of base64: pydicom's own default
BULK_PREFIX = "bulkdata/"  # a stored header's BulkDataURI, relative to its instance
_PIXEL_DATA = ("7FE00008", "7FE00009", "7FE00010")  # float, double, (integer) Pixel Data


@dataclass
class HeaderJson:
    data: dict[str, Any]
    invalid: list[str] = field(default_factory=list)  # tag paths of values kept as they came


def bulk_path(path: list[int]) -> str:
    """``[0x54000100, 0, 0x54001010]`` -> ``"54000100/0/54001010"``: tags and item numbers
    (from 0) alternating."""
    return "/".join(f"{p:08X}" if i % 2 == 0 else str(p) for i, p in enumerate(path))


def parse_bulk_path(text: str) -> list[int]:
    """The inverse of ``bulk_path``: tags (hex) and item numbers alternating; ValueError."""
    parts = text.strip("/").split("/")
    if not parts or len(parts) % 2 == 0 or len(parts) > 31:
        raise ValueError("a bulk data path is tag(/item/tag)*")
    out: list[int] = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            if len(part) != 8:
                raise ValueError(f"not a tag: {part[:20]!r}")
            out.append(int(part, 16))
        else:
            if not part.isdigit() or len(part) > 6:
                raise ValueError(f"not an item number: {part[:20]!r}")
            out.append(int(part))
    return out


def header_json(ds: Dataset) -> HeaderJson:
    """``ds`` (read with ``stop_before_pixels``) as DICOM JSON, see the module's docstring.
    Call it with pydicom's warnings silenced: an invalid value only warns."""
    result = HeaderJson({})
    result.data = _dataset(ds, [], result.invalid)
    for tag in _PIXEL_DATA:  # the frames' (the API gives their URI), when ``ds`` holds them
        result.data.pop(tag, None)
    return result


def _dataset(ds: Dataset, path: list[int], invalid: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        here = [*path, int(tag)]
        key = f"{int(tag):08X}"
        try:
            elem = ds[tag]
        except Exception:
            out[key] = _unconvertible(raw, here, invalid)
            continue
        if elem.VR == "SQ":
            items = []
            for i, item in enumerate(elem.value or []):
                items.append(_dataset(item, [*here, i], invalid))
            out[key] = {"vr": "SQ", "Value": items}
            continue
        try:
            out[key] = elem.to_json_dict(
                bulk_data_element_handler=partial(_uri, BULK_PREFIX + bulk_path(here)),
                bulk_data_threshold=BULK_THRESHOLD,
            )
        except Exception:
            out[key] = _unconvertible(raw, here, invalid, elem)
    return out


def _uri(uri: str, _elem: DataElement) -> str:
    return uri


def _unconvertible(
    raw: RawDataElement | DataElement | None,
    path: list[int],
    invalid: list[str],
    elem: DataElement | None = None,
) -> dict[str, Any]:
    """An element whose value cannot be written as JSON: kept, as UN with its bytes when
    they are at hand, else with its VR and no value."""
    invalid.append(bulk_path(path))
    value = raw.value if isinstance(raw, RawDataElement) else None
    if isinstance(value, bytes) and value:
        return {"vr": "UN", "InlineBinary": base64.b64encode(value).decode("ascii")}
    vr = str(elem.VR) if elem is not None else (str(raw.VR) if raw is not None and raw.VR else "UN")
    return {"vr": vr}


def find_bulk(ds: Dataset, path: list[int]) -> DataElement | None:
    """The element at a ``parse_bulk_path`` path, or None."""
    current = ds
    for depth in range(0, len(path), 2):
        tag = Tag(path[depth])
        if tag not in current:
            return None
        elem = current[tag]
        if depth == len(path) - 1:
            return elem
        items = elem.value if elem.VR == "SQ" else None
        index = path[depth + 1]
        if not items or index >= len(items):
            return None
        current = items[index]
    return None


__all__ = [
    "BULK_PREFIX",
    "BULK_THRESHOLD",
    "HeaderJson",
    "bulk_path",
    "find_bulk",
    "header_json",
    "parse_bulk_path",
]
