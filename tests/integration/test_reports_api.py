"""Trusted reports through the API, on SQLite and PostgreSQL: a signed final report no
endpoint can change, addenda that keep the original and its hash, critical results and the
stroke / chest-pain prompt, templates, and the admin's audit trail."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_api_world import Study, World, build_world
from worklist import reports
from worklist.audit import list_events
from worklist.models import Event, Report, User
from worklist.report_hashes import verify_addendum, verify_report
from worklist.report_templates import load_templates
from worklist.repository import get_study


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


def _url(study: Study, tail: str = "") -> str:
    return f"/api/v1/studies/{study.uid}/report{tail}"


def _drafted(world: World, study: Study, reader: str = "dr_li", **body: str) -> dict[str, Any]:
    world.announce(study)
    assert world.post(reader, f"/api/v1/worklist/{study.uid}/claim").status_code == 200
    draft = {"findings": "所见", "impression": "印象", **body}
    r = world.put(reader, _url(study), json=draft)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def _critical(world: World, **overrides: Any) -> dict[str, Any]:
    now = world.clock.now
    body: dict[str, Any] = {
        "finding": "右侧基底节区急性脑出血，约12ml",
        "identified_at": (now - timedelta(minutes=5)).isoformat(),
        "communicated_to_name": "张医生",
        "communicated_to_role": "急诊科医生",
        "communicated_to_phone": "0871-12345678",
        "communicated_at": (now - timedelta(minutes=2)).isoformat(),
        "method": "phone",
        "read_back_confirmed": True,
    }
    body.update(overrides)
    return body


def _load_report(s: Session, uid: str) -> Report:
    boss = s.scalars(select(User).where(User.username == "boss")).one()
    study = get_study(session=s, study_uid=uid, viewer=boss)
    assert study is not None
    report = reports.get_report(session=s, study=study)
    assert report is not None
    return report


def _event_kinds(world: World, uid: str) -> list[str]:
    with world.factory() as s:
        return list(s.scalars(select(Event.kind).where(Event.study_uid == uid).order_by(Event.id)))


def _report_row(world: World, uid: str) -> tuple[str, str, str | None, bool, str]:
    with world.factory() as s:
        report = _load_report(s, uid)
        study = report.study
        return (
            report.findings,
            report.status,
            report.content_sha256,
            verify_report(report),
            study.status,
        )


def test_a_signed_final_report_cannot_change(world: World) -> None:
    study = Study("TS01", "CT", "胸部CT平扫", count=1)
    draft = _drafted(world, study, recommendation="3个月后复查")
    assert draft["recommendation"] == "3个月后复查" and draft["addenda"] == []
    world.clock.tick(60)
    signed = world.post("dr_li", _url(study, "/sign"), json={"status": "final"})
    assert signed.status_code == 200, signed.text
    sha = signed.json()["content_sha256"]
    before = _report_row(world, study.uid)
    assert before == ("所见", "final", sha, True, "final")

    # every route that could change it is refused (409), by the signer and by anyone else
    change = {"findings": "改了", "impression": "改了", "recommendation": "改了"}
    attempts = [
        ("dr_li", "put", _url(study), change),
        ("dr_wang", "put", _url(study), change),
        ("boss", "put", _url(study), change),
        ("dr_li", "post", _url(study, "/sign"), {"status": "final"}),
        ("dr_li", "post", _url(study, "/sign"), {"status": "preliminary"}),
        ("dr_wang", "post", _url(study, "/sign"), {"status": "final"}),
    ]
    for user, method, path, body in attempts:
        r = getattr(world, method)(user, path, json=body)
        assert r.status_code == 409, (user, method, path, r.text)
        assert r.json()["detail"]
    assert world.put("nurse_ts01", _url(study), json=change).status_code == 403
    # re-claiming a final study is refused too, so no claim can lead to an edit
    assert world.post("dr_li", f"/api/v1/worklist/{study.uid}/claim").status_code == 409
    assert _report_row(world, study.uid) == before

    # the refusals are in the audit trail
    with world.factory() as s:
        found = list_events(session=s, object_id=study.uid)
    refused = [e for e in found if e.object_type == "report" and e.outcome != "success"]
    assert len(refused) == len(attempts)
    assert {e.outcome for e in refused} == {"refused"}
    assert {e.detail["error"] for e in refused} == {"ReportSigned"}


def test_addenda_keep_the_original_and_its_hash(world: World) -> None:
    study = Study("TS01", "CT", "胸部CT平扫", count=1)
    _drafted(world, study)
    # not final yet: an addendum is refused (edit the draft instead); no report: 404
    r = world.post("dr_li", _url(study, "/addenda"), json={"text": "补充", "reason": "漏写"})
    assert r.status_code == 409 and "draft" in r.json()["detail"]
    bare = Study("TS01", "CT", "腹部CT", count=1)
    world.announce(bare)
    r = world.post("dr_li", _url(bare, "/addenda"), json={"text": "补充", "reason": "漏写"})
    assert r.status_code == 404

    world.clock.tick(60)
    sha = world.post("dr_li", _url(study, "/sign"), json={"status": "final"}).json()
    sha = sha["content_sha256"]

    # any radiologist, no claim needed; admins and clinic staff may not
    body = {"text": "右肺下叶小结节，约4mm，前次漏报。", "reason": "复阅发现遗漏"}
    for user in ("boss", "nurse_ts01", "gw_ts01"):
        assert world.post(user, _url(study, "/addenda"), json=body).status_code == 403, user
    assert (
        world.post("dr_wang", _url(study, "/addenda"), json={"text": " ", "reason": "x"})
    ).status_code == 422
    assert world.post("dr_wang", _url(study, "/addenda"), json={"text": "x"}).status_code == 422

    world.clock.tick(600)
    with world.factory() as s:  # the author as people know him
        wang = s.scalars(select(User).where(User.username == "dr_wang")).one()
        wang.display_name = "王医生"
        s.commit()
        world.client.app.state.user_cache.discard_user(wang.id)  # type: ignore[attr-defined]
    r = world.post("dr_wang", _url(study, "/addenda"), json=body)
    assert r.status_code == 201, r.text
    amended = r.json()
    assert amended["status"] == "amended"
    assert amended["content_sha256"] == sha and amended["findings"] == "所见"
    assert amended["signed_by"] == "dr_li"
    assert amended["updated_at"] > amended["signed_at"]  # when it was last amended
    [first] = amended["addenda"]
    assert first["author"] == "dr_wang" and first["reason"] == "复阅发现遗漏"
    assert first["author_name"] == "王医生"
    assert first["text"] == body["text"] and len(first["content_sha256"]) == 64
    assert first["created_at"].startswith(world.clock.now.isoformat()[:19])
    assert _report_row(world, study.uid) == ("所见", "amended", sha, True, "amended")

    # still immutable; a second addendum appends
    assert world.put("dr_li", _url(study), json={"findings": "x"}).status_code == 409
    assert world.post("dr_li", _url(study, "/sign"), json={"status": "final"}).status_code == 409
    world.clock.tick(60)
    r = world.post("dr_li", _url(study, "/addenda"), json={"text": "更正", "reason": "笔误"})
    assert r.status_code == 201
    assert [a["author"] for a in r.json()["addenda"]] == ["dr_wang", "dr_li"]
    assert r.json()["content_sha256"] == sha

    # the clinic sees the amended report with its addenda; the other site's clinic cannot
    seen = world.get("nurse_ts01", _url(study))
    assert seen.status_code == 200
    assert seen.json()["status"] == "amended" and len(seen.json()["addenda"]) == 2
    listed = world.get("nurse_ts01", "/api/v1/reports").json()
    assert [len(x["addenda"]) for x in listed] == [2]
    assert world.get("nurse_ts02", _url(study)).status_code == 404
    assert world.post("dr_li", _url(study, "/addenda"), json=body).status_code == 201

    # and the addenda verify against the report they amend
    with world.factory() as s:
        report = _load_report(s, study.uid)
        assert verify_report(report)
        addenda = reports.addenda_for(session=s, report_ids=[report.id])[report.id]
        assert len(addenda) == 3 and all(verify_addendum(a, report) for a in addenda)
    kinds = _event_kinds(world, study.uid)
    assert kinds.count("report_signed") == 1 and kinds.count("report_amended") == 3


def test_critical_results_and_the_prompt(world: World) -> None:
    stroke = Study("TS01", "CT", "头颅CT平扫 急性脑卒中", count=1)
    draft = _drafted(world, stroke)
    assert draft["critical_result_expected"] is True and draft["critical_results"] == []

    # preliminary needs nothing; final without a critical result or a reason: 422
    r = world.post("dr_li", _url(stroke, "/sign"), json={"status": "preliminary"})
    assert r.status_code == 200
    for body in ({"status": "final"}, {"status": "final", "no_critical_result_reason": "  "}):
        r = world.post("dr_li", _url(stroke, "/sign"), json=body)
        assert r.status_code == 422, r.text
        assert "no_critical_result_reason" in r.json()["detail"]
        assert "critical result" in r.json()["detail"]
    assert world.get("dr_li", _url(stroke)).json()["status"] == "preliminary"

    # who may record one, and what is refused
    url = _url(stroke, "/critical-results")
    for user in ("boss", "nurse_ts01", "gw_ts01"):
        assert world.post(user, url, json=_critical(world)).status_code == 403, user
    now = world.clock.now
    bad = [
        _critical(world, method="fax"),
        _critical(world, communicated_at=(now - timedelta(minutes=9)).isoformat()),
        _critical(world, communicated_at=(now + timedelta(hours=1)).isoformat()),
        _critical(world, identified_at=now.replace(tzinfo=None).isoformat()),
        _critical(world, communicated_to_name=""),
        _critical(world, finding="   "),
        {k: v for k, v in _critical(world).items() if k != "read_back_confirmed"},
    ]
    for body in bad:
        r = world.post("dr_li", url, json=body)
        assert r.status_code == 422, (body, r.text)
    assert world.get("dr_li", url).json() == []

    # it belongs to the case: while dr_li holds the claim, another radiologist may not
    refused = world.post("dr_wang", url, json=_critical(world))
    assert refused.status_code == 403 and refused.json()["code"] == "not_the_case_reader"
    r = world.post("dr_li", url, json=_critical(world))
    assert r.status_code == 201, r.text
    recorded = r.json()
    assert recorded["recorded_by"] == "dr_li" and recorded["method"] == "phone"
    assert recorded["read_back_confirmed"] is True
    assert recorded["communicated_to_role"] == "急诊科医生"
    assert recorded["recorded_at"].startswith(world.clock.now.isoformat()[:19])
    assert [c["finding"] for c in world.get("dr_li", url).json()] == [recorded["finding"]]
    assert world.get("nurse_ts01", url).status_code == 403  # the clinic reads the report

    world.clock.tick(60)
    r = world.post("dr_li", _url(stroke, "/sign"), json={"status": "final"})
    assert r.status_code == 200, r.text
    assert r.json()["no_critical_result_reason"] is None
    # the clinic sees it with the report; a critical result may follow a signed report too
    seen = world.get("nurse_ts01", _url(stroke)).json()
    assert seen["critical_result_expected"] is True
    assert seen["critical_results"][0]["communicated_to_name"] == "张医生"
    later = _critical(world, method="in_person", read_back_confirmed=False)
    assert world.post("dr_li", url, json=later).status_code == 201
    seen = world.get("nurse_ts01", _url(stroke)).json()
    assert [c["method"] for c in seen["critical_results"]] == ["phone", "in_person"]
    assert world.get("nurse_ts02", _url(stroke)).status_code == 404

    # chest pain: signed with a reason instead; routine studies are not prompted
    chest = Study("TS01", "CT", "胸痛 CTA", count=1)
    assert _drafted(world, chest)["critical_result_expected"] is True
    reason = "主动脉及肺动脉未见异常，无危急值"
    r = world.post(
        "dr_li",
        _url(chest, "/sign"),
        json={"status": "final", "no_critical_result_reason": reason},
    )
    assert r.status_code == 200, r.text
    assert r.json()["no_critical_result_reason"] == reason
    routine = Study("TS01", "DX", "胸部正位 体检", count=1)
    assert _drafted(world, routine)["critical_result_expected"] is False
    assert world.post("dr_li", _url(routine, "/sign"), json={"status": "final"}).status_code == 200

    # the event stream and webhooks hear of each step (refusals publish nothing)
    kinds = _event_kinds(world, stroke.uid)
    assert [k for k in kinds if k.startswith(("report", "critical"))] == [
        "report_signed",  # preliminary
        "critical_result",
        "report_signed",  # final
        "critical_result",
    ]


def test_templates_match_the_study(world: World, tmp_path: Path) -> None:
    cases = {
        "head_ct_stroke": Study("TS01", "CT", "头颅CT平扫 急性脑卒中", count=1),
        "chest_cta_pain": Study("TS01", "CT", "胸痛 CTA", count=1),
        "chest_dr": Study("TS01", "DX", "胸部正位", count=1),
        "generic_ct": Study("TS01", "CT", "腹部CT平扫", count=1),
    }
    for study in cases.values():
        world.announce(study)
    for key, study in cases.items():
        r = world.get("dr_li", _url(study, "/template"))
        assert r.status_code == 200, r.text
        assert r.json()["key"] == key, study.description
        assert r.json()["findings"] and r.json()["impression"]
    stroke = cases["head_ct_stroke"]
    assert "出血" in world.get("dr_li", _url(stroke, "/template")).json()["findings"]
    assert world.get("boss", _url(stroke, "/template")).status_code == 200
    assert world.get("nurse_ts01", _url(stroke, "/template")).status_code == 403
    mr = Study("TS01", "MR", "头颅MR", count=1)
    world.announce(mr)
    r = world.get("dr_li", _url(mr, "/template"))
    assert r.status_code == 404 and "template" in r.json()["detail"]
    assert world.get("dr_li", "/api/v1/studies/1.2.3.4/report/template").status_code == 404

    listed = world.get("dr_li", "/api/v1/report-templates")
    assert listed.status_code == 200
    assert [t["key"] for t in listed.json()] == [
        "chest_cta_pain",
        "chest_dr",
        "generic_ct",
        "generic_dr",
        "head_ct_stroke",
    ]
    assert world.get("nurse_ts01", "/api/v1/report-templates").status_code == 403

    # a county directory adds templates and replaces built-in ones with the same key
    county = tmp_path / "county"
    county.mkdir()
    (county / "head_ct_stroke.yaml").write_text(
        "key: head_ct_stroke\nname: 本县卒中模板\nmatch: {categories: [stroke], "
        "modalities: [CT]}\nfindings: 本县所见\nimpression: 本县印象\n",
        encoding="utf-8",
    )
    (county / "head_mr.yaml").write_text(
        "key: head_mr\nname: 头颅MR\nmatch: {modalities: [MR], keywords: [头]}\n"
        "findings: MR所见\nimpression: MR印象\n",
        encoding="utf-8",
    )
    world.client.app.state.report_templates = load_templates(county)  # type: ignore[attr-defined]
    assert world.get("dr_li", _url(stroke, "/template")).json()["name"] == "本县卒中模板"
    assert world.get("dr_li", _url(mr, "/template")).json()["key"] == "head_mr"
    assert len(world.get("dr_li", "/api/v1/report-templates").json()) == 6


def test_audit_is_admin_only_and_covers_every_report_endpoint(world: World) -> None:
    for user in ("dr_li", "nurse_ts01", "gw_ts01"):
        assert world.get(user, "/api/v1/audit").status_code == 403, user
    assert world.get(None, "/api/v1/audit").status_code == 401

    stroke = Study("TS01", "CT", "头颅CT平扫 急性脑卒中", count=1)
    world.announce(stroke)
    start = world.clock.now
    steps: list[tuple[str, str, str, str, dict[str, Any] | None, int]] = [
        ("report_template_viewed", "dr_li", "get", "/template", None, 200),
        ("report_draft_saved", "dr_li", "put", "", {"findings": "f", "impression": "i"}, 200),
        ("report_viewed", "dr_wang", "get", "", None, 200),
        ("critical_result_recorded", "dr_li", "post", "/critical-results", _critical(world), 201),
        ("critical_results_viewed", "dr_wang", "get", "/critical-results", None, 200),
        ("report_signed", "dr_li", "post", "/sign", {"status": "final"}, 200),
        ("report_addendum_added", "dr_wang", "post", "/addenda", {"text": "t", "reason": "r"}, 201),
        ("report_viewed", "nurse_ts01", "get", "", None, 200),
    ]
    assert world.post("dr_li", f"/api/v1/worklist/{stroke.uid}/claim").status_code == 200
    for _action, user, method, tail, body, code in steps:
        world.clock.tick(1)
        kw = {"json": body} if body is not None else {}
        r = getattr(world, method)(user, _url(stroke, tail), **kw)
        assert r.status_code == code, (tail, r.text)
    world.clock.tick(1)
    listed = world.get("nurse_ts01", "/api/v1/reports")
    assert listed.status_code == 200
    world.client.app.state.audit_writer.flush()  # type: ignore[attr-defined]  # views: batched

    r = world.get("boss", "/api/v1/audit", params={"object_id": stroke.uid, "limit": 100})
    assert r.status_code == 200, r.text
    events = list(reversed(r.json()))  # oldest first
    report_events = [e for e in events if e["object_type"] == "report"]
    assert [(e["action"], e["username"]) for e in report_events] == [
        (action, user) for action, user, *_ in steps
    ]
    for e in events:
        assert e["client_addr"] == "testclient" and e["outcome"] == "success"
    nurse_view = report_events[-1]
    assert (nurse_view["role"], nurse_view["site"]) == ("clinic", "TS01")
    assert (report_events[0]["role"], report_events[0]["site"]) == ("radiologist", "")
    assert report_events[0]["detail"] == {"template": "head_ct_stroke"}
    assert report_events[5]["detail"]["content_sha256"]

    # filters: action, username, time window, paging
    def audit(**params: Any) -> list[dict[str, Any]]:
        got = world.get("boss", "/api/v1/audit", params=params)
        assert got.status_code == 200, got.text
        result: list[dict[str, Any]] = got.json()
        return result

    viewed = audit(action="report_viewed")
    assert [e["username"] for e in viewed] == ["nurse_ts01", "dr_wang"]
    assert [e["action"] for e in audit(username="nurse_ts01")] == [
        "reports_listed",
        "report_viewed",
    ]
    window = audit(
        object_id=stroke.uid,
        since=(start + timedelta(seconds=3)).isoformat(),
        until=(start + timedelta(seconds=6)).isoformat(),
    )
    assert [e["action"] for e in window] == [
        "critical_results_viewed",
        "critical_result_recorded",
        "report_viewed",
    ]
    page = audit(object_id=stroke.uid, limit=2, offset=1)
    assert [e["id"] for e in page] == [e["id"] for e in reversed(events)][1:3]
    naive = {"since": "2026-01-01T00:00:00"}
    assert world.get("boss", "/api/v1/audit", params=naive).status_code == 422
    assert world.get("boss", "/api/v1/audit", params={"limit": 0}).status_code == 422
    # reading the trail is audited too (the last successful read above was the page)
    last = audit(action="audit_viewed")[0]
    assert last["username"] == "boss" and last["object_type"] == "audit"
    assert last["detail"] == {"filters": {"object_id": stroke.uid}, "count": 2, "offset": 1}


def test_report_routes_are_in_the_openapi_document(world: World) -> None:
    paths = world.get(None, "/openapi.json").json()["paths"]
    for path in (
        "/api/v1/studies/{study_uid}/report/addenda",
        "/api/v1/studies/{study_uid}/report/critical-results",
        "/api/v1/studies/{study_uid}/report/template",
        "/api/v1/report-templates",
        "/api/v1/audit",
    ):
        assert path in paths, path
    sign = paths["/api/v1/studies/{study_uid}/report/sign"]["post"]
    assert "422" in sign["responses"] and "409" in sign["responses"]
