"""The county API end to end on SQLite and PostgreSQL: ingest -> worklist -> claim ->
report -> sign -> the clinic fetches it; another site's clinic sees nothing."""

from __future__ import annotations

import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import StarletteDeprecationWarning

from storage import MinioStore
from storage.minio_store import make_client
from storage.settings import StorageSettings
from tests.integration.test_api_world import PASSWORDS, Study, World, build_world
from viewer_api.main import create_app
from viewer_api.settings import ApiSettings
from worklist.audit import list_events
from worklist.completion import mark_stable_studies
from worklist.models import Study as Study_

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


def _report_url(study: Study) -> str:
    return f"/api/v1/studies/{study.uid}/report"


def test_healthz_and_openapi(world: World) -> None:
    r = world.get(None, "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = world.get(None, "/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok", "objects": "ok"}
    paths = world.get(None, "/openapi.json").json()["paths"]
    for path in (
        "/api/v1/auth/token",
        "/api/v1/worklist",
        "/api/v1/worklist/{study_uid}/claim",
        "/api/v1/worklist/{study_uid}/release",
        "/api/v1/worklist/next",
        "/api/v1/studies/{study_uid}",
        "/api/v1/studies/{study_uid}/instances/{sop_uid}",
        "/api/v1/studies/{study_uid}/report",
        "/api/v1/studies/{study_uid}/report/sign",
        "/api/v1/reports",
        "/api/v1/gateway/config",
        "/api/v1/ingest/instances",
    ):
        assert path in paths, path


def test_login_good_and_bad(world: World) -> None:
    r = world.client.post(
        "/api/v1/auth/token", data={"username": "dr_li", "password": PASSWORDS["dr_li"]}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["role"] == "radiologist"
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert world.client.get("/api/v1/worklist", headers=headers).status_code == 200

    bad = world.client.post("/api/v1/auth/token", data={"username": "dr_li", "password": "wrong"})
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == "Bearer"
    nobody = world.client.post("/api/v1/auth/token", data={"username": "x", "password": "y"})
    assert nobody.status_code == 401
    assert world.client.post("/api/v1/auth/token", data={}).status_code == 422

    with world.factory() as session:
        outcomes = sorted(e.outcome for e in list_events(session=session, action="login"))
    assert outcomes == ["denied", "denied", "success"]


def test_tokens_are_checked(world: World) -> None:
    assert world.get(None, "/api/v1/worklist").status_code == 401
    r = world.client.get("/api/v1/worklist", headers={"Authorization": "Bearer nonsense"})
    assert r.status_code == 401
    assert r.json()["detail"]
    forged = world.tokens["nurse_ts01"][:-4] + "AAAA"
    r = world.client.get("/api/v1/worklist", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401


def test_full_path_from_ingest_to_clinic(world: World) -> None:
    dr = Study("TS01", "DX", "胸部正位 体检", count=1)
    stroke = Study("TS01", "CT", "头颅CT平扫 急性脑卒中", patient_name="王^小明", count=3)
    other_site = Study("TS02", "CT", "腹部CT", count=1)

    # the routine DR first, so the stroke CT is the newer arrival and must still lead
    assert world.announce(dr).json() == {
        "accepted": 1,
        "duplicates": 0,
        "conflicts": [],
        "resends": [],
    }
    world.clock.tick(30)
    assert world.announce(stroke).json() == {
        "accepted": 3,
        "duplicates": 0,
        "conflicts": [],
        "resends": [],
    }
    assert world.announce(other_site, gateway="gw_all").status_code == 200

    items = world.get("dr_li", "/api/v1/worklist").json()
    first = items[0]
    assert first["study_instance_uid"] == stroke.uid
    assert first["priority"] == "stat" and first["category"] == "stroke"
    assert first["triage_reasons"]
    assert first["site"] == "TS01" and first["modality"] == "CT"
    assert first["num_instances"] == 3 and first["claimed_by"] is None
    assert first["patient_name"] == "王小明"  # as a person reads it
    assert first["patient_id"] == "P001" and first["patient_sex"] == "M"
    assert first["patient_age"] == f"{world.clock.now.year - 1960:03d}Y"
    assert first["accession_number"] == "A1" and first["body_part"] == "HEAD"
    assert first["deadline_at"] is not None
    routine = next(i for i in items if i["study_instance_uid"] == dr.uid)
    assert routine["priority"] == "routine" and routine["category"] is None
    assert {i["site"] for i in items} == {"TS01", "TS02"}

    # detail
    detail = world.get("dr_li", f"/api/v1/studies/{stroke.uid}").json()
    assert detail["patient_name"] == "王小明" and detail["patient_sex"] == "M"
    assert detail["patient_birth_date"] == "19600101"
    assert detail["triage"]["category"] == "stroke"
    [series] = detail["series"]
    assert series["series_instance_uid"] == stroke.series_uid
    assert series["num_instances"] == 3
    assert sorted(series["sop_instance_uids"]) == sorted(stroke.sop_uids)

    # one reader at a time
    r = world.post("dr_li", f"/api/v1/worklist/{stroke.uid}/claim")
    assert r.status_code == 200, r.text
    assert r.json()["claimed_by"] == "dr_li"
    assert world.post("dr_li", f"/api/v1/worklist/{stroke.uid}/claim").status_code == 200
    conflict = world.post("dr_wang", f"/api/v1/worklist/{stroke.uid}/claim")
    assert conflict.status_code == 409 and conflict.json()["detail"]
    assert world.post("nurse_ts01", f"/api/v1/worklist/{stroke.uid}/claim").status_code == 403

    # draft: claim holder only; a draft is invisible to the clinic
    impression = "右侧基底节区急性脑出血，约12ml。"
    body = {"findings": "右侧基底节区见高密度影。", "impression": impression}
    assert world.put("dr_wang", _report_url(stroke), json=body).status_code == 403
    assert world.put("nurse_ts01", _report_url(stroke), json=body).status_code == 403
    r = world.put("dr_li", _report_url(stroke), json=body)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "draft" and r.json()["author"] == "dr_li"
    assert world.get("nurse_ts01", _report_url(stroke)).status_code == 404
    assert world.get("dr_wang", _report_url(stroke)).json()["status"] == "draft"

    # sign final: immutable afterwards
    world.clock.tick(60)
    # a stroke report signed final needs a critical result or a reason (test_reports_api)
    final = {"status": "final", "no_critical_result_reason": "急诊医生在场，已当面告知"}
    r = world.post("dr_li", f"{_report_url(stroke)}/sign", json=final)
    assert r.status_code == 200, r.text
    signed = r.json()
    assert signed["status"] == "final" and signed["signed_by"] == "dr_li"
    assert len(signed["content_sha256"]) == 64 and signed["signed_at"]
    assert world.put("dr_li", _report_url(stroke), json=body).status_code == 409
    again = world.post("dr_li", f"{_report_url(stroke)}/sign", json={"status": "final"})
    assert again.status_code == 409

    # a final study leaves the default worklist; status=final asks for it
    assert stroke.uid not in {
        i["study_instance_uid"] for i in world.get("dr_li", "/api/v1/worklist").json()
    }
    finals = world.get("dr_li", "/api/v1/worklist", params={"status": "final"}).json()
    assert [i["study_instance_uid"] for i in finals] == [stroke.uid]

    # the site's clinic gets the report, the study and its images
    report = world.get("nurse_ts01", _report_url(stroke))
    assert report.status_code == 200
    assert report.json()["impression"] == impression and report.json()["status"] == "final"
    assert world.get("nurse_ts01", "/api/v1/reports").json()[0]["study_instance_uid"] == (
        stroke.uid
    )
    assert world.get("nurse_ts01", f"/api/v1/studies/{stroke.uid}").status_code == 200
    sop = stroke.sop_uids[0]
    image = world.get("nurse_ts01", f"/api/v1/studies/{stroke.uid}/instances/{sop}")
    assert image.status_code == 200
    assert image.headers["content-type"] == "application/dicom"
    assert image.content == stroke.blobs[sop]
    clinic_items = world.get("nurse_ts01", "/api/v1/worklist").json()
    assert {i["site"] for i in clinic_items} == {"TS01"}

    # the other site's clinic: 404 on every route, never 403
    for path in (
        f"/api/v1/studies/{stroke.uid}",
        _report_url(stroke),
        f"/api/v1/studies/{stroke.uid}/instances/{sop}",
    ):
        assert world.get("nurse_ts02", path).status_code == 404, path
    assert world.get("nurse_ts02", "/api/v1/reports").json() == []
    assert stroke.uid not in {
        i["study_instance_uid"] for i in world.get("nurse_ts02", "/api/v1/worklist").json()
    }

    # every view and every step is audited, with the client's address (the views that come
    # by the hundred once the app's AuditWriter has written them)
    world.client.app.state.audit_writer.flush()  # type: ignore[attr-defined]
    with world.factory() as session:
        events = list_events(session=session, object_id=stroke.uid, limit=500)
    actions = {(e.action, e.username) for e in events}
    for expected in (
        ("study_viewed", "dr_li"),
        ("study_claimed", "dr_li"),
        ("report_draft_saved", "dr_li"),
        ("report_signed", "dr_li"),
        ("report_viewed", "nurse_ts01"),
        ("study_viewed", "nurse_ts01"),
    ):
        assert expected in actions, expected
    assert all(e.client_addr == "testclient" for e in events)
    # a worklist page's polls are audited too, written off the request path in a batch
    with world.factory() as session:
        polls = list_events(session=session, action="worklist_view", limit=500)
    assert {"dr_li", "nurse_ts01", "nurse_ts02"} <= {e.username for e in polls}
    assert all(e.client_addr == "testclient" and e.outcome == "success" for e in polls)
    assert all("count" in e.detail and "total" in e.detail for e in polls)
    with world.factory() as session:
        viewed = list_events(session=session, action="instance_viewed", object_id=sop)
    assert [e.username for e in viewed] == ["nurse_ts01"]


def test_release_and_claim_next(world: World) -> None:
    routine = Study("TS01", "DX", "胸部正位", count=1)
    chest = Study("TS01", "CT", "胸痛 CTA", count=1)
    world.announce(routine)
    world.clock.tick(120)
    with world.factory.begin() as session:  # the housekeeping loop's job: quiet -> ready
        assert mark_stable_studies(session=session, now=world.clock.now, stable_seconds=60) == [
            routine.uid
        ]
    world.announce(chest)

    first = world.post("dr_li", "/api/v1/worklist/next")
    assert first.status_code == 200, first.text
    assert first.json()["study_instance_uid"] == chest.uid
    assert first.json()["category"] == "chest_pain"
    second = world.post("dr_wang", "/api/v1/worklist/next")
    assert second.json()["study_instance_uid"] == routine.uid
    assert world.post("boss", "/api/v1/worklist/next").status_code == 204

    assert world.post("dr_wang", f"/api/v1/worklist/{chest.uid}/release").status_code == 403
    r = world.post("dr_li", f"/api/v1/worklist/{chest.uid}/release")
    assert r.status_code == 200 and r.json()["claimed_by"] is None
    # an admin may release anyone's claim
    r = world.post("boss", f"/api/v1/worklist/{routine.uid}/release")
    assert r.status_code == 200 and r.json()["claimed_by"] is None
    with world.factory() as session:
        released = list_events(session=session, action="study_released")
    assert sorted(e.username for e in released) == ["boss", "dr_li"]


def test_reports_are_listed_newest_first(world: World) -> None:
    studies = [Study("TS01", "DX", f"胸部正位 {n}", count=1) for n in range(3)]
    for study in studies:
        world.announce(study)
    for study in studies:
        world.clock.tick(60)
        assert world.post("dr_li", f"/api/v1/worklist/{study.uid}/claim").status_code == 200
        world.put("dr_li", _report_url(study), json={"findings": "未见异常", "impression": "正常"})
        world.post("dr_li", f"{_report_url(study)}/sign", json={"status": "final"})
    newest_first = [s.uid for s in reversed(studies)]
    for user in ("dr_wang", "nurse_ts01"):
        listed = world.get(user, "/api/v1/reports").json()
        assert [r["study_instance_uid"] for r in listed] == newest_first, user
    page = world.get("dr_li", "/api/v1/reports", params={"limit": 1, "offset": 1}).json()
    assert [r["study_instance_uid"] for r in page] == newest_first[1:2]


def test_worklist_filters(world: World) -> None:
    ct = Study("TS01", "CT", "头颅CT 脑梗", count=1)
    dx = Study("TS01", "DX", "胸部正位", count=1)
    ts02 = Study("TS02", "CT", "腹部CT", count=1)
    world.announce(ct)
    world.announce(dx)
    world.announce(ts02, gateway="gw_all")

    def uids(**params: object) -> set[str]:
        r = world.get("dr_li", "/api/v1/worklist", params=params)
        assert r.status_code == 200, r.text
        return {i["study_instance_uid"] for i in r.json()}

    assert uids(site="TS02") == {ts02.uid}
    assert uids(modality="DX") == {dx.uid}
    assert uids(category="stroke") == {ct.uid}
    assert uids(status="receiving") == {ct.uid, dx.uid, ts02.uid}
    assert len(uids(limit=1)) == 1
    assert world.get("dr_li", "/api/v1/worklist", params={"limit": 0}).status_code == 422
    assert world.get("dr_li", "/api/v1/worklist", params={"offset": -1}).status_code == 422
    # a clinic asking for another site's worklist gets nothing of it
    assert world.get("nurse_ts01", "/api/v1/worklist", params={"site": "TS02"}).json() == []


def test_the_worklist_finds_a_patient_by_name_id_or_accession(world: World) -> None:
    wang = Study(site="TS01", modality="CT", description="头颅CT平扫", patient_name="王^小明")
    doe = Study(site="TS01", modality="DX", description="胸部正位", patient_name="DOE^JOHN")
    for study in (wang, doe):
        assert world.announce(study).status_code == 200
    with world.factory.begin() as session:  # different IDs and accession numbers
        for study, pid, acc in ((wang, "P-2024-0815", "ACC77"), (doe, "Q9", "B%_1")):
            row = session.scalars(select(Study_).where(Study_.study_instance_uid == study.uid))
            found = row.one()
            found.patient_id, found.accession_number = pid, acc

    def search(q: str) -> set[str]:
        r = world.get("dr_li", "/api/v1/worklist", params={"q": q})
        assert r.status_code == 200, r.text
        return {i["study_instance_uid"] for i in r.json()}

    assert search("王小明") == search("王") == search("小明") == {wang.uid}
    assert search("doe john") == search("John") == {doe.uid}
    assert search("2024-0815") == search("acc77") == {wang.uid}
    assert search("B%_") == {doe.uid} and search("A%7") == set()  # no wildcards
    assert search("nobody") == set()
    # a finished study is found too
    world.post("dr_li", f"/api/v1/worklist/{doe.uid}/claim")
    world.put("dr_li", f"/api/v1/studies/{doe.uid}/report", json={"findings": "未见异常"})
    world.post("dr_li", f"/api/v1/studies/{doe.uid}/report/sign", json={"status": "final"})
    assert search("Q9") == {doe.uid}
    items = world.get("dr_li", "/api/v1/worklist").json()
    assert doe.uid not in {i["study_instance_uid"] for i in items}
    # another site's clinic finds nothing of site A
    other = world.get("nurse_ts02", "/api/v1/worklist", params={"q": "王"}).json()
    assert other == []


def test_readyz_names_an_object_store_that_does_not_answer(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])  # nothing listens once the socket is closed
    down = StorageSettings(
        backend="s3",
        endpoint=f"127.0.0.1:{port}",
        access_key=SecretStr("ak"),
        secret_key=SecretStr("sk"),
        secure=False,
        region="us-east-1",
        retries=0,
    )
    app = create_app(
        session_factory=session_factory,
        store=MinioStore(make_client(down), "teleread", create_bucket=False),
        settings=ApiSettings(secret_key="readyz-test-secret-0123456789-abcdefghij"),
    )
    with TestClient(app) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["database"] == "ok"
        assert r.json()["objects"].startswith("unavailable")
        assert client.get("/healthz").status_code == 200  # alive, only not ready
