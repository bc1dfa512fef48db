"""WADO-RS retrieve of instances the gateway recompressed losslessly (its default): asked for
Explicit VR Little Endian (the original's syntax) or for no syntax at all, the client gets the
file the modality sent, bit for bit and checked against the sha256 the gateway recorded;
asked for JPEG-LS or ``transfer-syntax=*`` it gets the smaller stored object; anything else is
406, and a damaged object is never handed out as the original."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session, sessionmaker

from gateway.recompress import recompress
from storage.recompressed import read_note
from tests.dicom_factory import make_ct, part10_bytes
from tests.integration.test_dicomweb_support import Served, serve

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
JPEG_LS = "1.2.840.10008.1.2.4.80"


@pytest.fixture
def served(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Served]:
    yield from serve(session_factory, tmp_path)


def _get(served: Served, path: str, accept: str) -> httpx.Response:
    return httpx.get(
        served.root + path,
        headers={"Authorization": f"Bearer {served.world.tokens['dr_li']}", "Accept": accept},
        timeout=30,
    )


def _parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related response."""
    assert response.status_code == 200, response.text
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    parts = []
    for chunk in response.content.split(b"--" + boundary.encode())[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        ctype = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-type:")
        )
        parts.append((ctype, body.removesuffix(b"\r\n")))
    return parts


def _accept(syntax: str | None) -> str:
    accept = 'multipart/related; type="application/dicom"'
    return accept + (f"; transfer-syntax={syntax}" if syntax else "")


def test_the_original_or_the_stored_object_as_the_client_asks(served: Served) -> None:
    study, series = generate_uid(), generate_uid()
    originals = [
        part10_bytes(make_ct(study, series_uid=series, instance_number=i + 1, rows=128, cols=128))
        for i in range(2)
    ]
    stored = []
    for original in originals:
        out = recompress(original, "jpegls")
        assert out is not None
        stored.append(out.data)
    datasets = served.ingest(stored)
    sop = datasets[0].SOPInstanceUID
    instance = f"/studies/{study}/series/{series}/instances/{sop}"

    for syntax in (EXPLICIT, None):  # the original's syntax, or none named
        ((ctype, body),) = _parts(_get(served, instance, _accept(syntax)))
        assert body == originals[0]
        note = read_note(stored[0])
        assert note is not None
        assert hashlib.sha256(body).hexdigest() == note["original_sha256"]
        assert f"transfer-syntax={EXPLICIT}" in ctype
    for syntax in (JPEG_LS, "*"):
        ((ctype, body),) = _parts(_get(served, instance, _accept(syntax)))
        assert body == stored[0]
        assert f"transfer-syntax={JPEG_LS}" in ctype
    # a single-part Accept on one instance: the body is the file itself
    single = _get(served, instance, f"application/dicom; transfer-syntax={EXPLICIT}")
    assert single.status_code == 200
    assert single.headers["content-type"] == f"application/dicom; transfer-syntax={EXPLICIT}"
    assert single.content == originals[0]
    single = _get(served, instance, f"application/dicom; transfer-syntax={JPEG_LS}")
    assert single.content == stored[0]
    # the client's order decides; a syntax neither form has is skipped
    both = f"{_accept(IMPLICIT)}, {_accept(JPEG_LS)};q=0.9, {_accept(EXPLICIT)};q=0.5"
    assert _parts(_get(served, instance, both))[0][1] == stored[0]
    refused = _get(served, instance, _accept(IMPLICIT))
    assert refused.status_code == 406

    # a whole study: every instance as received
    bodies = sorted(
        body for _, body in _parts(_get(served, f"/studies/{study}", _accept(EXPLICIT)))
    )
    assert bodies == sorted(originals)

    # a damaged stored object is not passed off as the original
    second = datasets[1]
    (key,) = [
        o.key
        for o in served.world.store.list("")
        if o.key.endswith(f"/{second.SOPInstanceUID}.dcm")
    ]
    damaged = bytearray(served.world.store.get(key))
    damaged[-100] ^= 0xFF
    served.world.store.put(key, bytes(damaged))
    r = _get(
        served,
        f"/studies/{study}/series/{series}/instances/{second.SOPInstanceUID}",
        _accept(EXPLICIT),
    )
    assert r.status_code == 502  # object_corrupt: never served
    assert b"DICM" not in r.content
