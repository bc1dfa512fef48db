"""Retrieve one instance: the stored bytes, the answer to every kind of caller and Accept
header, and one audit row per retrieve."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tests.dicom_factory import make_ct, part10_bytes
from tests.integration.test_dicomweb_support import Served, serve
from viewer_api.dicomweb import multipart
from worklist.models import AuditEvent


@pytest.fixture
def served(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Served]:
    yield from serve(session_factory, tmp_path)


def _boundary(response: httpx.Response) -> str:
    return response.headers["content-type"].rpartition("boundary=")[2].split(";")[0]


def _retrievals(served: Served, factory: sessionmaker[Session]) -> int:
    served.world.client.app.state.audit_writer.flush()  # type: ignore[attr-defined]
    with factory() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "dicomweb_retrieved")
            )
            or 0
        )


ACCEPTS = (
    None,
    "*/*",
    'multipart/related; type="application/dicom"',
    'multipart/related; type="application/dicom"; transfer-syntax=*',
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1',
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
    "application/dicom+json",
)


def test_retrieve_instance_answers_every_caller(
    served: Served, session_factory: sessionmaker[Session]
) -> None:
    blob = part10_bytes(make_ct())
    (ct,) = served.ingest([blob])
    ids = (ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    path = "/dicomweb/studies/{}/series/{}/instances/{}".format(*ids)
    world = served.world
    cases: list[tuple[str | None, str, str | None]] = [
        (user, path, accept) for user in ("dr_li", "nurse_ts01") for accept in ACCEPTS
    ]
    cases += [
        ("nurse_ts02", path, None),  # a clinic of another site: 404
        ("gw_ts01", path, None),  # not a viewer role: 403
        (None, path, None),  # no token: 401
        ("dr_li", path.replace(ct.SOPInstanceUID, "1.2.3"), None),  # no such instance: 404
        ("dr_li", path.replace(ct.SeriesInstanceUID, "1.2.3"), None),
        ("dr_li", path.replace(ct.SOPInstanceUID, "1.2.x"), None),  # UID grammar: 422
        ("dr_li", path.replace(ct.SOPInstanceUID, "1.2%00"), None),  # NUL: 400
        ("nurse_ts02", path, "application/dicom+json"),  # 404 before 406
    ]

    before = _retrievals(served, session_factory)
    statuses = []
    for user, url, accept in cases:
        headers = world.headers(user)
        if accept is not None:
            headers["Accept"] = accept
        statuses.append(world.client.get(url, headers=headers).status_code)
    assert statuses.count(200) == 10 and _retrievals(served, session_factory) - before == 10
    assert sorted(set(statuses)) == [200, 400, 401, 403, 404, 406, 422]
    ok = world.client.get(path, headers=world.headers("dr_li"))
    ((part_headers, content),) = multipart.decode(ok.content, _boundary(ok))
    assert content == blob
    assert part_headers["content-type"] == (
        f"application/dicom; transfer-syntax={ct.file_meta.TransferSyntaxUID}"
    )
    assert ok.headers["cache-control"] == "private, no-store"


def test_retrieve_over_a_real_server(served: Served) -> None:
    """Through uvicorn: the stored bytes, whole, as dicomweb-client reads them."""
    blobs = [part10_bytes(make_ct()) for _ in range(2)]
    datasets = served.ingest(blobs)
    client = served.client("dr_li")
    for ds in datasets:
        got = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        assert got.SOPInstanceUID == ds.SOPInstanceUID
        assert got.PixelData == ds.PixelData
    first = datasets[0]
    ids = (first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID)
    path = "/studies/{}/series/{}/instances/{}".format(*ids)
    r = httpx.get(served.root + path, headers=served.world.headers("dr_li"))
    assert r.status_code == 200
    assert multipart.decode(r.content, _boundary(r))[0][1] == blobs[0]
