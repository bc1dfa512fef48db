"""Deadlines that mean what they say, through the real app: a preliminary report meets an
urgent study's read deadline (the final report has its own) and ends its escalation; a
claim about to run out warns its holder, and one that ran out shows whose it was; critical
results belong to the case; a template's choices must be made before signing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_api_world import Study, World, build_world
from worklist import escalation
from worklist.claims import expire_claims, warn_expiring_claims
from worklist.models import User

CHOSEN = {"findings": "脑实质内可见高密度出血灶。", "impression": "右侧基底节区脑出血。"}


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


def _housekeeping(world: World) -> None:
    """One pass of what the housekeeping thread does with claims and deadlines."""
    with world.factory.begin() as session:
        warn_expiring_claims(session=session, now=world.clock.now)
        expire_claims(session=session, now=world.clock.now)
        escalation.scan(session=session, now=world.clock.now)


def _events(world: World, kind: str, uid: str) -> list[dict[str, Any]]:
    feed = world.get("boss", "/api/v1/events/recent", params={"after": 0}).json()
    return [e for e in feed if e["kind"] == kind and e["study_uid"] == uid]


def _item(world: World, uid: str, username: str = "dr_wang") -> dict[str, Any]:
    r = world.get(username, "/api/v1/worklist")
    found = [i for i in r.json() if i["study_instance_uid"] == uid]
    assert found, f"{uid} is not on {username}'s worklist"
    return found[0]


def _stroke(world: World) -> Study:
    study = Study("TS01", "CT", "头颅CT平扫 急性脑卒中 左侧肢体无力")
    assert world.announce(study).status_code == 200
    assert _item(world, study.uid)["category"] == "stroke"
    return study


def test_a_preliminary_report_meets_the_read_deadline_and_ends_escalation(world: World) -> None:
    read, waiting = _stroke(world), _stroke(world)
    url = f"/api/v1/studies/{read.uid}/report"
    assert world.post("dr_li", f"/api/v1/worklist/{read.uid}/claim").status_code == 200
    assert world.put("dr_li", url, json=CHOSEN).status_code == 200
    world.clock.tick(8 * 60)
    r = world.post("dr_li", f"{url}/sign", json={"status": "preliminary"})
    assert r.status_code == 200, r.text
    item = _item(world, read.uid)
    assert item["due"] == "final" and not item["overdue"]
    due_at = datetime.fromisoformat(item["due_at"])
    received = datetime.fromisoformat(item["received_at"])
    assert due_at - received == timedelta(hours=24)  # TELEREAD_WORKLIST_DEADLINE_FINAL_MINUTES
    assert datetime.fromisoformat(item["deadline_at"]) - received == timedelta(minutes=20)

    # past the read deadline and the claim's lease: the read study neither escalates nor
    # shows as overdue; the one nobody read escalates twice
    for _ in range(3):
        world.clock.tick(10 * 60)
        _housekeeping(world)
    assert _events(world, "escalation", read.uid) == []
    assert [e["payload"]["level"] for e in _events(world, "escalation", waiting.uid)] == [1, 2]
    item = _item(world, read.uid)
    assert (item["status"], item["claimed_by"], item["overdue"]) == ("preliminary", None, False)
    assert item["claim_expired_by"] == "dr_li"
    assert _item(world, waiting.uid)["overdue"]


def test_a_claim_about_to_run_out_warns_its_holder(world: World) -> None:
    study = _stroke(world)
    claim = f"/api/v1/worklist/{study.uid}"
    assert world.post("dr_li", f"{claim}/claim").status_code == 200
    world.clock.tick(12 * 60)  # the lease is 15 minutes
    _housekeeping(world)
    assert _events(world, "claim_expiring", study.uid) == []
    world.clock.tick(60 + 5)
    _housekeeping(world)
    _housekeeping(world)
    [warning] = _events(world, "claim_expiring", study.uid)
    assert warning["payload"]["by"] == "dr_li"
    assert 0 < warning["payload"]["seconds_left"] <= 120
    # the study says so too, for a page opened after the event
    detail = f"/api/v1/studies/{study.uid}"
    assert world.get("dr_li", detail).json()["claim_warned_at"] is not None
    # renewing re-arms the warning
    assert world.post("dr_li", f"{claim}/renew").status_code == 200
    assert world.get("dr_li", detail).json()["claim_warned_at"] is None
    world.clock.tick(14 * 60)
    _housekeeping(world)
    assert len(_events(world, "claim_expiring", study.uid)) == 2

    # run out: every reader sees whose claim it was, until someone claims the study
    world.clock.tick(2 * 60)
    _housekeeping(world)
    [released] = _events(world, "study_released", study.uid)
    assert released["payload"] == {**released["payload"], "reason": "lease expired", "by": "dr_li"}
    item = _item(world, study.uid, "dr_wang")
    assert item["claimed_by"] is None and item["claim_expired_by"] == "dr_li"
    assert item["claim_expired_at"] is not None
    shown = world.get("dr_li", detail).json()
    assert (shown["claim_expired_by"], shown["claim_warned_at"]) == ("dr_li", None)
    assert world.post("dr_wang", f"{claim}/claim").status_code == 200
    assert _item(world, study.uid)["claim_expired_by"] is None


def test_a_worklist_row_reads_as_the_study_its_claim_answered(world: World) -> None:
    """A page's rows are read as plain columns (``repository.WorklistRow``), a claim's
    answer from the ``Study`` itself: the same study reads the same either way, names of
    the claim's holder and of the one whose claim ran out included."""
    with world.factory.begin() as session:
        for username, name in (("dr_li", "李医生"), ("dr_wang", "王医生")):
            session.execute(update(User).where(User.username == username).values(display_name=name))
    study = _stroke(world)
    claim = f"/api/v1/worklist/{study.uid}/claim"
    r = world.post("dr_li", claim)
    assert r.status_code == 200, r.text
    assert _item(world, study.uid) == r.json()
    assert r.json()["claimed_by_name"] == "李医生" and r.json()["triage_reasons"]

    world.clock.tick(16 * 60)  # past the 15-minute lease
    _housekeeping(world)
    item = _item(world, study.uid)
    assert (item["claimed_by"], item["claim_expired_by"]) == (None, "dr_li")
    assert item["claim_expired_by_name"] == "李医生"
    r = world.post("dr_wang", claim)
    assert r.status_code == 200, r.text
    assert _item(world, study.uid) == r.json()
    assert r.json()["claimed_by_name"] == "王医生"


