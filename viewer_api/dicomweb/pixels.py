"""Stored objects -> frames: the raw (possibly compressed) frame bytes and decoded arrays.

Objects are content-addressed (``Instance.sha256``), so parsed datasets and decoded frames
are cached by digest in small per-app LRU caches; a cached entry can never be stale.

The native path (``Frames.native_frame_from_header``) skips the DICOM parse: for a native
little-endian greyscale instance whose header the index holds (``Instance.dicom_json``),
the frame is read straight from the object's tail, where its Pixel Data element must sit
with exactly the length the header implies; anything else is left to pydicom, the stock
path. Scrolling a series renders each slice once, and the parse costs more than the
render. ``TELEREAD_API_NATIVE_FRAMES=false`` turns the native path off (every frame
through pydicom); the tests give both paths the same objects and expect the same pixels.
"""

from __future__ import annotations

import functools
import os
import struct
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian

from storage.base import ObjectStore
from storage.decoding import decoding_plugin

K = TypeVar("K")
V = TypeVar("V")

# transfer syntax -> the media type of its frames (PS3.18 Table 8.7.3-2)
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
OCTET_STREAM = "application/octet-stream"
IMPLICIT_LE, EXPLICIT_LE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
_PIXEL_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


class StoredInstance(Protocol):
    """What the frame source needs of an index row (``worklist.models.Instance``)."""

    @property
    def object_key(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def sop_instance_uid(self) -> str: ...
    @property
    def transfer_syntax_uid(self) -> str: ...
    @property
    def dicom_json(self) -> dict[str, Any] | None: ...


class PixelError(Exception):
    """The object has no frame that can be served."""


class LRU(Generic[K, V]):
    """A tiny thread-safe LRU cache bounded by the summed ``weigh`` of its values."""

    def __init__(self, max_weight: int, weigh: Callable[[V], int]) -> None:
        self.max_weight = max_weight
        self.weigh = weigh
        self.weight = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        return None

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        value = self.get(key)
        if value is not None:
            return value
        return self.put(key, make())

    def put(self, key: K, value: V) -> V:
        """Keep ``value`` (unless it alone outweighs the cache); returns it."""
        weight = self.weigh(value)
        if weight > self.max_weight:
            return value
        with self._lock:
            if key not in self._items:
                self._items[key] = (value, weight)
                self.weight += weight
            while self.weight > self.max_weight:
                _, (_, dropped) = self._items.popitem(last=False)
                self.weight -= dropped
        return value


def _dataset_weight(ds: Dataset) -> int:
    pixels = ds.get("PixelData")
    return 4096 + (len(pixels) if isinstance(pixels, bytes | bytearray) else 0)


@functools.cache
def _json_tag(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}"


class Attributes(Protocol):
    """A header read by keyword: a pydicom ``Dataset`` or a ``JsonHeader``."""

    def get(self, key: str, default: Any = None, /) -> Any: ...


class JsonHeader:
    """An instance's header from its DICOM JSON, read like a pydicom ``Dataset``:
    ``get(keyword, default)`` gives the one value, or the list of several."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def get(self, keyword: str, default: Any = None) -> Any:
        element = self.data.get(_json_tag(keyword))
        values = element.get("Value") if isinstance(element, dict) else None
        if not isinstance(values, list) or not values:
            return default
        return values[0] if len(values) == 1 else values


@dataclass(frozen=True, slots=True)
class NativeLayout:
    """Where a native little-endian greyscale instance's frames are, from its header."""

    rows: int
    columns: int
    frames: int
    dtype: np.dtype[Any]
    bits_stored: int
    explicit_vr: bool

    @property
    def frame_bytes(self) -> int:
        return self.rows * self.columns * self.dtype.itemsize

    @property
    def element_length(self) -> int:  # the Pixel Data value, padded to even length
        total = self.frame_bytes * self.frames
        return total + (total & 1)

    @property
    def element_header(self) -> tuple[bytes, ...]:
        length = struct.pack("<I", self.element_length)
        if self.explicit_vr:
            return (_PIXEL_TAG + b"OW\0\0" + length, _PIXEL_TAG + b"OB\0\0" + length)
        return (_PIXEL_TAG + length,)


def _int(value: Any) -> int | None:
    """An IS / US value as an int (DICOM JSON has numbers; a string is parsed)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def native_layout(header: JsonHeader, transfer_syntax: str) -> NativeLayout | None:
    """The frame layout when the fast path handles this instance: native little endian,
    one sample per pixel, MONOCHROME1/2, 8 or 16 bits allocated, no Modality or VOI LUT
    Sequence. None otherwise."""
    if transfer_syntax not in (IMPLICIT_LE, EXPLICIT_LE):
        return None
    if header.get("PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    if header.get("ModalityLUTSequence") or header.get("VOILUTSequence"):
        return None  # their tables are bulk data the header leaves out: pydicom reads them
    rows, columns = _int(header.get("Rows")), _int(header.get("Columns"))
    allocated, stored = _int(header.get("BitsAllocated")), _int(header.get("BitsStored"))
    signed = _int(header.get("PixelRepresentation"))
    samples = _int(header.get("SamplesPerPixel"))
    frames = _int(header.get("NumberOfFrames", 1))
    if samples != 1 or allocated not in (8, 16) or signed not in (0, 1):
        return None
    if rows is None or columns is None or frames is None or min(rows, columns, frames) < 1:
        return None
    if stored is None or not 1 <= stored <= allocated:
        return None
    dtype = np.dtype(f"{'<i' if signed else '<u'}{allocated // 8}")
    return NativeLayout(rows, columns, frames, dtype, stored, transfer_syntax == EXPLICIT_LE)


def _frame_bytes(store: ObjectStore, key: str, layout: NativeLayout, index: int) -> bytes | None:
    """Frame ``index``'s bytes, when the object ends with the Pixel Data element the
    layout implies (its tag, VR and exact length); None otherwise."""
    headers = layout.element_header
    head = len(headers[0])
    tail = head + layout.element_length
    start = head + index * layout.frame_bytes
    with store.open(key) as f:
        if f.seekable():  # a file: read just the element header and the frame
            size = f.seek(0, os.SEEK_END)
            if size < tail:
                return None
            f.seek(size - tail)
            if f.read(head) not in headers:
                return None
            f.seek(size - tail + start)
            data = f.read(layout.frame_bytes)
            return data if len(data) == layout.frame_bytes else None
        whole = f.read()
    if len(whole) < tail or whole[len(whole) - tail : len(whole) - tail + head] not in headers:
        return None
    offset = len(whole) - tail + start
    return whole[offset : offset + layout.frame_bytes]


def native_array(data: bytes, layout: NativeLayout) -> np.ndarray:
    """A frame's bytes -> its array, as pydicom decodes it (bits above BitsStored masked
    off, or the sign extended from BitsStored for signed pixels)."""
    arr = np.frombuffer(data, dtype=layout.dtype).reshape(layout.rows, layout.columns)
    unused = layout.dtype.itemsize * 8 - layout.bits_stored
    if unused:
        if layout.dtype.kind == "i":
            arr = (arr << unused) >> unused
        else:
            arr = arr & layout.dtype.type((1 << layout.bits_stored) - 1)
    return arr.astype(layout.dtype.newbyteorder("="), copy=False)


def decode_frame(ds: Dataset, transfer_syntax: str, *, index: int, raw: bool) -> np.ndarray:
    """Frame ``index`` of ``ds`` decoded by pydicom, with the plugin ``storage.decoding``
    names for its transfer syntax (the one the gateway checked a recompressed file with)."""
    decoder = get_decoder(transfer_syntax)
    arr, _meta = decoder.as_array(
        ds, index=index, raw=raw, decoding_plugin=decoding_plugin(transfer_syntax)
    )
    return arr


class Frames:
    """Frames of stored instances, with the caches."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        native_frames: bool = True,
        dataset_bytes: int = 96 << 20,
        frame_bytes: int = 96 << 20,
    ) -> None:
        self.store = store
        self.native_frames = native_frames
        self._datasets: LRU[str, Dataset] = LRU(dataset_bytes, _dataset_weight)
        self._decoded: LRU[tuple[str, int, bool], np.ndarray] = LRU(frame_bytes, lambda a: a.nbytes)

    def dataset(self, instance: StoredInstance) -> Dataset:
        def load() -> Dataset:
            raw = self.store.get(instance.object_key)  # storage errors pass through
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = dcmread(BytesIO(raw), force=True)
                    sop_uid = str(ds.get("SOPInstanceUID", ""))
            except Exception as exc:
                raise PixelError("The stored object cannot be read as DICOM") from exc
            if sop_uid != instance.sop_instance_uid:  # junk parses "forcefully" as empty
                raise PixelError("The stored object is not this instance")
            return ds

        return self._datasets.get_or_make(instance.sha256 or instance.object_key, load)

    @staticmethod
    def transfer_syntax(ds: Dataset) -> UID:
        return UID(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))

    @staticmethod
    def count(ds: Dataset) -> int:
        if "PixelData" not in ds:
            return 0
        try:
            return max(1, int(ds.get("NumberOfFrames", 1) or 1))
        except (TypeError, ValueError):
            return 1

    def stored_frame(self, ds: Dataset, index: int) -> bytes:
        """Frame ``index`` (0-based) as stored: a compressed codestream, or native bytes
        (little endian)."""
        ts = self.transfer_syntax(ds)
        n = self.count(ds)
        if ts.is_encapsulated:
            return bytes(get_frame(ds.PixelData, index, number_of_frames=n))
        bits = int(ds.BitsAllocated)
        if bits == 1 or not ts.is_little_endian:
            return self.native_frame(ds, index)
        length = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * bits // 8
        data: bytes = ds.PixelData
        return bytes(data[index * length : (index + 1) * length])

    def native_frame_from_header(
        self, instance: StoredInstance, index: int
    ) -> tuple[np.ndarray, JsonHeader] | None:
        """Frame ``index`` (0-based) and the header it was decoded with, read without a DICOM
        parse (see the module's docstring); None when this instance needs the parse."""
        if not self.native_frames or not isinstance(instance.dicom_json, dict):
            return None
        header = JsonHeader(instance.dicom_json)
        layout = native_layout(header, instance.transfer_syntax_uid)
        if layout is None or not 0 <= index < layout.frames:
            return None
        key = (instance.sha256 or instance.object_key, index, False)  # as ``decoded`` keys it
        arr = self._decoded.get(key)
        if arr is None:
            data = _frame_bytes(self.store, instance.object_key, layout, index)
            if data is None:
                return None
            arr = self._decoded.put(key, native_array(data, layout))
        return arr, header

    def decoded(
        self, instance: StoredInstance, ds: Dataset, index: int, *, raw: bool = False
    ) -> np.ndarray:
        """Frame ``index`` decoded to an array, samples last; YBR colour as RGB (for a
        screen) or, ``raw``, as stored (for raw frames: what the metadata says)."""

        def make() -> np.ndarray:
            return decode_frame(ds, self.transfer_syntax(ds), index=index, raw=raw)

        key = (instance.sha256 or instance.object_key, index, raw)
        return self._decoded.get_or_make(key, make)

    def native_frame(
        self, ds: Dataset, index: int, instance: StoredInstance | None = None
    ) -> bytes:
        """Frame ``index`` decoded to native little-endian bytes as the instance's metadata
        describes them: its Photometric Interpretation (YBR stays YBR; a JPEG 2000 YBR_ICT /
        YBR_RCT codestream decodes to RGB) and its Planar Configuration (colour by plane
        when it says 1, as a big-endian file may store it)."""
        if instance is not None:
            arr = self.decoded(instance, ds, index, raw=True)
        else:
            arr = decode_frame(ds, self.transfer_syntax(ds), index=index, raw=True)
        if int(ds.BitsAllocated) == 1:
            return np.packbits(arr.astype(np.uint8).ravel(), bitorder="little").tobytes()
        if arr.ndim == 3 and int(ds.get("PlanarConfiguration", 0) or 0) == 1:
            arr = arr.transpose(2, 0, 1)  # rows x columns x samples -> samples x rows x columns
        return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
