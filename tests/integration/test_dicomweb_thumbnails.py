"""What OHIF asks of teleread's DICOMweb: thumbnails of a study, a series and an instance;
a study list where a study without a Modality has no empty ModalitiesInStudy; and CORS for
an OHIF hosted on another origin, only when configured."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session, sessionmaker

from tests.dicom_factory import make_ct, part10_bytes
from tests.integration.test_api_world import SECRET, build_world
from tests.integration.test_dicomweb_support import Served, serve
from viewer_api.settings import ApiSettings


@pytest.fixture
def served(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Served]:
    yield from serve(session_factory, tmp_path)


def _series(count: int, **attrs: object) -> list[bytes]:
    study, series = generate_uid(), generate_uid()
    return [
        part10_bytes(make_ct(study, series_uid=series, instance_number=n, **attrs))
        for n in range(1, count + 1)
    ]


def _get(served: Served, username: str | None, path: str, **headers: str) -> httpx.Response:
    if username:
        headers["Authorization"] = f"Bearer {served.world.tokens[username]}"
    return httpx.get(served.root + path, headers=headers, timeout=30)


def test_thumbnails_of_a_study_a_series_and_an_instance(served: Served) -> None:
    datasets = served.ingest(_series(3))
    study, series = datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID
    sop = datasets[2].SOPInstanceUID
    paths = (
        f"/studies/{study}/thumbnail",
        f"/studies/{study}/series/{series}/thumbnail",
        f"/studies/{study}/series/{series}/instances/{sop}/thumbnail",
    )
    for path in paths:
        r = _get(served, "dr_li", path + "?viewport=32,32", Accept="image/jpeg")
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"] == "image/jpeg"
        image = Image.open(io.BytesIO(r.content))
        assert image.format == "JPEG" and max(image.size) == 32, path
        png = _get(served, "nurse_ts01", path, Accept="image/png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png", path
        assert max(Image.open(io.BytesIO(png.content)).size) <= 256  # the default viewport
        assert _get(served, "nurse_ts02", path).status_code == 404, "another site's"
        assert _get(served, None, path).status_code == 401
    missing = f"/studies/{generate_uid()}/thumbnail"
    assert _get(served, "dr_li", missing).status_code == 404
    bad = _get(served, "dr_li", paths[0] + "?viewport=0,9")
    assert bad.status_code == 400


def test_a_study_without_a_modality_has_no_empty_modalities_in_study(served: Served) -> None:
    bare = served.ingest(_series(1, Modality=None))[0].StudyInstanceUID
    ct = served.ingest(_series(1))[0].StudyInstanceUID
    r = _get(served, "dr_li", "/studies?includefield=00080061", Accept="application/dicom+json")
    assert r.status_code == 200, r.text
    by_uid = {item["0020000D"]["Value"][0]: item for item in r.json()}
    assert "00080061" not in by_uid[bare]
    assert by_uid[ct]["00080061"] == {"vr": "CS", "Value": ["CT"]}


PREFLIGHT = {
    "Origin": "https://ohif.county.example",
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "authorization",
}


def test_cors_is_off_by_default(served: Served) -> None:
    r = served.world.client.options("/dicomweb/studies", headers=PREFLIGHT)
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers


def test_cors_answers_the_configured_origins(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    origins = "https://ohif.county.example, https://viewer.county.example"
    for world in build_world(session_factory, tmp_path, cors_origins=origins):
        r = world.client.options("/dicomweb/studies", headers=PREFLIGHT)
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == "https://ohif.county.example"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        other = world.client.options(
            "/dicomweb/studies", headers={**PREFLIGHT, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers
        headers = {**world.headers("dr_li"), "Origin": "https://ohif.county.example"}
        got = world.client.get("/dicomweb/studies", headers=headers)
        assert got.headers["access-control-allow-origin"] == "https://ohif.county.example"
    with pytest.raises(ValueError, match="not an origin"):
        ApiSettings(secret_key=SECRET, cors_origins="ohif.county.example/path")
