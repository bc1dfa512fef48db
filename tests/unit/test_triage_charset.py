"""Triage text decoding: every character set, through real DICOM bytes read by pydicom."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from worklist.triage import decode_text, extract_text, triage_dataset
from worklist.triage.cases import PROFILES, Case, encode_text
from worklist.triage.charset import strip_escapes
from worklist.triage.evaluate import case_bytes

TEXT = "头颅CT平扫 急性脑梗死"


def _read(enc: str, fields: dict[str, str], request: dict[str, str] | None = None) -> Dataset:
    case = Case(id="t", expect=None, enc=enc, fields=fields, request=request or {})
    return dcmread(io.BytesIO(case_bytes(case)), stop_before_pixels=True)


@pytest.mark.parametrize(
    ("enc", "notes_expected"),
    [
        ("gb18030", False),
        ("gbk", False),
        ("utf8", False),
        ("ir58", False),
        ("gbk-as-latin1", True),
        ("gbk-undeclared", True),
        ("gb18030-undeclared", True),
        ("utf8-undeclared", True),
    ],
)
def test_each_chinese_charset_decodes_cleanly(enc: str, notes_expected: bool) -> None:
    ds = _read(enc, {"StudyDescription": TEXT})
    text = extract_text(ds)
    assert text.fields["StudyDescription"] == TEXT
    assert bool(text.notes) is notes_expected
    result = triage_dataset(ds)
    assert result.category == "stroke"
    assert str(result.reasons[0]) == "StudyDescription: '脑梗死' (stroke: 脑梗)"
    if notes_expected:
        assert any(str(r).startswith("charset: StudyDescription:") for r in result.reasons)


def test_latin1_decodes_cleanly() -> None:
    ds = _read("latin1", {"StudyDescription": "IRM cérébrale Müller", "Modality": "MR"})
    assert extract_text(ds).fields["StudyDescription"] == "IRM cérébrale Müller"
    assert extract_text(ds).notes == []


def test_iso2022_ir58_escapes_removed_where_pydicom_leaves_them() -> None:
    raw = encode_text(TEXT, "ir58")
    assert b"\x1b$)A" in raw
    ds = _read("ir58", {"StudyDescription": TEXT})
    assert "\x1b" in str(ds.StudyDescription)  # pydicom 3.0.2 keeps the escape sequence
    fresh = _read("ir58", {"StudyDescription": TEXT})
    assert extract_text(fresh).fields["StudyDescription"] == TEXT
    # also after pydicom converted the element
    assert extract_text(ds).fields["StudyDescription"] == TEXT
    assert decode_text(raw, "\\ISO 2022 IR 58") == (TEXT, [])
    assert strip_escapes("\x1b$)A脑梗") == "脑梗"


def test_gbk_declared_latin1_says_so_and_works_after_pydicom_converted_it() -> None:
    ds = _read("gbk-as-latin1", {"StudyDescription": TEXT})
    assert str(ds.StudyDescription) != TEXT  # pydicom's Latin-1 mojibake
    text = extract_text(ds)
    assert text.fields["StudyDescription"] == TEXT
    assert text.notes == [
        "StudyDescription: declared ISO_IR 100 but bytes look like GBK/GB18030; decoded as GB18030"
    ]


def test_gbk_without_charset_falls_back_to_gb18030() -> None:
    text, notes = decode_text("胸痛".encode("gbk"), None)
    assert text == "胸痛"
    assert notes == ["no Specific Character Set; non-ASCII bytes decoded as GB18030"]


def test_short_gbk_that_is_also_valid_utf8_is_read_as_gbk() -> None:
    raw = "头颅".encode("gbk")
    raw.decode("utf-8")  # valid UTF-8 by accident: U+0377 U+00AD
    assert decode_text(raw, "ISO_IR 100")[0] == "头颅"
    assert decode_text(raw, "ISO_IR 192")[0] == "头颅"
    assert decode_text(raw, None)[0] == "头颅"


def test_utf8_declared_gb18030_and_gbk_declared_utf8() -> None:
    assert decode_text("急性脑梗死".encode(), "GB18030") == (
        "急性脑梗死",
        ["declared GB18030 but bytes are UTF-8; decoded as UTF-8"],
    )
    text, notes = decode_text("急性脑梗死".encode("gbk"), "ISO_IR 192")
    assert text == "急性脑梗死" and notes


def test_real_latin1_is_not_mistaken_for_gbk() -> None:
    for word in ("Müller", "Jérôme", "Ångström", "tête"):
        assert decode_text(word.encode("latin_1"), "ISO_IR 100") == (word, [])


def test_gb18030_four_byte_characters() -> None:
    word = "𠀀脑梗"  # outside GBK: a GB18030 four-byte sequence
    assert decode_text(word.encode("gb18030"), "GB18030") == (word, [])


def test_full_width_and_spacing_normalised() -> None:
    ds = _read(
        "utf8",
        {"StudyDescription": "头颅ＣＴ　　平扫", "ReasonForTheRequestedProcedure": "脑 梗 死"},
    )
    fields = extract_text(ds).fields
    assert fields["StudyDescription"] == "头颅CT 平扫"
    assert fields["ReasonForTheRequestedProcedure"] == "脑梗死"


def test_request_attributes_sequence_is_read() -> None:
    ds = _read(
        "gbk-as-latin1",
        {"StudyDescription": "头颅CT"},
        {
            "ReasonForTheRequestedProcedure": "右侧肢体无力1小时",
            "RequestedProcedurePriority": "STAT",
        },
    )
    fields = extract_text(ds).fields
    assert fields["ReasonForTheRequestedProcedure"] == "右侧肢体无力1小时"
    assert fields["RequestedProcedurePriority"] == "STAT"
    assert triage_dataset(ds).category == "stroke"


def test_in_memory_dataset_with_python_strings() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyDescription = "胸痛中心 冠脉CTA"
    ds.Modality = "CT"
    assert triage_dataset(ds).category == "chest_pain"


def test_original_bytes_not_changed() -> None:
    ds = _read("gbk-as-latin1", {"StudyDescription": TEXT})
    before = ds.get_item(0x00081030).value
    extract_text(ds)
    assert ds.get_item(0x00081030).value == before


def test_pydicom_charset_files_decode_like_pydicom() -> None:
    from pydicom.data import get_charset_files

    checked = 0
    for path in get_charset_files("chr*.dcm"):
        ds = dcmread(path)
        raw = ds.get_item(0x00100010)
        if raw is None or not isinstance(raw.value, bytes):
            continue
        mine, _ = decode_text(raw.value, ds.get("SpecificCharacterSet"))
        assert "\x1b" not in mine and "\ufffd" not in mine, path
        checked += 1
    assert checked >= 10


def test_all_profiles_known() -> None:
    assert {"gb18030", "gbk", "utf8", "ir58", "latin1"} <= set(PROFILES)
