"""DICOMweb's pure parts: Accept parsing, multipart bodies, VOI windows, DICOM JSON values,
frame media type negotiation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from viewer_api.dicomweb import dicom_json as dj
from viewer_api.dicomweb import multipart
from viewer_api.dicomweb.display import (
    Window,
    apply_window,
    default_window,
    file_window,
    parse_window,
    to_display,
)
from viewer_api.dicomweb.frames import choose_frame_form, parse_frame_list
from viewer_api.dicomweb.qido_query import escape_like
from viewer_api.dicomweb.rendered import choose_media_type
from viewer_api.errors import InvalidParameter, NotAcceptable, status_for


def test_parse_accept_orders_by_quality_and_keeps_parameters() -> None:
    ranges = multipart.parse_accept(
        'image/png;q=0.5, multipart/related; type="application/octet-stream"; '
        "transfer-syntax=1.2.840.10008.1.2.1, text/html;q=0"
    )
    assert [r.part_type for r in ranges] == ["application/octet-stream", "image/png"]
    assert ranges[0].transfer_syntax == "1.2.840.10008.1.2.1"
    assert multipart.parse_accept(None)[0].media_type == "*/*"
    assert multipart.parse_accept('multipart/related; type="*/*"')[0].part_type == "*/*"


def test_multipart_round_trip() -> None:
    boundary = multipart.new_boundary()
    parts = [("application/dicom", b"\r\n--x\r\nbinary\x00"), ("application/dicom", b"")]
    body = multipart.encode(boundary, parts)
    decoded = multipart.decode(body, boundary)
    assert [c for _, c in decoded] == [b"\r\n--x\r\nbinary\x00", b""]
    assert decoded[0][0]["content-type"] == "application/dicom"
    assert multipart.content_type(boundary, "application/dicom").startswith(
        'multipart/related; type="application/dicom"; boundary='
    )


def test_linear_window_follows_the_standard() -> None:
    values = np.array([-1000.0, 0.0, 40.0, 80.0, 200.0], dtype=np.float32)
    out = apply_window(values, Window(40, 80))
    assert out[0] == 0 and out[1] == 0 and out[4] == 255
    assert out[2] == pytest.approx(129.1, abs=0.1) and out[3] == 255  # PS3.3 C.11.2.1.2.1
    exact = apply_window(values, Window(40, 80, "LINEAR_EXACT"))
    assert exact[2] == pytest.approx(127.5)
    sigmoid = apply_window(values, Window(40, 80, "SIGMOID"))
    assert sigmoid[2] == pytest.approx(127.5) and sigmoid[0] < 1


def _ct(pixels: np.ndarray, **attrs: object) -> Dataset:
    ds = Dataset()
    ds.Modality = "CT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def test_display_uses_file_window_then_modality_default_never_a_stretch() -> None:
    stored = np.array([[1064, 0, 1224]], dtype=np.int16)  # HU 40, -1024, 200
    with_window = _ct(stored, WindowCenter=[40, 400], WindowWidth=[80, 2000])
    assert file_window(with_window) == Window(40.0, 80.0)
    assert to_display(stored, with_window, None).tolist() == [[129, 0, 255]]
    head = _ct(stored, BodyPartExamined="HEAD")
    assert default_window(head) == Window(40.0, 80.0)
    assert to_display(stored, head, None).tolist() == [[129, 0, 255]]
    chest = _ct(stored, StudyDescription="胸部CT")
    assert default_window(chest) == Window(40.0, 400.0)
    mono1 = _ct(stored, WindowCenter=40, WindowWidth=80, PhotometricInterpretation="MONOCHROME1")
    assert to_display(stored, mono1, None).tolist() == [[126, 255, 0]]
    assert to_display(stored, mono1, Window(40, 80)).tolist() == [[126, 255, 0]]


def test_display_stretches_only_without_any_window() -> None:
    ds = Dataset()
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    out = to_display(np.array([[100, 150, 200]], dtype=np.uint16), ds, None)
    assert out[0, 0] == 0 and out[0, 2] == 255


def test_parse_window_and_media_types() -> None:
    assert parse_window("40,80") == Window(40.0, 80.0)
    assert parse_window("40,80,sigmoid").function == "SIGMOID"
    assert parse_window("1,2,linear-exact").function == "LINEAR_EXACT"
    for bad in ("40", "a,b", "40,0", "40,80,cubic", "nan,80"):
        with pytest.raises(InvalidParameter):
            parse_window(bad)
    assert choose_media_type(None) == "image/png"
    assert choose_media_type("image/jpeg") == "image/jpeg"
    assert choose_media_type("image/webp, image/*;q=0.5") == "image/png"
    with pytest.raises(NotAcceptable):
        choose_media_type("image/gif")


def test_frame_forms() -> None:
    native, jpeg = UID(ExplicitVRLittleEndian), UID(JPEGBaseline8Bit)
    octet = "application/octet-stream"
    le = str(ExplicitVRLittleEndian)
    any_ = 'multipart/related; type="*/*"'
    assert choose_frame_form(any_, native) == (octet, le, True)
    assert choose_frame_form(any_, jpeg) == ("image/jpeg", str(jpeg), True)
    assert choose_frame_form(f'multipart/related; type="{octet}"', jpeg) == (octet, le, False)
    ts_any = f'multipart/related; type="{octet}"; transfer-syntax=*'
    assert choose_frame_form(ts_any, jpeg) == ("image/jpeg", str(jpeg), True)
    assert choose_frame_form('multipart/related; type="image/jpeg"', jpeg)[2] is True
    implicit = f'multipart/related; type="{octet}"; transfer-syntax=1.2.840.10008.1.2'
    assert choose_frame_form(implicit, native) == (octet, "1.2.840.10008.1.2", False)
    rle = UID(RLELossless)
    assert choose_frame_form(None, rle) == ("image/dicom-rle", str(rle), True)
    with pytest.raises(NotAcceptable) as err:
        choose_frame_form('multipart/related; type="image/jpeg"', native)
    assert status_for(err.value) == 406


def test_frame_lists() -> None:
    assert parse_frame_list("1,3,2") == [1, 3, 2]
    # a frame asked for twice (or a thousand times) is sent once
    assert parse_frame_list("2,1,2,1") == [2, 1]
    assert parse_frame_list(",".join(["1"] * 1000)) == [1]
    with pytest.raises(InvalidParameter):
        parse_frame_list(",".join(["1"] * 1001))  # still at most 1000 numbers
    for bad in ("", "0", "1,,2", "x", "-1"):
        with pytest.raises(InvalidParameter) as err:
            parse_frame_list(bad)
        assert status_for(err.value) == 400


def test_dicom_json_values() -> None:
    assert dj.person_name("王^小明") == {"Alphabetic": "王^小明"}
    assert dj.person_name("Wang^Xiaoming=王^小明") == {
        "Alphabetic": "Wang^Xiaoming",
        "Ideographic": "王^小明",
    }
    assert dj.person_name("=王^小明") == {"Ideographic": "王^小明"}
    assert dj.resolve_tag("PatientName") == "00100010"
    assert dj.resolve_tag("0020000d") == "0020000D"
    assert dj.resolve_tag("NotAKeyword") is None
    assert dj.element("CS", "CT\\SR") == {"vr": "CS", "Value": ["CT", "SR"]}
    assert dj.element("LO", "") == {"vr": "LO"}
    assert dj.element("IS", 3) == {"vr": "IS", "Value": [3]}
    header = {
        "00080005": {"vr": "CS", "Value": ["GB18030"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Li^Si=李^四"}]},
    }
    fixed = dj.normalise_header(header)
    assert fixed["00080005"]["Value"] == ["ISO_IR 192"]
    assert fixed["00100010"]["Value"] == [{"Alphabetic": "Li^Si", "Ideographic": "李^四"}]
    assert header["00080005"]["Value"] == ["GB18030"]  # the stored header is not changed


def test_like_escaping() -> None:
    assert escape_like("王*") == "王%"
    assert escape_like("a?b") == "a_b"
    assert escape_like("50%_x*") == "50\\%\\_x%"


def test_lookup_table_path_matches_direct_computation() -> None:
    rng = np.random.default_rng(1)
    stored = rng.integers(-2000, 3000, size=(128, 128)).astype(np.int16)
    ds = _ct(stored, WindowCenter=40, WindowWidth=80)
    expected = (apply_window(stored.astype(np.float32) - 1024, Window(40, 80)) + 0.5).astype(
        np.uint8
    )
    assert np.array_equal(to_display(stored, ds, None), expected)
    ds = _ct(stored, PhotometricInterpretation="MONOCHROME1")
    big = to_display(stored, ds, Window(100, 500, "SIGMOID"))
    values = stored.astype(np.float32) - 1024
    expected = (255.0 - apply_window(values, Window(100, 500, "SIGMOID")) + 0.5).astype(np.uint8)
    assert np.array_equal(big, expected)


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [
        (np.int16, -32768, 32767),  # offsets wrap in int16: the unsigned view must undo it
        (np.uint16, 0, 65535),
        (np.uint16, 100, 4000),
        (np.int8, -128, 127),
        (np.int32, -70000, 50000),
    ],
)
def test_lookup_table_path_over_the_whole_range(dtype: type, low: int, high: int) -> None:
    rng = np.random.default_rng(2)
    stored: np.ndarray = rng.integers(low, high, size=(96, 96), endpoint=True).astype(dtype)
    stored.flat[:2] = (low, high)
    ds = _ct(stored, RescaleIntercept=0)
    expected = (apply_window(stored.astype(np.float32), Window(0, 4000)) + 0.5).astype(np.uint8)
    assert np.array_equal(to_display(stored, ds, Window(0, 4000)), expected)


@pytest.mark.parametrize("name", ["王^小明", "Li^Si=李^四", "=李^四", "", "O'Brien\\x"])
def test_spliced_metadata_equals_the_reference(name: str) -> None:
    from gateway.instance import header_json
    from tests.dicom_factory import make_ct
    from viewer_api.dicomweb.metadata import instance_metadata, splice
    from worklist.models import Instance

    ds = make_ct(patient_name=name or None, charset="ISO_IR 192")
    header = header_json(ds, name)
    assert header is not None
    if not name:
        header.pop("00080005")
    instance = Instance(
        sop_instance_uid=ds.SOPInstanceUID,
        sop_class_uid=ds.SOPClassUID,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        dicom_json=header,
    )
    ids = {"url": "http://h/dicomweb", "study_uid": ds.StudyInstanceUID, "series_uid": "1.2.3"}
    reference = instance_metadata(instance, store=None, **ids)  # type: ignore[arg-type]
    for raw in (json.dumps(header), json.dumps(header, ensure_ascii=False, indent=1)):
        spliced = splice(
            raw,
            sop_uid=ds.SOPInstanceUID,
            sop_class=ds.SOPClassUID,
            ts="1.2.840.10008.1.2.1",
            **ids,
        )
        assert json.loads(spliced) == {**reference, "0020000E": header["0020000E"]}
    assert reference["7FE00010"]["vr"] == "OW"


def test_png_writer_round_trips_grey_and_rgb() -> None:
    from io import BytesIO

    from PIL import Image

    from viewer_api.dicomweb.display import png_bytes

    rng = np.random.default_rng(2)
    for shape in ((37, 53), (20, 31, 3)):
        pixels = rng.integers(0, 256, size=shape).astype(np.uint8)
        image = Image.open(BytesIO(png_bytes(pixels)))
        image.load()
        assert image.mode == ("RGB" if len(shape) == 3 else "L")
        assert np.array_equal(np.asarray(image), pixels)


def test_lru_is_bounded_by_weight() -> None:
    from viewer_api.dicomweb.pixels import LRU

    cache: LRU[int, bytes] = LRU(10, len)
    made = []

    def make(n: int) -> bytes:
        made.append(n)
        return b"x" * n

    for key in (4, 4, 5, 3):
        cache.get_or_make(key, lambda k=key: make(k))  # type: ignore[misc]
    assert made == [4, 5, 3] and cache.weight == 8  # 4 dropped to make room for 3
    cache.get_or_make(50, lambda: make(50))  # heavier than the whole cache: not kept
    assert cache.weight == 8
    cache.get_or_make(5, lambda: make(5))
    assert made == [4, 5, 3, 50]
