"""DICOMweb metadata keeps every attribute: large binary values (WaveformData, OverlayData,
an icon's pixels) by BulkDataURI, retrievable with dicomweb-client's ``retrieve_bulkdata``;
an invalid UID inside a sequence kept with its sequence. Real files others wrote (pydicom's
test data), announced by the gateway's own header reading."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_dicomweb_support import TEST_FILES, Served, serve


@pytest.fixture
def served(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Served]:
    yield from serve(session_factory, tmp_path)


def _here(served: Served, uri: str) -> str:
    """dicomweb-client sends its own ``Host`` header without the port, so the server's URIs
    name the port-less host: point them back at the test server."""
    return served.root + uri.split("/dicomweb", 1)[1]


def _metadata(served: Served, ds: Any) -> dict[str, Any]:
    client = served.client("dr_li")
    meta: dict[str, Any] = client.retrieve_instance_metadata(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    return meta


@pytest.mark.parametrize("with_json", [True, False])
def test_waveform_and_overlay_data_by_bulk_data_uri(served: Served, with_json: bool) -> None:
    waveform, overlay = served.ingest(
        [(TEST_FILES / name).read_bytes() for name in ("waveform_ecg.dcm", "examples_overlay.dcm")],
        with_json=with_json,  # announced by the gateway, or read by the API from the object
    )
    client = served.client("dr_li")
    meta = _metadata(served, waveform)
    channels = meta["54000100"]["Value"]
    assert len(channels) == len(waveform.WaveformSequence) == 2
    for item, expected in zip(channels, waveform.WaveformSequence, strict=True):
        uri = _here(served, item["54001010"]["BulkDataURI"])
        assert uri.startswith(f"{served.root}/studies/{waveform.StudyInstanceUID}/")
        assert client.retrieve_bulkdata(uri) == [expected.WaveformData]
    meta = _metadata(served, overlay)
    [got] = client.retrieve_bulkdata(_here(served, meta["60003000"]["BulkDataURI"]))
    assert got == overlay[0x60003000].value and meta["60003000"]["vr"] == "OW"
    icon = _here(served, meta["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"])
    assert client.retrieve_bulkdata(icon) == [overlay.IconImageSequence[0].PixelData]
    assert meta["7FE00010"]["BulkDataURI"].endswith("/frames/1")  # the image's own pixels


def test_an_invalid_uid_keeps_its_sequence(served: Served) -> None:
    ds = dcmread(TEST_FILES / "rtdose.dcm")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID  # as a C-STORE request has it
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    [rtdose] = served.ingest([buffer.getvalue()])
    meta = _metadata(served, rtdose)
    [plan] = meta["300C0002"]["Value"]  # ReferencedRTPlanSequence
    # "0123": a leading zero, not a valid UID component; kept as it came
    assert plan["00081155"]["Value"] == ["1.2.123.456.78.9.0123.4567.89012345678901"]
    assert plan["300C0020"]["Value"][0]["300C0022"]["Value"] == [1]


def test_bulk_data_single_part_and_refusals(served: Served) -> None:
    [overlay] = served.ingest([(TEST_FILES / "examples_overlay.dcm").read_bytes()])
    base = (
        f"{served.root}/studies/{overlay.StudyInstanceUID}/series/{overlay.SeriesInstanceUID}"
        f"/instances/{overlay.SOPInstanceUID}/bulkdata"
    )
    headers = {"Authorization": f"Bearer {served.world.tokens['dr_li']}"}
    with httpx.Client(headers=headers, timeout=30) as http:
        single = http.get(f"{base}/60003000", headers={"Accept": "application/octet-stream"})
        assert single.status_code == 200, single.text
        assert single.headers["content-type"] == "application/octet-stream"
        assert single.content == overlay[0x60003000].value
        assert http.get(f"{base}/60003000", headers={"Accept": "image/png"}).status_code == 406
        assert http.get(f"{base}/6000300").status_code == 400  # not a tag
        assert http.get(f"{base}/00100010").status_code == 404  # not binary
        assert http.get(f"{base}/00880200/5/7FE00010").status_code == 404  # no such item
    stranger = {"Authorization": f"Bearer {served.world.tokens['nurse_ts02']}"}
    assert httpx.get(f"{base}/60003000", headers=stranger, timeout=30).status_code == 404
