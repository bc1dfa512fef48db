"""The study timeline through the real API on SQLite and PostgreSQL: a gateway whose clock
runs behind the county's is measured by its status report and its hops are put on the
county's clock; an older gateway's announcement (no upload time) still files and lists the
study; the deadlines are followed as they run; who may see a study may see its timeline."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_api_world import Study, World, build_world

STROKE = "头颅CT平扫 急性脑卒中"
CHINA = timezone(timedelta(hours=8))


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_gateway_hops_are_put_on_the_county_clock(world: World) -> None:
    behind = timedelta(seconds=90)  # the township's clock
    sent_at = (world.clock.now - behind).isoformat()
    status = {"pending_urgent": 0, "pending_routine": 0, "sent_at": sent_at}
    assert world.post("gw_ts01", "/api/v1/gateway/status", json=status).status_code == 204
    # a report held up on its way says nothing new: the smallest of the last minutes stands
    world.clock.tick(30)
    slow = {**status, "sent_at": (world.clock.now - behind - timedelta(seconds=4)).isoformat()}
    assert world.post("gw_ts01", "/api/v1/gateway/status", json=slow).status_code == 204
    gateways = world.get("boss", "/api/v1/ops/now").json()["gateways"]
    assert next(g for g in gateways if g["gateway"] == "gw_ts01")["clock_offset_seconds"] == 90

    study = Study(site="TS01", modality="CT", description=STROKE, count=3)
    body = world.payload(study)
    gateway_now = world.clock.now - behind
    scanned = world.clock.now - timedelta(minutes=4)
    for i, item in enumerate(body["instances"]):
        item["received_at"] = (gateway_now - timedelta(seconds=30 - i)).isoformat()
        item["uploaded_at"] = (gateway_now - timedelta(seconds=20 - i)).isoformat()
        local = (scanned + timedelta(seconds=i)).astimezone(CHINA)
        item["dicom_json"] = {
            "00080022": {"vr": "DA", "Value": [local.strftime("%Y%m%d")]},
            "00080032": {"vr": "TM", "Value": [local.strftime("%H%M%S")]},
        }
    assert world.post("gw_ts01", "/api/v1/ingest/instances", json=body).status_code == 200

    timeline = world.get("dr_li", f"/api/v1/studies/{study.uid}/timeline").json()
    assert timeline["gateway_clock_offset_seconds"] == 90
    assert timeline["gateway_clock_corrected"] is True
    hops = {h["hop"]: h for h in timeline["hops"]}
    assert _at(hops["acquired"]["at"]) == scanned
    assert _at(hops["acquired_last"]["at"]) == scanned + timedelta(seconds=2)
    for name, recorded in (
        ("received_first", gateway_now - timedelta(seconds=30)),
        ("received_last", gateway_now - timedelta(seconds=28)),
        ("uploaded_first", gateway_now - timedelta(seconds=20)),
        ("uploaded_last", gateway_now - timedelta(seconds=18)),
    ):
        assert hops[name]["clock"] == "gateway"
        assert _at(hops[name]["recorded_at"]) == recorded, name
        assert _at(hops[name]["at"]) == recorded + behind, name
    assert _at(hops["listed"]["at"]) == world.clock.now
    assert _at(hops["flagged_urgent"]["at"]) == world.clock.now
    # the histogram took scan -> listed down as it was listed (the modality's clock)
    labels = 'category="stroke",site="TS01",stage="scan_to_listed"'
    scraped = world.get("boss", "/metrics").text
    assert f"teleread_api_turnaround_seconds_sum{{{labels}}} 240.0" in scraped
    assert [h["hop"] for h in timeline["hops"]] == [
        "acquired",
        "acquired_last",
        "received_first",
        "received_last",
        "uploaded_first",
        "uploaded_last",
        "listed",
        "flagged_urgent",
        "arrived_last",
    ]
    targets = {t["target"]: t for t in timeline["targets"]}
    assert targets["stroke_read_45min"]["state"] == "running"
    assert targets["read_deadline"]["state"] == "running"
    world.clock.tick(46 * 60)
    timeline = world.get("dr_li", f"/api/v1/studies/{study.uid}/timeline").json()
    targets = {t["target"]: t for t in timeline["targets"]}
    assert targets["stroke_read_45min"]["state"] == "overdue"
    assert targets["stroke_read_45min"]["elapsed_seconds"] == 46 * 60

    # the study's own site's clinic sees it; another site's, a gateway: as for the study
    assert world.get("nurse_ts01", f"/api/v1/studies/{study.uid}/timeline").status_code == 200
    assert world.get("nurse_ts02", f"/api/v1/studies/{study.uid}/timeline").status_code == 404
    assert world.get("gw_ts01", f"/api/v1/studies/{study.uid}/timeline").status_code == 403
    assert world.get("dr_li", "/api/v1/studies/1.2.3.4/timeline").status_code == 404
    trail = world.get("boss", "/api/v1/audit", params={"object_id": study.uid}).json()
    assert "study_timeline_viewed" in {e["action"] for e in trail}


def test_an_older_gateways_study_has_no_upload_hops(world: World) -> None:
    study = Study(site="TS01", modality="DX", description="胸部正位片")
    assert world.announce(study).status_code == 200  # no uploaded_at, no status report
    timeline = world.get("boss", f"/api/v1/studies/{study.uid}/timeline").json()
    assert timeline["gateway_clock_offset_seconds"] is None
    assert timeline["gateway_clock_corrected"] is False
    assert [h["hop"] for h in timeline["hops"]] == [
        "received_first",
        "received_last",
        "listed",
        "arrived_last",
    ]
    assert timeline["stages"] == [
        {"stage": "gateway_to_listed", "start": "received_first", "end": "listed", "seconds": 0.0},
        {
            "stage": "last_image_to_county",
            "start": "received_last",
            "end": "arrived_last",
            "seconds": 0.0,
        },
    ]
    assert [t["target"] for t in timeline["targets"]] == ["read_deadline"]
    # a chest pain CT angiogram is held to the CTA target too (the acquisition is unknown)
    cta = Study(site="TS01", modality="CT", description="胸腹主动脉CTA 突发撕裂样胸背痛1小时")
    assert world.announce(cta).status_code == 200
    timeline = world.get("boss", f"/api/v1/studies/{cta.uid}/timeline").json()
    assert timeline["category"] == "chest_pain"
    targets = {t["target"]: t["state"] for t in timeline["targets"]}
    assert targets == {"read_deadline": "running", "cta_read_10min": "unknown"}


def test_the_periods_turnaround_per_category_and_the_urgent_studies_overdue(
    world: World,
) -> None:
    read = Study(site="TS01", modality="CT", description=STROKE)
    waiting = Study(site="TS02", modality="CT", description=STROKE)
    routine = Study(site="TS01", modality="DX", description="胸部正位片")
    for study in (read, waiting, routine):
        assert world.announce(study, gateway="gw_all").status_code == 200
    came_in = world.clock.now
    world.clock.tick(90)
    assert world.post("dr_li", f"/api/v1/worklist/{read.uid}/claim").status_code == 200
    body = {"findings": "右侧基底节区高密度影。", "impression": "急性脑出血。"}
    assert world.put("dr_li", f"/api/v1/studies/{read.uid}/report", json=body).status_code == 200
    world.clock.tick(300)
    sign = {"status": "preliminary"}
    r = world.post("dr_li", f"/api/v1/studies/{read.uid}/report/sign", json=sign)
    assert r.status_code == 200, r.text
    world.clock.tick(120)
    for _ in range(2):  # the clinic opens the report; its second look ends no stage
        assert world.get("nurse_ts01", f"/api/v1/studies/{read.uid}/report").status_code == 200
        world.clock.tick(60)
    world.clock.tick(50 * 60 - 240)

    # the Prometheus histograms: each headline stage once, as it ended, by site and category
    scraped = world.get("boss", "/metrics").text
    for stage, seconds in (
        ("listed_to_claimed", 90.0),
        ("claimed_to_report", 300.0),
        ("report_to_clinic_opened", 120.0),
    ):
        labels = f'category="stroke",site="TS01",stage="{stage}"'
        assert f"teleread_api_turnaround_seconds_count{{{labels}}} 1.0" in scraped, stage
        assert f"teleread_api_turnaround_seconds_sum{{{labels}}} {seconds}" in scraped, stage
    assert 'site="TS02"' not in scraped  # listed, never claimed: no acquisition time either

    assert world.get("dr_li", "/api/v1/ops/turnaround").status_code == 403
    # "today" starts at local midnight: unless the hour this took crossed it
    same_day = came_in.astimezone(CHINA).date() == world.clock.now.astimezone(CHINA).date()
    for window in ("today", "7d") if same_day else ("7d",):
        r = world.get("boss", "/api/v1/ops/turnaround", params={"window": window})
        assert r.status_code == 200, r.text
        figures = r.json()
        assert figures["window"] == window and figures["studies"] == 3
        by = {c["category"]: c for c in figures["categories"]}
        assert [c["category"] for c in figures["categories"]] == [
            "stroke",
            "chest_pain",
            "routine",
        ]
        assert (by["stroke"]["studies"], by["chest_pain"]["studies"]) == (2, 0)
        assert by["routine"]["studies"] == 1
        stages = {s["stage"]: s for s in by["stroke"]["stages"]}
        claimed = stages["listed_to_claimed"]
        assert (claimed["count"], claimed["p50_seconds"], claimed["p95_seconds"]) == (1, 90, 90)
        assert stages["claimed_to_report"]["p90_seconds"] == 300
        assert stages["listed_to_report"]["p50_seconds"] == 390
        assert stages["gateway_to_listed"]["count"] == 2
        targets = by["stroke"]["targets"]["stroke_read_45min"]
        assert (targets["met"], targets["overdue"]) == (1, 1)
        overdue = figures["overdue_urgent"]
        assert [o["study_instance_uid"] for o in overdue] == [waiting.uid]
        assert overdue[0]["site"] == "TS02" and overdue[0]["waiting_after"] == "arrived_last"
        assert set(overdue[0]["targets"]) == {"read_deadline", "stroke_read_45min"}
    one_site = world.get(
        "boss", "/api/v1/ops/turnaround", params={"site": "TS02", "window": "7d"}
    ).json()
    assert one_site["studies"] == 1
    assert world.get("boss", "/api/v1/ops/turnaround?window=30d").status_code == 422

    # per site and week: the headline stages by category, the urgent deadlines kept
    weekly = world.get("boss", "/api/v1/ops/turnaround/weekly").json()
    assert weekly["studies"] == 3 and len(weekly["weeks"]) == 4
    assert weekly["stages"] == [
        "scan_to_listed",
        "listed_to_claimed",
        "claimed_to_report",
        "report_to_clinic_opened",
    ]
    rows = {r["site"]: r for r in weekly["rows"]}
    assert set(rows) == {"TS01", "TS02"}
    assert rows["TS01"]["week_start"] in weekly["weeks"]
    assert rows["TS01"]["urgent"] == {"within": 1, "decided": 1, "share": 1.0}
    assert rows["TS02"]["urgent"] == {"within": 0, "decided": 1, "share": 0.0}
    by = {c["category"]: c for c in rows["TS01"]["categories"]}
    assert (by["stroke"]["studies"], by["routine"]["studies"]) == (1, 1)
    stages = {s["stage"]: s for s in by["stroke"]["stages"]}
    assert (
        stages["listed_to_claimed"]["p50_seconds"],
        stages["claimed_to_report"]["p90_seconds"],
    ) == (90, 300)
    assert stages["report_to_clinic_opened"]["count"] == 1
    assert by["routine"]["deadline"]["decided"] == 0  # still running
    ts02 = world.get("boss", "/api/v1/ops/turnaround/weekly", params={"site": "TS02", "weeks": 2})
    assert [r["site"] for r in ts02.json()["rows"]] == ["TS02"]
    assert world.get("boss", "/api/v1/ops/turnaround/weekly?weeks=13").status_code == 422
