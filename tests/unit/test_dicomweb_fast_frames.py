"""Rendered's fast path (a native frame read from the object's tail, with the header the index
holds) against pydicom's parse of the same object: the same arrays, the same displayed pixels
and PNG bytes for every window; and None (pydicom's turn) for everything it does not handle."""

from __future__ import annotations

import hashlib
import io
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from gateway.instance import header_json
from storage import FilesystemStore
from tests.dicom_factory import make_ct, make_dx, part10_bytes
from viewer_api.dicomweb.display import Window, look_up, png_bytes, to_display
from viewer_api.dicomweb.pixels import Frames
from worklist.models import Instance

WINDOWS = [None, Window(40, 80), Window(100, 500, "SIGMOID"), Window(0, 2000, "LINEAR_EXACT")]


def _pixels(ds: Dataset, arr: np.ndarray, *, stored: int | None = None) -> Dataset:
    """``arr`` (frames x rows x cols, or rows x cols) as ``ds``'s native pixel data."""
    bits = arr.dtype.itemsize * 8
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.BitsAllocated, ds.BitsStored = bits, stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(arr.dtype.kind == "i")
    if arr.ndim == 3:
        ds.NumberOfFrames = arr.shape[0]
    raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    ds.PixelData = raw + b"\0" * (len(raw) & 1)
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    return ds


def _variants() -> dict[str, Dataset]:
    rng = np.random.default_rng(7)
    garbage = rng.integers(0, 1 << 16, size=(40, 48), dtype=np.uint16)  # bits above 12 set
    no_window = make_ct(body_part="ABDOMEN", study_description="腹部CT")
    del no_window.WindowCenter, no_window.WindowWidth
    sloped = make_ct()
    sloped.RescaleSlope, sloped.RescaleIntercept = 0.5, -1000
    mono1 = _pixels(
        make_dx(PhotometricInterpretation="MONOCHROME1"),
        rng.integers(0, 256, size=(5, 7), dtype=np.uint8),  # odd length: padded
    )
    implicit = make_ct()
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return {
        "ct int16 with its window": make_ct(rows=96, cols=80),
        "ct without a window (modality default)": no_window,
        "ct rescale slope": sloped,
        "signed, 12 of 16 bits stored": _pixels(make_ct(), garbage.view(np.int16), stored=12),
        "unsigned, 12 of 16 bits stored": _pixels(
            make_ct(PixelRepresentation=0), garbage, stored=12
        ),
        "dx": make_dx(),
        "monochrome1 8-bit odd size": mono1,
        "signed 8-bit": _pixels(make_ct(), rng.integers(-128, 128, (9, 11), dtype=np.int8)),
        "multi-frame": _pixels(make_ct(), rng.integers(-2000, 3000, (3, 20, 24), dtype=np.int16)),
        "implicit VR": implicit,
    }


def _stored(store: FilesystemStore, ds: Dataset, *, with_json: bool = True) -> Instance:
    blob = part10_bytes(ds)
    key = f"1.2/3.4/{ds.SOPInstanceUID}.dcm"
    store.put(key, blob)
    header = dcmread(BytesIO(blob), stop_before_pixels=True)
    return Instance(
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        object_key=key,
        sha256=hashlib.sha256(blob).hexdigest(),
        dicom_json=header_json(header, "x") if with_json else None,
    )


@pytest.mark.parametrize("name", list(_variants()))
def test_fast_frames_equal_pydicoms(name: str, tmp_path: Path) -> None:
    ds = _variants()[name]
    store = FilesystemStore(tmp_path)
    instance = _stored(store, ds)
    fast, slow = Frames(store), Frames(store)  # separate caches
    parsed = slow.dataset(instance)
    assert parsed.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert parsed.original_encoding == (name == "implicit VR", True)
    for index in range(slow.count(parsed)):
        got = fast.native_frame_from_header(instance, index)
        assert got is not None, name
        arr, header = got
        reference = slow.decoded(instance, parsed, index)
        assert arr.dtype == reference.dtype and np.array_equal(arr, reference)
        for window in WINDOWS:
            shown = to_display(arr, header, window)
            expected = to_display(reference, parsed, window)
            assert np.array_equal(shown, expected), (name, window)
            assert png_bytes(shown) == png_bytes(expected)
        again = fast.native_frame_from_header(instance, index)  # now from the frame cache
        assert again is not None and again[0] is arr
    assert fast.native_frame_from_header(instance, slow.count(parsed)) is None  # no such frame


class _Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return self.data.readinto(buffer)


class _StreamingStore(FilesystemStore):
    """Objects come as a stream that cannot seek, as from S3."""

    def open(self, key: str) -> BinaryIO:
        with super().open(key) as f:
            data = f.read()
        return io.BufferedReader(_Unseekable(data))


def test_fast_frames_from_a_store_that_cannot_seek(tmp_path: Path) -> None:
    ds = _variants()["multi-frame"]
    instance = _stored(_StreamingStore(tmp_path), ds)
    fast = Frames(_StreamingStore(tmp_path)).native_frame_from_header(instance, 2)
    reference = Frames(FilesystemStore(tmp_path)).native_frame_from_header(instance, 2)
    assert fast is not None and reference is not None
    assert np.array_equal(fast[0], reference[0])


def test_everything_else_is_left_to_pydicom(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    frames = Frames(store)

    assert frames.native_frame_from_header(_stored(store, make_ct(), with_json=False), 0) is None
    rle = make_ct()
    rle.compress(RLELossless)
    assert frames.native_frame_from_header(_stored(store, rle), 0) is None
    rgb = make_ct(PhotometricInterpretation="RGB", SamplesPerPixel=3, PlanarConfiguration=0)
    rgb.PixelData = bytes(64 * 64 * 3 * 2)
    assert frames.native_frame_from_header(_stored(store, rgb), 0) is None

    # an element after Pixel Data: the tail is not where the header says
    trailing = make_ct()
    trailing.add_new(0xFFFCFFFC, "OB", b"\0\0\0\0")
    assert frames.native_frame_from_header(_stored(store, trailing), 0) is None
    # pixel data shorter than the header says
    short = make_ct()
    short.PixelData = short.PixelData[:-128]
    assert frames.native_frame_from_header(_stored(store, short), 0) is None
    # another object under the key
    instance = _stored(store, make_ct())
    store.put(instance.object_key, b"not a DICOM file at all")
    assert frames.native_frame_from_header(instance, 0) is None


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int8, np.uint8, np.int32])
def test_table_look_up_equals_take(dtype: type) -> None:
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    for span in (1, 2, 100, 254, 255, 256, 257, 1000):
        bottom, top = max(int(info.min), -3000), min(int(info.max), 3000)
        low = int(rng.integers(bottom, (bottom + top) // 2))
        high = min(top, low + int(rng.integers(1, 1500)))
        n = high - low + 1
        lut = np.zeros(n, dtype=np.uint8)
        start = int(rng.integers(0, n))
        stop = min(n, start + span)
        lut[start:stop] = rng.integers(0, 256, stop - start)
        lut[stop:] = rng.integers(0, 256)
        lut[:start] = rng.integers(0, 256)
        arr: np.ndarray = rng.integers(low, high, (70, 90), endpoint=True).astype(dtype)
        offsets = (arr.astype(np.int64) - low).astype(np.intp)
        assert np.array_equal(look_up(lut, arr, low), lut.take(offsets)), (span, low, high)
