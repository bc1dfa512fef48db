"""``storage.header_json`` on pydicom's test files: pydicom's own DICOM JSON wherever pydicom
can write one (bulk data aside), invalid values kept instead of dropped, bulk data paths that
lead back to their element."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from pydicom import dcmread

from storage.header_json import BULK_PREFIX, find_bulk, header_json, parse_bulk_path
from tests.integration.test_dicomweb_support import TEST_FILES
from viewer_api.dicomweb.bulkdata import little_endian


def _read(path: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(path, stop_before_pixels=True)


def _bulk_uris(data: dict[str, Any]) -> list[str]:
    found = []
    for element in data.values():
        if "BulkDataURI" in element:
            found.append(element["BulkDataURI"])
        for item in element.get("Value", []) if element.get("vr") == "SQ" else []:
            found.extend(_bulk_uris(item))
    return found


def _marked(data: dict[str, Any]) -> dict[str, Any]:
    for element in data.values():
        if "BulkDataURI" in element:
            element["BulkDataURI"] = "X"
        for item in element.get("Value", []) if element.get("vr") == "SQ" else []:
            _marked(item)
    return data


def test_the_same_as_pydicom_wherever_pydicom_can_write_it() -> None:
    compared = 0
    for path in sorted(str(p) for p in TEST_FILES.glob("*.dcm")):
        try:
            ds = _read(path)
        except Exception:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                reference = ds.to_json_dict(bulk_data_element_handler=lambda _e: "X")
            except Exception:
                continue
            ours = header_json(ds)
        assert _marked(ours.data) == reference, path
        for uri in _bulk_uris(header_json(ds).data):
            elem = find_bulk(ds, parse_bulk_path(uri.removeprefix(BULK_PREFIX)))
            assert elem is not None and len(elem.value) > 768, (path, uri)
        compared += 1
    assert compared > 60


@pytest.mark.parametrize(
    ("name", "tag", "path", "kept"),
    [
        # a UID with a leading zero in a component, inside ReferencedRTPlanSequence
        ("rtdose.dcm", "300C0002", None, {"vr": "SQ"}),
        # NumberOfFrames "1A": not a number, kept as its bytes
        ("badVR.dcm", "00280008", "00280008", {"vr": "UN", "InlineBinary": "MUE="}),
    ],
)
def test_invalid_values_are_kept(
    name: str, tag: str, path: str | None, kept: dict[str, Any]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = header_json(_read(str(TEST_FILES / name)))
    assert kept.items() <= made.data[tag].items()
    assert made.invalid == ([path] if path else [])


def test_bulk_paths_and_byte_order() -> None:
    assert parse_bulk_path("54000100/1/54001010") == [0x54000100, 1, 0x54001010]
    for bad in ("", "5400010", "54000100/x/54001010", "54000100/0", "zzzzzzzz"):
        with pytest.raises(ValueError):
            parse_bulk_path(bad)
    assert little_endian(b"\x01\x02\x03\x04", "OW", True) == b"\x02\x01\x04\x03"
    assert little_endian(b"\x01\x02\x03\x04", "OF", True) == b"\x04\x03\x02\x01"
    assert little_endian(b"\x01\x02\x03\x04", "OB", True) == b"\x01\x02\x03\x04"
    assert little_endian(b"\x01\x02", "OW", False) == b"\x01\x02"