def test_critical_results_belong_to_the_case(world: World, critical: dict[str, Any]) -> None:
    study = _stroke(world)
    url = f"/api/v1/studies/{study.uid}/report/critical-results"
    assert world.post("dr_li", f"/api/v1/worklist/{study.uid}/claim").status_code == 200
    other = world.post("dr_wang", url, json=critical)
    assert other.status_code == 403
    assert other.json()["code"] == "not_the_case_reader" and "dr_li" in other.json()["detail"]
    assert world.post("dr_li", url, json=critical).status_code == 201
    assert len(world.get("dr_li", url).json()) == 1


def test_a_report_with_a_choice_left_cannot_be_signed(world: World) -> None:
    study = _stroke(world)
    url = f"/api/v1/studies/{study.uid}/report"
    assert world.post("dr_li", f"/api/v1/worklist/{study.uid}/claim").status_code == 200
    template = world.get("dr_li", f"{url}/template").json()
    assert "[未见/可见]" in template["findings"] and "[未见/可见]颅内出血" in template["impression"]
    assert "未见颅内出血" not in template["impression"].replace("[未见/可见]", "")
    text = {k: template[k] for k in ("findings", "impression", "recommendation")}
    assert world.put("dr_li", url, json=text).status_code == 200  # a draft may keep them
    for status in ("preliminary", "final"):
        r = world.post("dr_li", f"{url}/sign", json={"status": status})
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "unresolved_choices"
        assert "findings line 1: [未见/可见]" in r.json()["detail"]
        assert "impression line 1: [未见/可见]" in r.json()["detail"]
    assert world.put("dr_li", url, json=CHOSEN).status_code == 200
    r = world.post("dr_li", f"{url}/sign", json={"status": "preliminary"})
    assert r.status_code == 200, r.text


@pytest.fixture
def critical(world: World) -> dict[str, Any]:
    now = world.clock.now
    return {
        "finding": "右侧基底节区急性脑出血",
        "identified_at": (now - timedelta(minutes=3)).isoformat(),
        "communicated_to_name": "张医生",
        "communicated_at": (now - timedelta(minutes=1)).isoformat(),
        "method": "phone",
        "read_back_confirmed": True,
    }
