"""Share links as stored objects, through the real API on SQLite and PostgreSQL: made only on
purpose (never by a PDF download), listed per report, revoked one by one, dead with their
creator's access, and every use audited anonymously with the link's id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_api_world import World, build_world
from tests.integration.test_report_outputs_api import (
    IMPRESSION,
    announce_ct,
    pdf_text,
    write_report,
)
from tests.pdf_checks import qr_codes
from viewer_api.outputs.settings import OutputSettings
from worklist.models import AuditEvent, ShareLink

PUBLIC = "https://county.example"


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    for w in build_world(session_factory, tmp_path):
        w.client.app.state.output_settings = OutputSettings(  # type: ignore[attr-defined]
            hospital_name="某某县人民医院", public_url=PUBLIC
        )
        yield w


def make_link(world: World, uid: str, username: str = "nurse_ts01") -> dict[str, object]:
    r = world.post(username, f"/api/v1/studies/{uid}/report/share-links")
    assert r.status_code == 201, r.text
    return dict(r.json())


def local(link: dict[str, object]) -> str:
    url = str(link["url"])
    assert url.startswith(f"{PUBLIC}/api/v1/share/")
    return url.removeprefix(PUBLIC)


def share_views(world: World, link_id: object) -> list[AuditEvent]:
    world.client.app.state.audit_writer.flush()  # type: ignore[attr-defined]
    with world.factory() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "report_share_viewed")
        ).all()
        return [e for e in rows if (e.detail or {}).get("share_link_id") == link_id]


def test_a_pdf_download_makes_no_link(world: World) -> None:
    study = announce_ct(world)
    write_report(world, study.uid, sign="final")
    for user in ("nurse_ts01", "dr_li"):
        r = world.get(user, f"/api/v1/studies/{study.uid}/report.pdf")
        assert r.status_code == 200
        text = pdf_text(r.content)
        assert IMPRESSION in text and "/api/v1/share/" not in text
        assert qr_codes(r.content) == []
    with world.factory() as session:
        assert session.scalars(select(ShareLink)).all() == []
    listed = world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report/share-links")
    assert listed.status_code == 200 and listed.json() == []


def test_a_link_opens_is_listed_revoked_then_gone(world: World) -> None:
    study = announce_ct(world)
    write_report(world, study.uid, sign="final")
    link = make_link(world, study.uid)
    assert link["state"] == "active" and link["created_by"] == "nurse_ts01"
    assert link["study_instance_uid"] == study.uid
    path = local(link)

    page = world.client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert IMPRESSION in page.text and "正式报告" in page.text and "<script" not in page.text
    pdf = world.client.get(f"{path}/report.pdf")
    assert pdf.status_code == 200 and IMPRESSION in pdf_text(pdf.content)
    assert qr_codes(pdf.content) == [link["url"]]  # its own QR code
    png = world.client.get(f"{path}/instances/{study.sop_uids[0]}/rendered?size=64")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    other = announce_ct(world, site="TS02")
    assert world.client.get(f"{path}/instances/{other.sop_uids[0]}/rendered").status_code == 404

    # every use: an anonymous audit row naming the link (images once per few minutes)
    views = share_views(world, link["id"])
    assert sorted(str((e.detail or {})["via"]) for e in views) == ["images", "page", "pdf"]
    assert all(e.user_id is None and e.object_id == study.uid for e in views)

    # listed for the report (never with its token), by the clinic and by readers
    second = make_link(world, study.uid, "dr_li")
    for user in ("nurse_ts01", "dr_wang", "boss"):
        listed = world.get(user, f"/api/v1/studies/{study.uid}/report/share-links").json()
        assert [x["id"] for x in listed] == [second["id"], link["id"]]
        assert all(x["url"] is None for x in listed)
    assert (
        world.get("nurse_ts02", f"/api/v1/studies/{study.uid}/report/share-links").status_code
        == 404
    )

    # revoked one by one: 410 with its code; the other link still works
    revoke = f"/api/v1/studies/{study.uid}/report/share-links/{link['id']}"
    assert world.client.delete(revoke, headers=world.headers("nurse_ts02")).status_code == 404
    r = world.client.delete(revoke, headers=world.headers("nurse_ts01"))
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    assert r.json()["revoked_by"] == "nurse_ts01"
    for gone in (path, f"{path}/report.pdf", f"{path}/instances/{study.sop_uids[0]}/rendered"):
        answer = world.client.get(gone)
        assert answer.status_code == 410, gone
        assert answer.json()["code"] == "share_link_revoked"
    assert world.client.get(local(second)).status_code == 200
    refused = [e for e in share_views(world, link["id"]) if e.outcome == "refused"]
    assert len(refused) == 3 and all(e.object_id == study.uid for e in refused)
    listed = world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report/share-links").json()
    assert [x["state"] for x in listed] == ["active", "revoked"]
    missing = f"/api/v1/studies/{study.uid}/report/share-links/{int(str(second['id'])) + 99}"
    assert world.client.delete(missing, headers=world.headers("dr_li")).status_code == 404
    huge = f"/api/v1/studies/{study.uid}/report/share-links/{2**40}"
    assert world.client.delete(huge, headers=world.headers("dr_li")).status_code == 422

    # unknown: 404; expired: 410 (the default lifetime is 24 h)
    unknown = world.client.get("/api/v1/share/" + "A" * 43)
    assert unknown.status_code == 404 and unknown.json()["code"] == "share_link_not_found"
    assert world.client.get("/api/v1/share/not-a-token").status_code == 404
    world.clock.tick(24 * 3600 + 1)
    expired = world.client.get(local(second))
    assert expired.status_code == 410 and expired.json()["code"] == "share_link_expired"


def test_disabling_its_creator_kills_the_link(world: World) -> None:
    study = announce_ct(world)
    write_report(world, study.uid, sign="final")
    link = make_link(world, study.uid)
    assert world.client.get(local(link)).status_code == 200
    world.clock.tick(1)
    assert world.post("boss", "/api/v1/users/nurse_ts01/disable").status_code == 200
    dead = world.client.get(local(link))
    assert dead.status_code == 410 and dead.json()["code"] == "share_link_revoked"
    listed = world.get("dr_li", f"/api/v1/studies/{study.uid}/report/share-links").json()
    assert [x["state"] for x in listed] == ["creator_revoked"]
    # enabling the account again does not bring back what it made before
    assert world.post("boss", "/api/v1/users/nurse_ts01/enable").status_code == 200
    assert world.client.get(local(link)).status_code == 410


def test_a_link_needs_a_signed_report(world: World) -> None:
    study = announce_ct(world)
    write_report(world, study.uid, sign=None)
    r = world.post("nurse_ts01", f"/api/v1/studies/{study.uid}/report/share-links")
    assert r.status_code == 404
    assert world.post("dr_li", f"/api/v1/studies/{study.uid}/report/share-links").status_code == 409
    with world.factory() as session:
        assert session.scalars(select(ShareLink)).all() == []


def test_a_link_dies_when_its_report_is_withdrawn_or_signed_again(world: World) -> None:
    study = announce_ct(world)
    write_report(world, study.uid, sign="preliminary")
    first = make_link(world, study.uid)
    assert world.client.get(local(first)).status_code == 200
    # the preliminary report reopened as a draft: withdrawn, and signing again does not revive it
    world.clock.tick(1)
    body = {"findings": "改", "impression": IMPRESSION}
    assert world.put("dr_li", f"/api/v1/studies/{study.uid}/report", json=body).status_code == 200
    dead = world.client.get(local(first))
    assert dead.status_code == 410 and dead.json()["code"] == "share_link_withdrawn"
    sign = f"/api/v1/studies/{study.uid}/report/sign"
    assert world.post("dr_li", sign, json={"status": "preliminary"}).status_code == 200
    assert world.client.get(f"{local(first)}/report.pdf").status_code == 410
    # the final report supersedes the preliminary one a link was made for
    second = make_link(world, study.uid)
    world.clock.tick(1)
    assert world.post("dr_li", sign, json={"status": "final"}).status_code == 200
    assert world.client.get(local(second)).json()["code"] == "share_link_withdrawn"
    # an addendum keeps the signature: the link shows the amended report
    third = make_link(world, study.uid)
    world.clock.tick(1)
    add = {"text": "补充所见", "reason": "复阅"}
    addenda = f"/api/v1/studies/{study.uid}/report/addenda"
    assert world.post("dr_wang", addenda, json=add).status_code == 201
    page = world.client.get(local(third))
    assert page.status_code == 200 and "补充所见" in page.text
    listed = world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/report/share-links").json()
    assert [x["state"] for x in listed] == ["active", "report_withdrawn", "report_withdrawn"]
    refused = [e for e in share_views(world, first["id"]) if e.outcome == "refused"]
    assert [(e.detail or {})["refused"] for e in refused] == ["ShareLinkWithdrawn"] * 2
