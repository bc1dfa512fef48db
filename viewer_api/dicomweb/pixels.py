"""Stored objects -> frames: the raw (possibly compressed) frame bytes and decoded arrays.

Objects are content-addressed (``Instance.sha256``), so parsed datasets and decoded frames
are cached by digest in small per-app LRU caches; a cached entry can never be stale.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from io import BytesIO
from typing import Generic, TypeVar

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian

from storage.base import ObjectStore
from worklist.models import Instance

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

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        value = make()
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


class Frames:
    """Frames of stored instances, with the caches."""

    def __init__(
        self, store: ObjectStore, *, dataset_bytes: int = 96 << 20, frame_bytes: int = 96 << 20
    ) -> None:
        self.store = store
        self._datasets: LRU[str, Dataset] = LRU(dataset_bytes, _dataset_weight)
        self._decoded: LRU[tuple[str, int], np.ndarray] = LRU(frame_bytes, lambda a: a.nbytes)

    def dataset(self, instance: Instance) -> Dataset:
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

    def decoded(self, instance: Instance, ds: Dataset, index: int) -> np.ndarray:
        """Frame ``index`` decoded to an array (colour as RGB)."""

        def decode() -> np.ndarray:
            decoder = get_decoder(self.transfer_syntax(ds))
            arr, _meta = decoder.as_array(ds, index=index)
            return arr

        return self._decoded.get_or_make((instance.sha256 or instance.object_key, index), decode)

    def native_frame(self, ds: Dataset, index: int, instance: Instance | None = None) -> bytes:
        """Frame ``index`` decoded to native little-endian bytes."""
        if instance is not None:
            arr = self.decoded(instance, ds, index)
        else:
            arr, _meta = get_decoder(self.transfer_syntax(ds)).as_array(ds, index=index)
        if int(ds.BitsAllocated) == 1:
            return np.packbits(arr.astype(np.uint8).ravel(), bitorder="little").tobytes()
        return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
