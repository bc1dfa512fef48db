"""The gateway's side of the API: configuration, ingest, its checks; and role boundaries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_api_world import Study, World, build_world
from worklist.audit import list_events


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


def test_gateway_config_lists_the_sites_it_may_send_for(world: World) -> None:
    bound = world.get("gw_ts01", "/api/v1/gateway/config").json()
    ts01 = {"code": "TS01", "name": "一号乡镇卫生院", "ae_titles": ["CT_TS01", "DX_TS01"]}
    # not bound to networks or certificates: from any address
    assert bound == {"sites": [{**ts01, "networks": [], "certificates": []}]}
    unbound = world.get("gw_all", "/api/v1/gateway/config").json()
    assert [s["code"] for s in unbound["sites"]] == ["TS01", "TS02"]
    for user in ("dr_li", "boss", "nurse_ts01"):
        assert world.get(user, "/api/v1/gateway/config").status_code == 403, user


def test_ingest_is_idempotent(world: World) -> None:
    study = Study("TS01", "CT", "头颅CT平扫", count=3)
    assert world.announce(study).json() == {
        "accepted": 3,
        "duplicates": 0,
        "conflicts": [],
        "resends": [],
    }
    assert world.announce(study).json() == {
        "accepted": 0,
        "duplicates": 3,
        "conflicts": [],
        "resends": [],
    }
    # a partial repeat plus one new instance
    study.sop_uids = [*study.sop_uids[:1], "1.2.826.0.1.3680043.8.498.99"]
    assert world.announce(study).json() == {
        "accepted": 1,
        "duplicates": 1,
        "conflicts": [],
        "resends": [],
    }
    detail = world.get("dr_li", f"/api/v1/studies/{study.uid}").json()
    assert detail["num_instances"] == 4
    with world.factory() as session:
        events = list_events(session=session, action="instances_ingested")
    assert len(events) == 3 and events[0].username == "gw_ts01"


def test_a_bound_gateway_sends_for_its_own_site_only(world: World) -> None:
    study = Study("TS02", "CT", "腹部CT", count=1)
    r = world.announce(study, gateway="gw_ts01")
    assert r.status_code == 403 and r.json()["detail"]
    assert world.announce(study, gateway="gw_all").status_code == 200


def test_unknown_site_is_422(world: World) -> None:
    r = world.announce(Study("NOPE", "CT", "x", count=1), gateway="gw_all")
    assert r.status_code == 422 and "NOPE" in r.json()["detail"]


def test_a_study_cannot_move_to_another_site(world: World) -> None:
    study = Study("TS01", "CT", "头颅CT", count=1)
    world.announce(study)
    moved = Study("TS02", "CT", "头颅CT", count=1, uid=study.uid)
    answer = world.announce(moved, gateway="gw_all")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["accepted"], body["duplicates"]) == (0, 0)
    [held] = body["conflicts"]
    assert held["kind"] == "study_other_site"
    assert held["sop_instance_uid"] == moved.sop_uids[0]
    detail = world.get("dr_li", f"/api/v1/studies/{study.uid}").json()
    assert (detail["site"], detail["num_instances"]) == ("TS01", 1)


def test_held_conflicts_are_listed_audited_and_resolved_by_admins(world: World) -> None:
    owner = Study("TS01", "CT", "头颅CT", count=2)
    world.announce(owner)
    before = world.get("dr_li", f"/api/v1/studies/{owner.uid}").json()
    squat = Study("TS02", "CT", "腹部CT", count=1, uid=owner.uid, patient_name="李^四")
    other = Study("TS01", "CT", "头颅CT", count=1, uid=owner.uid, patient_name="赵^六")
    other.series_uid = owner.series_uid
    for study, gateway in ((squat, "gw_all"), (other, "gw_ts01")):
        assert world.announce(study, gateway=gateway).json()["conflicts"]
        # a re-announcement (the gateway retrying) holds nothing twice
        assert world.announce(study, gateway=gateway).json()["conflicts"]

    for user in ("dr_li", "nurse_ts01", "gw_ts01"):
        assert world.get(user, "/api/v1/ingest-conflicts").status_code == 403, user
    listed = world.get("boss", "/api/v1/ingest-conflicts").json()
    assert [(c["kind"], c["site"], c["existing_site"]) for c in listed] == [
        ("patient_mismatch", "TS01", "TS01"),
        ("study_other_site", "TS02", "TS01"),
    ]
    mismatch, squatted = listed
    assert (mismatch["patient_name"], mismatch["existing_patient_name"]) == ("赵^六", "张^三")
    assert mismatch["sop_instance_uid"] == other.sop_uids[0]
    assert squatted["object_key"].startswith("TS02/")
    assert squatted["resolution"] is None and squatted["resolved_at"] is None
    assert (squatted["priority"], squatted["category"]) == ("routine", None)

    # the original study is untouched
    assert world.get("dr_li", f"/api/v1/studies/{owner.uid}").json() == before

    resolved = world.post(
        "boss",
        f"/api/v1/ingest-conflicts/{squatted['id']}/resolve",
        json={"resolution": "separate_study"},
    )
    assert resolved.status_code == 200, resolved.text
    [out] = resolved.json()
    assert out["resolution"] == "separate_study" and out["resolved_by"] == "boss"
    new_uid = out["resolved_study_uid"]
    assert new_uid and new_uid != owner.uid and new_uid.startswith("2.25.")
    refiled = world.get("dr_li", f"/api/v1/studies/{new_uid}").json()
    assert (refiled["site"], refiled["num_instances"]) == ("TS02", 1)
    assert world.get("dr_li", f"/api/v1/studies/{owner.uid}").json()["num_instances"] == 2

    again = world.post(
        "boss",
        f"/api/v1/ingest-conflicts/{squatted['id']}/resolve",
        json={"resolution": "discard"},
    )
    assert (again.status_code, again.json()["code"]) == (409, "conflict_resolved")
    missing = world.post(
        "boss", "/api/v1/ingest-conflicts/999999/resolve", json={"resolution": "discard"}
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "conflict_not_found")
    bad = world.post(
        "boss", f"/api/v1/ingest-conflicts/{mismatch['id']}/resolve", json={"resolution": "x"}
    )
    assert bad.status_code == 422
    [discarded] = world.post(
        "boss",
        f"/api/v1/ingest-conflicts/{mismatch['id']}/resolve",
        json={"resolution": "discard"},
    ).json()
    assert discarded["resolution"] == "discard" and discarded["resolved_study_uid"] is None
    assert world.get("boss", "/api/v1/ingest-conflicts").json() == []
    assert len(world.get("boss", "/api/v1/ingest-conflicts?state=all").json()) == 2
    assert world.get("dr_li", f"/api/v1/studies/{owner.uid}").json()["num_instances"] == 2

    with world.factory() as session:
        held = list_events(session=session, action="ingest_conflict_held")
        done = list_events(session=session, action="ingest_conflict_resolved")
        viewed = list_events(session=session, action="ingest_conflicts_viewed")
    assert sorted(e.detail["kind"] for e in held) == ["patient_mismatch", "study_other_site"]
    assert {e.object_id for e in held} == {owner.uid}
    assert sorted((e.outcome, e.detail.get("resolution")) for e in done) == [
        ("refused", None),
        ("refused", None),
        ("success", "discard"),
        ("success", "separate_study"),
    ]
    assert viewed and all(e.username == "boss" for e in viewed)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("study_instance_uid", "1.2.03"),
        ("series_instance_uid", "1.2.abc"),
        ("sop_instance_uid", "../../etc/passwd"),
        ("sop_class_uid", ""),
        ("transfer_syntax_uid", "1..2"),
        ("sop_instance_uid", "1." + "2" * 70),
    ],
)
def test_bad_uids_are_422(world: World, field: str, value: str) -> None:
    payload = world.payload(Study("TS01", "CT", "头颅CT", count=1))
    payload["instances"][0][field] = value
    r = world.post("gw_ts01", "/api/v1/ingest/instances", json=payload)
    assert r.status_code == 422, r.text


def test_object_key_must_match_the_uids(world: World) -> None:
    payload = world.payload(Study("TS01", "CT", "头颅CT", count=1))
    payload["instances"][0]["object_key"] = "1.2.3/1.2.4/1.2.5.dcm"
    r = world.post("gw_ts01", "/api/v1/ingest/instances", json=payload)
    assert r.status_code == 422 and "object_key" in r.json()["detail"]


def test_object_key_is_under_its_site_or_the_key_from_before_prefixes(world: World) -> None:
    payload = world.payload(Study("TS01", "CT", "头颅CT", count=1))
    item = payload["instances"][0]
    assert item["object_key"].startswith("TS01/")
    own = item["object_key"]
    item["object_key"] = "TS02/" + own.removeprefix("TS01/")  # another site's object
    r = world.post("gw_ts01", "/api/v1/ingest/instances", json=payload)
    assert r.status_code == 422 and "object_key" in r.json()["detail"]
    item["object_key"] = own.removeprefix("TS01/")  # a gateway not yet upgraded
    r = world.post("gw_ts01", "/api/v1/ingest/instances", json=payload)
    assert r.status_code == 200 and r.json()["accepted"] == 1


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p["instances"][0].pop("sha256"),
        lambda p: p["instances"][0].update(sha256="zz"),
        lambda p: p["instances"][0].update(size=-1),
        lambda p: p["instances"][0].update(received_at="2026-11-25T10:00:00"),  # naive
        lambda p: p["instances"][0].update(received_at="yesterday"),
        lambda p: p.update(instances=[]),
        lambda p: p.update(instances="nope"),
        lambda p: p["instances"][0].update(urgent_hint={"category": "flu"}),
    ],
)
def test_malformed_announcements_are_422(world: World, mutate: object) -> None:
    payload = world.payload(Study("TS01", "CT", "头颅CT", count=1))
    mutate(payload)  # type: ignore[operator]
    r = world.post("gw_ts01", "/api/v1/ingest/instances", json=payload)
    assert r.status_code == 422, r.text


def test_bad_json_is_422_not_500(world: World) -> None:
    headers = {**world.headers("gw_ts01"), "Content-Type": "application/json"}
    for body in (b"{not json", b"", b"[]", b'{"site": "TS01"'):
        r = world.client.post("/api/v1/ingest/instances", content=body, headers=headers)
        assert r.status_code == 422, (body, r.text)
    study = Study("TS01", "CT", "头颅CT", count=1)
    world.announce(study)
    world.post("dr_li", f"/api/v1/worklist/{study.uid}/claim")
    headers = {**world.headers("dr_li"), "Content-Type": "application/json"}
    url = f"/api/v1/studies/{study.uid}/report"
    assert world.client.put(url, content=b'{"findings": ', headers=headers).status_code == 422
    assert world.put("dr_li", url, json={"findings": 3}).status_code == 422
    assert world.put("dr_li", url, json={"findings": "a", "bogus": 1}).status_code == 422
    assert world.post("dr_li", f"{url}/sign", json={"status": "amended"}).status_code == 422


def test_signing_without_a_draft_is_404(world: World) -> None:
    study = Study("TS01", "CT", "头颅CT", count=1)
    world.announce(study)
    world.post("dr_li", f"/api/v1/worklist/{study.uid}/claim")
    r = world.post("dr_li", f"/api/v1/studies/{study.uid}/report/sign", json={"status": "final"})
    assert r.status_code == 404


def test_unknown_studies_and_instances_are_404(world: World) -> None:
    study = Study("TS01", "CT", "头颅CT", count=1)
    world.announce(study)
    for path in (
        "/api/v1/studies/1.2.3.4",
        "/api/v1/studies/1.2.3.4/report",
        f"/api/v1/studies/{study.uid}/report",  # no report yet
        f"/api/v1/studies/{study.uid}/instances/1.2.3.4",
    ):
        assert world.get("dr_li", path).status_code == 404, path
    assert world.post("dr_li", "/api/v1/worklist/1.2.3.4/claim").status_code == 404
    # an instance whose object went missing from the store is 404, not 500
    world.store.delete(f"{study.site}/{study.uid}/{study.series_uid}/{study.sop_uids[0]}.dcm")
    r = world.get("dr_li", f"/api/v1/studies/{study.uid}/instances/{study.sop_uids[0]}")
    assert r.status_code == 404


def test_role_boundaries(world: World) -> None:
    study = Study("TS01", "CT", "头颅CT", count=1)
    world.announce(study)
    uid = study.uid
    # gateways: ingest and config only
    for path in (
        "/api/v1/worklist",
        f"/api/v1/studies/{uid}",
        f"/api/v1/studies/{uid}/report",
        "/api/v1/reports",
    ):
        assert world.get("gw_ts01", path).status_code == 403, path
    assert world.post("gw_ts01", f"/api/v1/worklist/{uid}/claim").status_code == 403
    # people do not announce instances
    payload = world.payload(study)
    for user in ("dr_li", "boss", "nurse_ts01"):
        r = world.post(user, "/api/v1/ingest/instances", json=payload)
        assert r.status_code == 403, user
    # clinic staff read their site, never claim or write
    assert world.get("nurse_ts01", f"/api/v1/studies/{uid}").status_code == 200
    for path in (
        f"/api/v1/worklist/{uid}/claim",
        f"/api/v1/worklist/{uid}/release",
        "/api/v1/worklist/next",
    ):
        assert world.post("nurse_ts01", path).status_code == 403, path
    # admins read and report like radiologists
    assert world.post("boss", f"/api/v1/worklist/{uid}/claim").status_code == 200
    r = world.put("boss", f"/api/v1/studies/{uid}/report", json={"impression": "正常"})
    assert r.status_code == 200


def test_oversized_requests_are_413(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    for small in build_world(session_factory, tmp_path, max_request_bytes=2048):
        study = Study("TS01", "CT", "头颅CT", count=1)
        assert small.announce(study).status_code == 200
        big = Study("TS01", "CT", "头颅CT", count=20)
        r = small.announce(big)
        assert r.status_code == 413 and r.json()["detail"]
        # a streamed (chunked) body is cut off too, inside the route's body parsing

        def chunks() -> Iterator[bytes]:
            yield b'{"site": "TS01", "instances": ['
            for _ in range(100):
                yield b'{"study_instance_uid": "1.2.3"},'
            yield b"]}"

        headers = {**small.headers("gw_ts01"), "Content-Type": "application/json"}
        r = small.client.post("/api/v1/ingest/instances", content=chunks(), headers=headers)
        assert r.status_code == 413


def test_the_gateways_urgent_flag_reaches_the_worklist(world: World) -> None:
    study = Study("TS01", "CT", "胸部CT", count=1)
    payload = world.payload(study)
    payload["instances"][0]["urgent_hint"] = {
        "category": "chest_pain",
        "priority": "stat",
        # a reason as data (this gateway) and one in words (an older gateway)
        "reasons": [{"code": "explicit_flag", "category": "chest_pain"}, "called AE TELEREAD_CP"],
    }
    assert world.post("gw_ts01", "/api/v1/ingest/instances", json=payload).status_code == 200
    [item] = world.get("dr_li", "/api/v1/worklist").json()
    assert item["priority"] == "stat" and item["category"] == "chest_pain"
    flag, words = item["triage_reasons"][:2]
    assert (flag["code"], flag["category"]) == ("explicit_flag", "chest_pain")
    assert flag["text"] == "explicit flag: chest_pain (wins over text)"
    assert (words["code"], words["note"]) == ("text", "called AE TELEREAD_CP")
