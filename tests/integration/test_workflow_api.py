"""Workflow endpoints through the real app: renew, assign, cancel, flag, unflag, next,
filters and pagination, the JSON event feed, and each endpoint's audit events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_api_world import Study, World, build_world
from worklist.audit import list_events


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


def audited(world: World, action: str, uid: str) -> list[str]:
    """Who did ``action`` on ``uid``, oldest first."""
    with world.factory() as session:
        return [
            e.username for e in reversed(list_events(session=session, action=action, object_id=uid))
        ]


def test_leases_assign_and_cancel(world: World) -> None:
    st = Study("TS01", "CT", "头颅CT平扫")
    world.announce(st)
    url = f"/api/v1/worklist/{st.uid}"
    assert world.post("dr_li", f"{url}/claim").status_code == 200
    world.clock.tick(600)
    r = world.post("dr_li", f"{url}/renew")
    assert r.status_code == 200, r.text
    expires = datetime.fromisoformat(r.json()["claim_expires_at"])
    assert expires == world.clock.now + timedelta(seconds=900)
    assert world.post("dr_wang", f"{url}/renew").status_code == 403
    assert world.post("nurse_ts01", f"{url}/renew").status_code == 403
    assert world.post("dr_li", "/api/v1/worklist/1.2.3.4/renew").status_code == 404

    # assign: admin only, to an active reader
    assert world.post("dr_li", f"{url}/assign", json={"username": "dr_wang"}).status_code == 403
    bad = world.post("boss", f"{url}/assign", json={"username": "nurse_ts01"})
    assert bad.status_code == 422 and "not an active" in bad.json()["detail"]
    assert world.post("boss", f"{url}/assign", json={}).status_code == 422
    r = world.post("boss", f"{url}/assign", json={"username": "dr_wang"})
    assert r.status_code == 200 and r.json()["claimed_by"] == "dr_wang"
    assert world.post("dr_li", f"{url}/renew").status_code == 403
    assert world.post("dr_wang", f"{url}/renew").status_code == 200

    # cancel: admin only, with a reason; shown under status=cancelled with it
    assert world.post("dr_li", f"{url}/cancel", json={"reason": "dup"}).status_code == 403
    assert world.post("boss", f"{url}/cancel", json={"reason": "  "}).status_code == 422
    r = world.post("boss", f"{url}/cancel", json={"reason": "sent twice"})
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["cancel_reason"]) == ("cancelled", "sent twice")
    assert world.post("boss", f"{url}/cancel", json={"reason": "again"}).status_code == 409
    assert world.post("dr_li", f"{url}/claim").status_code == 409
    assert world.get("dr_li", "/api/v1/worklist").json() == []
    [gone] = world.get("dr_li", "/api/v1/worklist", params={"status": "cancelled"}).json()
    assert gone["cancel_reason"] == "sent twice"

    assert audited(world, "study_claimed", st.uid) == ["dr_li"]
    assert audited(world, "claim_renewed", st.uid) == ["dr_li", "dr_wang"]
    assert audited(world, "study_assigned", st.uid) == ["boss"]
    assert audited(world, "study_cancelled", st.uid) == ["boss"]
    assert world.post("dr_wang", f"{url}/release").status_code == 403  # cancel cleared it


def test_release_and_next(world: World) -> None:
    routine = Study("TS01", "DX", "胸部正位")
    stroke = Study("TS02", "CT", "头颅CT 急性脑卒中")
    world.announce(routine)
    world.clock.tick(120)  # routine is quiet (stable) by now
    world.announce(stroke, gateway="gw_all")
    with world.factory.begin() as session:
        from worklist.completion import mark_stable_studies

        mark_stable_studies(session=session, now=world.clock.now, stable_seconds=60)
    r = world.post("dr_li", "/api/v1/worklist/next")
    assert r.status_code == 200 and r.json()["study_instance_uid"] == stroke.uid
    assert r.json()["time_left_seconds"] == 20 * 60
    r = world.post("dr_wang", "/api/v1/worklist/next")
    assert r.status_code == 200 and r.json()["study_instance_uid"] == routine.uid
    assert world.post("dr_wang", "/api/v1/worklist/next").status_code == 204
    assert world.post("nurse_ts01", "/api/v1/worklist/next").status_code == 403
    r = world.post("dr_li", f"/api/v1/worklist/{stroke.uid}/release")
    assert r.status_code == 200 and r.json()["claimed_by"] is None
    assert audited(world, "study_claimed", stroke.uid) == ["dr_li"]
    assert audited(world, "study_released", stroke.uid) == ["dr_li"]
    kinds = [e["kind"] for e in world.get("dr_li", "/api/v1/events/recent").json()]
    assert kinds == ["study_urgent", "study_claimed", "study_claimed", "study_released"]


def test_flag_and_unflag(world: World) -> None:
    st = Study("TS01", "DX", "胸部正位")
    world.announce(st)
    flag = f"/api/v1/studies/{st.uid}/flag"
    body = {"category": "chest_pain", "reason": "剧烈胸痛"}
    assert world.post("nurse_ts02", flag, json=body).status_code == 404
    assert world.post("gw_ts01", flag, json=body).status_code == 403
    assert (
        world.post("nurse_ts01", flag, json={"category": "flu", "reason": "x"}).status_code == 422
    )
    assert world.post("nurse_ts01", flag, json={"category": "stroke"}).status_code == 422
    r = world.post("nurse_ts01", flag, json=body)
    assert r.status_code == 200, r.text
    item = r.json()
    assert (item["priority"], item["category"], item["time_left_seconds"]) == (
        "stat",
        "chest_pain",
        30 * 60,
    )
    # the flag wins over text triage on later instances
    more = Study("TS01", "DX", "胸部正位", uid=st.uid, series_uid=st.series_uid, count=1)
    world.announce(more)
    assert world.get("dr_li", "/api/v1/worklist").json()[0]["category"] == "chest_pain"
    # the clinic sees the urgent event of its own site, the other clinic does not
    urgent = world.get("nurse_ts01", "/api/v1/events/recent").json()
    assert [(e["kind"], e["study_uid"]) for e in urgent] == [("study_urgent", st.uid)]
    assert "剧烈" not in str(urgent)  # free text stays in the audit trail
    assert world.get("nurse_ts02", "/api/v1/events/recent").json() == []

    unflag = f"/api/v1/studies/{st.uid}/unflag"
    assert world.post("nurse_ts01", unflag, json={"reason": "x"}).status_code == 403
    assert world.post("dr_li", unflag, json={}).status_code == 422
    r = world.post("dr_li", unflag, json={"reason": "old finding"})
    assert r.status_code == 200 and r.json()["priority"] == "routine"
    assert r.json()["time_left_seconds"] == 24 * 3600
    assert (
        world.post("dr_li", "/api/v1/studies/1.2.3/unflag", json={"reason": "x"}).status_code == 404
    )
    assert audited(world, "study_flagged", st.uid) == ["nurse_ts01"]
    assert audited(world, "study_unflagged", st.uid) == ["dr_li"]


def test_filters_and_pagination(world: World) -> None:
    studies = [
        Study("TS01", "CT", "头颅CT 急性脑卒中"),
        Study("TS01", "DX", "胸部正位"),
        Study("TS02", "CT", "腹部CT"),
        Study("TS02", "DX", "胸痛"),
        Study("TS01", "CT", "腹部CT"),
    ]
    for st in studies:
        world.announce(st, gateway="gw_all")
        world.clock.tick(10)
    world.post("dr_li", f"/api/v1/worklist/{studies[4].uid}/claim")

    def uids(user: str = "dr_li", **params: object) -> tuple[list[str], int]:
        r = world.get(user, "/api/v1/worklist", params=params)
        assert r.status_code == 200, r.text
        return [i["study_instance_uid"] for i in r.json()], int(r.headers["X-Total-Count"])

    assert uids() == ([studies[i].uid for i in (0, 3, 1, 2, 4)], 5)
    assert uids(site="TS02") == ([studies[3].uid, studies[2].uid], 2)
    assert uids(modality="DX") == ([studies[3].uid, studies[1].uid], 2)
    assert uids(category="stroke") == ([studies[0].uid], 1)
    assert uids(status="claimed") == ([studies[4].uid], 1)
    assert uids(reader="dr_li") == ([studies[4].uid], 1)
    assert uids(reader="dr_wang") == ([], 0)
    assert uids(limit=2, offset=1) == ([studies[3].uid, studies[1].uid], 5)
    assert uids(offset=10) == ([], 5)
    # a short page is the last: its total needs no count; a full one is counted
    assert uids(limit=2, offset=4) == ([studies[4].uid], 5)
    assert uids(limit=5) == ([studies[i].uid for i in (0, 3, 1, 2, 4)], 5)
    assert uids(limit=4) == ([studies[i].uid for i in (0, 3, 1, 2)], 5)
    assert uids("nurse_ts02") == ([studies[3].uid, studies[2].uid], 2)
    world.client.app.state.audit_writer.flush()  # type: ignore[attr-defined]  # views: batched
    with world.factory() as session:
        [view] = list_events(session=session, action="worklist_view", limit=1)
    assert (view.username, view.detail["total"]) == ("nurse_ts02", 2)
    assert world.get("dr_li", "/api/v1/worklist", params={"limit": 0}).status_code == 422
    assert world.get("dr_li", "/api/v1/worklist", params={"offset": -1}).status_code == 422
    items = world.get("dr_li", "/api/v1/worklist").json()
    assert {"time_left_seconds", "escalation_level", "deadline_at", "overdue"} <= set(items[0])
    assert items[0]["escalation_level"] == 0 and not items[0]["overdue"]
    world.client.app.state.audit_writer.flush()  # type: ignore[attr-defined]
    with world.factory() as session:
        [view] = list_events(session=session, action="worklist_view", limit=1)
    assert (view.username, view.detail["total"]) == ("dr_li", 5)
    assert view.detail["filters"] == {}


def test_event_feed_auth(world: World) -> None:
    st = Study("TS01", "CT", "头颅CT 急性脑卒中")
    world.announce(st)
    assert world.get(None, "/api/v1/events/recent").status_code == 401
    assert world.get("gw_ts01", "/api/v1/events/recent").status_code == 403
    r = world.client.get("/api/v1/events/recent", params={"access_token": world.tokens["dr_li"]})
    assert r.status_code == 200 and [e["kind"] for e in r.json()] == ["study_urgent"]
    first = r.json()[0]["id"]
    assert world.get("dr_li", "/api/v1/events/recent", params={"after": first}).json() == []
    bad = world.client.get("/api/v1/events/recent", params={"access_token": "nonsense"})
    assert bad.status_code == 401
    r = world.client.get(
        "/api/v1/events", headers={**world.headers("dr_li"), "Last-Event-ID": "abc"}
    )
    assert r.status_code == 422
