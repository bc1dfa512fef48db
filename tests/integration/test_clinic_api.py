"""The clinic hears back, through the real API on SQLite and PostgreSQL: its own site's
events only, critical results acknowledged as their read-back, overdue studies, call-ahead
announcements that make a patient's first instance urgent, and the operations "now"."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_api_world import Study, World, build_world
from worklist import overdue

STROKE = "头颅CT平扫 急性脑卒中"
ROUTINE_HEAD = "头颅CT平扫"


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


def kinds(world: World, user: str, uid: str) -> list[str]:
    events = world.get(user, "/api/v1/events/recent?after=0&limit=500").json()
    return [e["kind"] for e in events if e["study_uid"] == uid]


def claimed_and_drafted(world: World, uid: str) -> None:
    assert world.post("dr_li", f"/api/v1/worklist/{uid}/claim").status_code == 200
    body = {"findings": "右侧基底节区高密度影。", "impression": "急性脑出血。"}
    assert world.put("dr_li", f"/api/v1/studies/{uid}/report", json=body).status_code == 200


def critical(world: World, uid: str, finding: str = "急性主动脉夹层") -> dict[str, Any]:
    now = world.clock.now
    body = {
        "finding": finding,
        "identified_at": (now - timedelta(minutes=2)).isoformat(),
        "communicated_to_name": "赵护士",
        "communicated_to_role": "护士",
        "communicated_to_phone": "13800000000",
        "communicated_at": now.isoformat(),
        "method": "phone",
        "read_back_confirmed": False,
    }
    r = world.post("dr_li", f"/api/v1/studies/{uid}/report/critical-results", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_report_events_reach_the_studys_clinic_only(world: World) -> None:
    study = Study(site="TS01", modality="CT", description=STROKE)
    assert world.announce(study).status_code == 200
    claimed_and_drafted(world, study.uid)
    r = world.post(
        "dr_li", f"/api/v1/studies/{study.uid}/report/sign", json={"status": "preliminary"}
    )
    assert r.status_code == 200
    mine = world.get("nurse_ts01", "/api/v1/events/recent?after=0").json()
    signed = [e for e in mine if e["kind"] == "report_signed" and e["study_uid"] == study.uid]
    assert signed and signed[0]["payload"]["status"] == "preliminary"
    assert world.get("nurse_ts02", "/api/v1/events/recent?after=0").json() == []


def test_critical_result_banner_until_the_clinic_acknowledges(world: World) -> None:
    study = Study(site="TS01", modality="CT", description=STROKE)
    assert world.announce(study).status_code == 200
    claimed_and_drafted(world, study.uid)
    recorded = critical(world, study.uid)
    event = next(
        e
        for e in world.get("nurse_ts01", "/api/v1/events/recent?after=0").json()
        if e["kind"] == "critical_result"
    )
    assert "急性主动脉夹层" not in str(event)  # the finding stays off the stream (webhooks)
    alerts = world.get("nurse_ts01", "/api/v1/clinic/alerts").json()
    (alert,) = alerts["critical"]
    assert alert["finding"] == "急性主动脉夹层" and alert["study_instance_uid"] == study.uid
    assert alert["id"] == recorded["id"]
    assert world.get("nurse_ts02", "/api/v1/clinic/alerts").json()["critical"] == []
    path = f"/api/v1/studies/{study.uid}/report/critical-results/{alert['id']}/acknowledge"
    assert world.post("nurse_ts02", path).status_code == 404  # another site's: as if absent
    assert world.post("dr_li", path).status_code == 403  # the clinic reads back, not a reader

    world.clock.tick(30)
    r = world.post("nurse_ts01", path)
    assert r.status_code == 200, r.text
    assert r.json()["read_back_confirmed"] is True and r.json()["acknowledged_at"]
    again = world.post("nurse_ts01", path)  # idempotent: the first acknowledgement stands
    assert again.json()["acknowledged_at"] == r.json()["acknowledged_at"]
    assert world.get("nurse_ts01", "/api/v1/clinic/alerts").json()["critical"] == []
    (stored,) = world.get("dr_li", f"/api/v1/studies/{study.uid}/report/critical-results").json()
    assert stored["read_back_confirmed"] is True
    assert stored["acknowledged_by"] == "nurse_ts01" and stored["acknowledged_at"]
    assert kinds(world, "nurse_ts01", study.uid).count("critical_result_acknowledged") == 1
    assert kinds(world, "nurse_ts02", study.uid) == []


def test_overdue_study_is_announced_once_to_its_clinic(world: World) -> None:
    study = Study(site="TS01", modality="CT", description=STROKE)
    assert world.announce(study).status_code == 200
    world.clock.tick(21 * 60)  # past the 20-minute stroke deadline, claimed but unread
    assert world.post("dr_li", f"/api/v1/worklist/{study.uid}/claim").status_code == 200
    with world.factory.begin() as session:
        assert len(overdue.scan(session=session, now=world.clock.now)) == 1
    with world.factory.begin() as session:
        assert overdue.scan(session=session, now=world.clock.now) == []
    assert kinds(world, "nurse_ts01", study.uid).count("study_overdue") == 1
    (late,) = world.get("nurse_ts01", "/api/v1/clinic/alerts").json()["overdue"]
    assert late["study_instance_uid"] == study.uid
    assert world.get("nurse_ts02", "/api/v1/clinic/alerts").json()["overdue"] == []
    ops = world.get("boss", "/api/v1/ops/now").json()
    (row,) = [s for s in ops["late"] if s["study_instance_uid"] == study.uid]
    assert row["overdue"] is True and row["category"] == "stroke"
    assert row["claimed_by"] == "dr_li"


def test_call_ahead_makes_the_first_instance_urgent(world: World) -> None:
    body = {
        "patient_id": "P001",
        "patient_name": "张三",
        "category": "stroke",
        "onset_at": (world.clock.now - timedelta(minutes=40)).isoformat(),
        "note": "左侧肢体无力40分钟，120转入",
    }
    no_category = {k: v for k, v in body.items() if k != "category"}
    assert world.post("nurse_ts01", "/api/v1/call-aheads", json=no_category).status_code == 422
    nobody = {**body, "patient_id": "", "patient_name": " "}
    assert world.post("nurse_ts01", "/api/v1/call-aheads", json=nobody).status_code == 422
    other = {**body, "site": "TS02"}
    assert world.post("nurse_ts01", "/api/v1/call-aheads", json=other).status_code == 403
    r = world.post("nurse_ts01", "/api/v1/call-aheads", json=body)
    assert r.status_code == 201, r.text
    call = r.json()
    assert call["site"] == "TS01" and call["study_instance_uid"] is None
    pending = world.get("dr_wang", "/api/v1/call-aheads").json()
    assert [c["id"] for c in pending] == [call["id"]] and pending[0]["patient_name"] == "张三"
    assert world.get("nurse_ts02", "/api/v1/call-aheads").json() == []
    assert "call_ahead" in [e["kind"] for e in world.get("dr_wang", "/api/v1/events/recent").json()]

    # the same patient ID at the other site is another patient
    elsewhere = Study(site="TS02", modality="CT", description=ROUTINE_HEAD)
    assert world.announce(elsewhere, gateway="gw_all").status_code == 200
    assert world.get("dr_li", f"/api/v1/studies/{elsewhere.uid}").json()["priority"] == "routine"

    # the patient's head CT, described as routine, urgent from its first instance
    study = Study(site="TS01", modality="CT", description=ROUTINE_HEAD, count=3)
    first = world.payload(study)
    first["instances"] = first["instances"][:1]
    assert world.post("gw_ts01", "/api/v1/ingest/instances", json=first).status_code == 200
    detail = world.get("dr_li", f"/api/v1/studies/{study.uid}").json()
    assert detail["num_instances"] == 1
    assert (detail["priority"], detail["category"]) == ("stat", "stroke")
    reason = detail["triage_reasons"][0]
    assert (reason["code"], reason["category"]) == ("call_ahead", "stroke")
    assert reason["note"] == "左侧肢体无力40分钟，120转入"
    assert "study_urgent" in kinds(world, "dr_li", study.uid)
    assert world.get("dr_wang", "/api/v1/call-aheads").json() == []  # no longer pending
    assert world.announce(study).status_code == 200  # the rest: still urgent
    assert world.get("dr_li", f"/api/v1/studies/{study.uid}").json()["priority"] == "stat"
    recent = world.get("nurse_ts01", "/api/v1/call-aheads?recent=true").json()
    assert recent[0]["study_instance_uid"] == study.uid


def test_call_ahead_during_the_scan_flags_the_arriving_study(world: World) -> None:
    study = Study(site="TS01", modality="CT", description=ROUTINE_HEAD, patient_name="李^四")
    assert world.announce(study).status_code == 200
    assert world.get("dr_li", f"/api/v1/studies/{study.uid}").json()["priority"] == "routine"
    world.clock.tick(60)
    body = {"patient_name": "李四", "category": "chest_pain", "note": "胸痛1小时"}
    r = world.post("nurse_ts01", "/api/v1/call-aheads", json=body)
    assert r.status_code == 201 and r.json()["study_instance_uid"] == study.uid
    detail = world.get("dr_li", f"/api/v1/studies/{study.uid}").json()
    assert (detail["priority"], detail["category"]) == ("stat", "chest_pain")
    cancel = world.post("nurse_ts01", f"/api/v1/call-aheads/{r.json()['id']}/cancel")
    assert cancel.status_code == 200 and cancel.json()["cancelled_at"] is None  # matched already
    assert (
        world.post("nurse_ts02", f"/api/v1/call-aheads/{r.json()['id']}/cancel").status_code == 404
    )


def test_operations_now_workload_and_gateway_health(world: World) -> None:
    study = Study(site="TS01", modality="CT", description=STROKE)
    assert world.announce(study).status_code == 200
    claimed_and_drafted(world, study.uid)
    world.clock.tick(6 * 60)
    sign = {"status": "final", "no_critical_result_reason": "未见危急征象"}
    assert (
        world.post("dr_li", f"/api/v1/studies/{study.uid}/report/sign", json=sign).status_code
        == 200
    )
    held = Study(site="TS02", modality="CT", description=ROUTINE_HEAD)
    assert world.announce(held, gateway="gw_all").status_code == 200
    assert world.post("dr_wang", f"/api/v1/worklist/{held.uid}/claim").status_code == 200

    status = {
        "pending_urgent": 3,
        "pending_routine": 40,
        "oldest_unsent_age_seconds": 1800.5,
        "last_error": {"error": "S3 PUT failed: connection refused", "attempts": 7},
        "spool_bytes": 123456,
        "upload_failures": 7,
    }
    assert world.post("gw_ts01", "/api/v1/gateway/status", json=status).status_code == 204
    assert world.post("nurse_ts01", "/api/v1/gateway/status", json=status).status_code == 403

    assert world.get("dr_li", "/api/v1/ops/now").status_code == 403
    ops = world.get("boss", "/api/v1/ops/now").json()
    readers = {r["username"]: r for r in ops["readers"]}
    assert readers["dr_li"]["read_today"] == 1 and readers["dr_li"]["claimed_now"] == 0
    assert readers["dr_li"]["median_read_minutes"] == 6.0
    assert readers["dr_wang"]["claimed_now"] == 1 and readers["dr_wang"]["read_today"] == 0
    gateways = {g["gateway"]: g for g in ops["gateways"]}
    ts01 = gateways["gw_ts01"]
    assert ts01["sites"] == ["TS01"] and ts01["stale"] is False
    assert (ts01["pending_urgent"], ts01["pending_routine"]) == (3, 40)
    assert ts01["last_error"] == "S3 PUT failed: connection refused"
    assert ts01["oldest_unsent_age_seconds"] == 1800.5
    assert gateways["gw_all"]["last_contact"] is None and gateways["gw_all"]["stale"] is True
    world.clock.tick(600)  # no report for ten minutes: contact lost
    later = {g["gateway"]: g for g in world.get("boss", "/api/v1/ops/now").json()["gateways"]}
    assert later["gw_ts01"]["stale"] is True
