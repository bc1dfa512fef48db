"""WADO-RS retrieve and the single-part rule (PS3.18 8.7.3): ``Accept: application/dicom``
on one instance gets that instance as a single-part body (the stored Part-10 bytes); a
multipart range gets multipart/related; a resource of several instances is never one part
(a bare ``application/dicom`` alone is then 406, next to a multipart range the multipart)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session, sessionmaker

from tests.dicom_factory import make_ct, part10_bytes
from tests.integration.test_dicomweb_support import Served, serve

MULTIPART = 'multipart/related; type="application/dicom"'


@pytest.fixture
def served(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Served]:
    yield from serve(session_factory, tmp_path)


def get(served: Served, path: str, accept: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {served.world.tokens['dr_li']}"}
    if accept is not None:
        headers["Accept"] = accept
    return httpx.get(served.root + path, headers=headers, timeout=30)


def test_single_part_for_one_instance_multipart_otherwise(served: Served) -> None:
    study, series = generate_uid(), generate_uid()
    blobs = [part10_bytes(make_ct(study, series_uid=series, instance_number=n)) for n in (1, 2)]
    first, _second = served.ingest(blobs)
    instance = f"/studies/{study}/series/{series}/instances/{first.SOPInstanceUID}"
    ts = str(first.file_meta.TransferSyntaxUID)

    for accept in ("application/dicom", f"application/dicom; transfer-syntax={ts}"):
        single = get(served, instance, accept)
        assert single.status_code == 200, single.text
        assert single.headers["content-type"] == f"application/dicom; transfer-syntax={ts}"
        assert single.content == blobs[0]  # the stored object, byte for byte
    # a multipart range first, no Accept, or */*: multipart/related, as before
    for accept in (MULTIPART, f"{MULTIPART}, application/dicom", None, "*/*"):
        multi = get(served, instance, accept)
        assert multi.status_code == 200
        assert multi.headers["content-type"].startswith(MULTIPART), accept
        assert blobs[0] in multi.content
    # another transfer syntax than the stored one: not transcoded
    other = get(served, instance, "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50")
    assert other.status_code == 406

    # two instances are never one part
    assert get(served, f"/studies/{study}/series/{series}", "application/dicom").status_code == 406
    both = get(served, f"/studies/{study}", f"application/dicom, {MULTIPART}")
    assert both.status_code == 200 and both.headers["content-type"].startswith(MULTIPART)
    assert all(blob in both.content for blob in blobs)
