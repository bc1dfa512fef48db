"""Retrieve one instance both ways: the fast route (``retrieve.FAST_ROUTES``, first in the
app's routes) and the documented FastAPI route give the same bodies (but for the random
multipart boundary), headers, status codes and audit rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tests.dicom_factory import make_ct, part10_bytes
from tests.integration.test_dicomweb_support import Served, serve
from viewer_api.dicomweb import FAST_ROUTES, multipart, retrieve
from worklist.models import AuditEvent


@pytest.fixture
def served(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Served]:
    yield from serve(session_factory, tmp_path)


def _boundary(response: httpx.Response) -> str:
    return response.headers["content-type"].rpartition("boundary=")[2].split(";")[0]


def _normalised(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers with the multipart boundary replaced by a fixed one."""
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "server")}
    if response.status_code != 200:
        return response.status_code, response.content, headers
    boundary = _boundary(response)
    headers["content-type"] = headers["content-type"].replace(boundary, "B")
    return response.status_code, response.content.replace(boundary.encode(), b"B"), headers


def _retrievals(factory: sessionmaker[Session]) -> int:
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


def test_fast_and_documented_routes_answer_alike(
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

    def answers() -> list[tuple[int, bytes, dict[str, str]]]:
        out = []
        for user, url, accept in cases:
            headers = world.headers(user)
            if accept is not None:
                headers["Accept"] = accept
            out.append(_normalised(world.client.get(url, headers=headers)))
        return out

    before = _retrievals(session_factory)
    fast = answers()
    fast_audited = _retrievals(session_factory) - before
    statuses = [status for status, _, _ in fast]
    assert statuses.count(200) == 10 and fast_audited == 10
    assert sorted(set(statuses)) == [200, 400, 401, 403, 404, 406, 422]
    ok = world.client.get(path, headers=world.headers("dr_li"))
    ((part_headers, content),) = multipart.decode(ok.content, _boundary(ok))
    assert content == blob
    assert part_headers["content-type"] == (
        f"application/dicom; transfer-syntax={ct.file_meta.TransferSyntaxUID}"
    )
    assert ok.headers["cache-control"] == "private, no-store"

    app = world.client.app
    assert all(r in app.router.routes for r in retrieve.FAST_ROUTES)  # type: ignore[attr-defined]
    app.router.routes[:] = [r for r in app.router.routes if r not in FAST_ROUTES]  # type: ignore[attr-defined]
    before = _retrievals(session_factory)
    documented = answers()
    assert _retrievals(session_factory) - before == fast_audited
    assert documented == fast


def test_fast_route_over_a_real_server(served: Served) -> None:
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
