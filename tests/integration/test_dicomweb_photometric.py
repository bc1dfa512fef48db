"""Photometric interpretations through a real server, against an independent decode with
pydicom: PALETTE COLOR (plain and segmented lookup tables), YBR_FULL, YBR_FULL_422, YBR_RCT
and YBR_ICT, MONOCHROME1, Modality and VOI LUT Sequences, and Planar Configuration 1 in both
byte orders. /rendered gives the pixels pydicom gives (as a screen shows them); raw frames
(``application/octet-stream``) are laid out as the instance's metadata says."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    convert_color_space,
    pixel_array,
)
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, generate_uid
from sqlalchemy.orm import Session, sessionmaker

from tests.dicom_factory import make_dx, part10_bytes
from tests.integration.test_dicomweb_support import TEST_FILES, Served, serve

OCTET = "application/octet-stream"


@pytest.fixture
def served(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Served]:
    yield from serve(session_factory, tmp_path)


def read(name: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(TEST_FILES / name)


def fresh(ds: Dataset) -> Dataset:
    """``ds`` as a new instance of a new study (each test file once per world)."""
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def stored(served: Served, ds: Dataset) -> Dataset:
    """Ingest ``ds`` (as its Part-10 bytes) and return it as the server holds it."""
    (got,) = served.ingest([part10_bytes(ds)])
    return got


def rendered(served: Served, ds: Dataset, **params: str) -> np.ndarray:
    client = served.client("dr_li")
    png = client.retrieve_instance_rendered(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        media_types=("image/png",),
        params=params,
    )
    return np.asarray(Image.open(BytesIO(png)))


def raw_frame(served: Served, ds: Dataset) -> bytes:
    client = served.client("dr_li")
    (frame,) = client.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        frame_numbers=[1],
        media_types=((OCTET, str(ExplicitVRLittleEndian)),),
    )
    return bytes(frame)


def decode(ds: Dataset, *, raw: bool = False) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pixel_array(ds, index=0, raw=raw)


def le_bytes(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def segmented_palette() -> Dataset:
    """examples_palette.dcm with segmented lookup tables (discrete and linear segments)."""
    ds = fresh(read("examples_palette.dcm"))
    for colour in ("Red", "Green", "Blue"):
        del ds[f"{colour}PaletteColorLookupTableData"]
    segments = {
        "Red": [0, 1, 0, 1, 255, 0xFF00],  # discrete 0, then linear up to 0xFF00
        "Green": [0, 1, 0xFF00, 1, 255, 0],  # and down
        "Blue": [0, 256, *(((i * 7) % 256) << 8 for i in range(256))],  # discrete
    }
    for colour, words in segments.items():
        ds.add_new(
            f"Segmented{colour}PaletteColorLookupTableData", "OW", le_bytes(np.array(words, "<u2"))
        )
    return ds


def test_palette_colour_plain_and_segmented(served: Served) -> None:
    for ds in (fresh(read("examples_palette.dcm")), segmented_palette()):
        got = rendered(served, stored(served, ds))
        expected = apply_color_lut(decode(ds), ds)
        if expected.dtype != np.uint8:  # 16-bit entries: their high byte
            expected = (expected >> 8).astype(np.uint8)
        assert got.shape == expected.shape == (ds.Rows, ds.Columns, 3)
        assert np.array_equal(got, expected)
        assert len(np.unique(got.reshape(-1, 3), axis=0)) > 16  # colour, not grey
        assert raw_frame(served, ds) == le_bytes(decode(ds))  # the indices, as stored


def ybr_cases() -> list[Dataset]:
    rgb = read("examples_rgb_color.dcm")
    ybr_full = fresh(read("examples_rgb_color.dcm"))
    ybr_full.PixelData = convert_color_space(rgb.pixel_array, "RGB", "YBR_FULL").tobytes()
    ybr_full.PhotometricInterpretation = "YBR_FULL"
    ict = fresh(read("examples_rgb_color.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ict.compress(JPEG2000, j2k_cr=[5], use_mct=True)
    ict.PhotometricInterpretation = "YBR_ICT"  # what the codestream's colour transform makes
    return [
        ybr_full,
        fresh(read("SC_rgb_dcmtk_+eb+cy+np.dcm")),  # JPEG baseline, YBR_FULL_422
        fresh(read("SC_rgb_dcmtk_+eb+cy+n1.dcm")),  # JPEG baseline, YBR_FULL
        fresh(read("examples_jpeg2k.dcm")),  # JPEG 2000 lossless, YBR_RCT
        ict,
    ]


def test_ybr_renders_as_rgb_and_raw_frames_keep_the_stored_colour_space(served: Served) -> None:
    for ds in ybr_cases():
        instance = stored(served, ds)
        got = rendered(served, instance)
        assert np.array_equal(got, decode(ds)), ds.PhotometricInterpretation
        assert raw_frame(served, instance) == le_bytes(decode(ds, raw=True))


def test_monochrome1_is_inverted(served: Served) -> None:
    mono2 = make_dx(rows=32, cols=32, WindowCenter=300, WindowWidth=400)
    mono1 = fresh(make_dx(rows=32, cols=32, WindowCenter=300, WindowWidth=400))
    mono1.PixelData = mono2.PixelData
    mono1.PhotometricInterpretation = "MONOCHROME1"
    a, b = rendered(served, stored(served, mono2)), rendered(served, stored(served, mono1))
    assert a.std() > 0 and np.array_equal(b, 255 - a)


def lut_item(descriptor: list[int], data: np.ndarray) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = descriptor
    item.add_new("LUTData", "US", [int(v) for v in data])
    return item


def test_modality_lut_sequence(served: Served) -> None:
    """A Modality LUT renders as the same image with the LUT's output stored directly."""
    ds = make_dx(rows=32, cols=32, WindowCenter=2000, WindowWidth=3000)
    ds.PixelData = (np.arange(32 * 32, dtype="<u2") % 256).tobytes()
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        ds.pop(keyword, None)
    table = (np.arange(256) ** 2 // 16).astype(np.uint16)  # not a straight line
    ds.ModalityLUTSequence = Sequence([lut_item([256, 0, 16], table)])
    ds.ModalityLUTSequence[0].ModalityLUTType = "US"
    direct = fresh(make_dx(rows=32, cols=32, WindowCenter=2000, WindowWidth=3000))
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        direct.pop(keyword, None)
    direct.PixelData = le_bytes(apply_modality_lut(decode(ds), ds).astype(np.uint16))
    direct.BitsStored = direct.HighBit + 1
    got = rendered(served, stored(served, ds))
    assert got.std() > 0 and np.array_equal(got, rendered(served, stored(served, direct)))


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_voi_lut_sequence(served: Served, photometric: str) -> None:
    ds = fresh(make_dx(rows=32, cols=32, PhotometricInterpretation=photometric))
    ds.PixelData = (np.arange(32 * 32, dtype="<u2") % 256).tobytes()
    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        ds.pop(keyword, None)
    table = (255 * (np.arange(256) / 255) ** 0.5).astype(np.uint8)  # a curve, 8-bit output
    ds.VOILUTSequence = Sequence([lut_item([256, 0, 8], table)])
    expected = apply_voi(decode(ds), ds).astype(np.uint8)
    if photometric == "MONOCHROME1":
        expected = 255 - expected
    instance = stored(served, ds)
    assert np.array_equal(rendered(served, instance), expected)
    # an explicit window still wins over the file's table
    assert not np.array_equal(rendered(served, instance, window="128,64"), expected)


def planar_little_endian() -> Dataset:
    ds = fresh(read("examples_rgb_color.dcm"))
    ds.PixelData = le_bytes(ds.pixel_array.transpose(2, 0, 1))
    ds.PlanarConfiguration = 1
    return ds


def test_planar_configuration_1_in_both_byte_orders(served: Served) -> None:
    for ds in (fresh(read("ExplVR_BigEnd.dcm")), planar_little_endian()):
        instance = stored(served, ds)
        rgb = decode(ds)
        assert np.array_equal(rendered(served, instance), rgb)
        # the metadata says PlanarConfiguration 1: the raw frame is colour by plane
        assert raw_frame(served, instance) == le_bytes(rgb.transpose(2, 0, 1))
