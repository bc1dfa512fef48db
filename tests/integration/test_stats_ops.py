"""The operations figures (worklist.stats and GET /api/v1/stats) on SQLite and PostgreSQL:
volumes per site and modality, turnaround arrival -> final against the deadline, urgent
counts; admin only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_api_world import Study, World, build_world
from worklist.stats import operations_stats


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


def _read_and_sign(world: World, study: Study, *, after_minutes: float) -> None:
    world.clock.tick(after_minutes * 60)
    assert world.post("dr_li", f"/api/v1/worklist/{study.uid}/claim").status_code == 200
    url = f"/api/v1/studies/{study.uid}/report"
    r = world.put("dr_li", url, json={"findings": "所见", "impression": "印象"})
    assert r.status_code == 200, r.text
    body: dict[str, str] = {"status": "final"}
    if "卒中" in study.description or "胸痛" in study.description:
        body["no_critical_result_reason"] = "无危急值"
    r = world.post("dr_li", f"{url}/sign", json=body)
    assert r.status_code == 200, r.text


def test_stats_volumes_turnaround_and_urgent_counts(world: World) -> None:
    stroke = Study("TS01", "CT", "头颅CT平扫 急性脑卒中 左侧肢体无力")
    chest = Study("TS02", "CT", "胸痛 CTA 主动脉夹层?")
    routine_ct = Study("TS01", "CT", "腰椎CT")
    routine_dx = Study("TS01", "DX", "胸部正位片")
    for s in (stroke, chest, routine_ct, routine_dx):
        gateway = "gw_all" if s.site == "TS02" else "gw_ts01"
        assert world.announce(s, gateway=gateway).status_code == 200
    items = {i["study_instance_uid"]: i for i in world.get("dr_li", "/api/v1/worklist").json()}
    assert items[stroke.uid]["category"] == "stroke"
    assert items[chest.uid]["category"] == "chest_pain"

    _read_and_sign(world, stroke, after_minutes=15)  # within its 20 min
    _read_and_sign(world, chest, after_minutes=30)  # 45 min after arrival: late
    _read_and_sign(world, routine_ct, after_minutes=60)

    r = world.get("boss", "/api/v1/stats", params={"days": 7})
    assert r.status_code == 200, r.text
    stats = r.json()
    assert stats["total_studies"] == 4
    volumes = {(v["site"], v["modality"]): v["count"] for v in stats["volumes"]}
    assert volumes == {("TS01", "CT"): 2, ("TS01", "DX"): 1, ("TS02", "CT"): 1}
    ta = {t["category"]: t for t in stats["turnaround"]}
    assert ta["stroke"]["count"] == 1 and ta["stroke"]["within_deadline"] == 1
    assert ta["stroke"]["p50_minutes"] == pytest.approx(15, abs=0.1)
    assert ta["stroke"]["deadline_minutes"] == 20
    assert ta["chest_pain"]["count"] == 1 and ta["chest_pain"]["within_deadline"] == 0
    assert ta["chest_pain"]["p50_minutes"] == pytest.approx(45, abs=0.1)
    assert ta["routine"]["count"] == 1
    assert ta["routine"]["p50_minutes"] == pytest.approx(105, abs=0.1)
    assert ta["routine"]["deadline_minutes"] == 24 * 60
    assert sum(b["count"] for b in ta["routine"]["histogram"]) == 1
    urgent = {u["category"]: u for u in stats["urgent"]}
    assert urgent["stroke"] == {
        "category": "stroke",
        "studies": 1,
        "final": 1,
        "critical_results": 0,
    }
    assert urgent["chest_pain"]["studies"] == 1
    assert sum(d["stroke"] + d["chest_pain"] + d["routine"] for d in stats["by_day"]) == 4

    one_site = world.get("boss", "/api/v1/stats", params={"site": "TS02"}).json()
    assert one_site["total_studies"] == 1

    # a period that ends before the arrivals holds nothing
    with world.factory() as session:
        empty = operations_stats(session=session, now=world.clock.now - timedelta(days=2), days=1)
    assert empty.total_studies == 0
    assert all(t.count == 0 and t.p50_minutes is None for t in empty.turnaround)


def test_stats_is_admin_only_and_checks_its_input(world: World) -> None:
    for user in ("dr_li", "nurse_ts01", "gw_ts01"):
        assert world.get(user, "/api/v1/stats").status_code == 403
    assert world.get(None, "/api/v1/stats").status_code == 401
    assert world.get("boss", "/api/v1/stats", params={"days": 0}).status_code == 422
    assert world.get("boss", "/api/v1/stats", params={"days": 10_000}).status_code == 422
    r = world.get("boss", "/api/v1/stats")
    assert r.status_code == 200 and r.json()["total_studies"] == 0
