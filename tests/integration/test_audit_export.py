"""Audit export: CSV and FHIR ``AuditEvent`` downloads for admins, streamed,
filtered, themselves audited; on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_api_world import Study, World, build_world
from worklist import audit
from worklist.audit import AuditAction
from worklist.audit_export import CSV_COLUMNS, csv_chunks, csv_row, fhir_bundle_chunks
from worklist.models import AuditEvent, User

CSV_URL = "/api/v1/audit/export.csv"
FHIR_URL = "/api/v1/audit/export.fhir.json"
DCM = "http://dicom.nema.org/resources/ontology/DCM"


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


def _user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    assert user is not None
    return user


def _seed(world: World) -> dict[str, Any]:
    """A day of varied events: views by a clinic user and a radiologist, a refused log-in
    whose user name is a spreadsheet formula, awkward text (Chinese, commas, quotes,
    newlines), a worklist query, an ingest."""
    base = world.clock.now - timedelta(days=1)
    study_uid = "1.2.826.0.1.3680043.8.498.1"
    with world.factory.begin() as session:
        nurse = _user(session, "nurse_ts01")
        nurse2 = _user(session, "nurse_ts02")
        doctor = _user(session, "dr_li")
        gateway = _user(session, "gw_ts01")
        rows: list[tuple[User | None, str, str, str, str, str, dict[str, Any]]] = [
            (nurse, "study_viewed", "study", study_uid, "10.0.0.7", "success", {}),
            (
                doctor,
                "report_signed",
                "report",
                study_uid,
                "10.0.0.8",
                "success",
                {"note": '急诊, 左侧 "基底节"\n第二行'},
            ),
            (None, "login", "user", '=HYPERLINK("http://x","点")', "10.0.0.9", "denied", {}),
            (doctor, "worklist_view", "worklist", "", "10.0.0.8", "success", {"count": 3}),
            (gateway, "instances_ingested", "site", "TS01", "10.1.0.1", "success", {"n": 2}),
            (nurse2, "study_viewed", "study", "1.2.3.4", "10.0.0.10", "success", {}),
        ]
        for minutes, (actor, action, object_type, object_id, addr, outcome, detail) in enumerate(
            rows
        ):
            audit.record(
                session=session,
                actor=actor,
                action=AuditAction(action),
                object_type=object_type,
                object_id=object_id,
                client_addr=addr,
                outcome=outcome,
                detail=detail,
                now=base + timedelta(minutes=minutes),
            )
    return {"base": base, "study_uid": study_uid}


def _events(world: World) -> list[AuditEvent]:
    with world.factory() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.at, AuditEvent.id)))


def _csv(world: World, **params: str) -> list[dict[str, str]]:
    r = world.get("boss", CSV_URL, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"].startswith('attachment; filename="audit-')
    assert r.content.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    text = r.content.decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    return list(reader)


def _fhir(world: World, **params: str) -> dict[str, Any]:
    r = world.get("boss", FHIR_URL, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = json.loads(r.content.decode("utf-8"))
    return body


def test_csv_parsed_back_equals_the_events(world: World) -> None:
    seeded = _seed(world)
    before = _events(world)
    rows = _csv(world)
    assert [int(r["id"]) for r in rows] == [e.id for e in before]  # not its own event
    for row, event in zip(rows, before, strict=True):
        assert datetime.fromisoformat(row["time_utc"]) == event.at
        assert row["username"] == event.username
        assert row["role"] == event.role
        assert row["site"] == event.site_code
        assert row["action"] == event.action
        assert row["object_type"] == event.object_type
        assert row["client_addr"] == event.client_addr
        assert row["outcome"] == event.outcome
        assert (json.loads(row["detail"]) if row["detail"] else {}) == event.detail
        if event.object_id.startswith("="):  # neutralised for Excel, otherwise verbatim
            assert row["object_id"] == "'" + event.object_id
        else:
            assert row["object_id"] == event.object_id
    signed = next(r for r in rows if r["action"] == "report_signed")
    assert json.loads(signed["detail"])["note"] == '急诊, 左侧 "基底节"\n第二行'
    assert signed["object_id"] == seeded["study_uid"]
    assert {r["site"] for r in rows if r["username"] == "nurse_ts01"} == {"TS01"}

    # the export itself is audited, with the filters and the bound it was pinned to
    after = _events(world)
    exported = [e for e in after if e.action == "audit_exported"]
    assert len(exported) == 1 and exported[0].username == "boss"
    assert exported[0].detail["format"] == "csv"
    assert exported[0].detail["up_to_id"] == before[-1].id
    assert exported[0].client_addr == "testclient"


def test_fhir_bundle_validates_and_uses_dicom_codes(world: World) -> None:
    from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
    from fhir.resources.R4B.bundle import Bundle

    seeded = _seed(world)
    before = _events(world)
    body = _fhir(world)
    bundle = Bundle.model_validate(body)
    assert bundle.type == "collection"
    resources = [e["resource"] for e in body["entry"]]
    assert len(resources) == len(before)
    for resource in resources:
        FhirAuditEvent.model_validate(resource)
    by_action = {r["subtype"][-1]["code"]: r for r in resources}

    viewed = next(
        r
        for r in resources
        if r["subtype"][-1]["code"] == "study_viewed"
        and r["agent"][0]["who"]["display"] == "nurse_ts01"
    )
    assert viewed["type"] == {"system": DCM, "code": "110110", "display": "Patient Record"}
    assert viewed["action"] == "R" and viewed["outcome"] == "0"
    agent = viewed["agent"][0]
    assert agent["requestor"] is True
    assert agent["network"] == {"address": "10.0.0.7", "type": "2"}
    assert agent["role"][0]["coding"][0]["code"] == "clinic"
    assert agent["location"]["identifier"]["value"] == "TS01"
    entity = viewed["entity"][0]
    assert entity["what"]["identifier"] == {
        "system": "urn:dicom:uid",
        "value": f"urn:oid:{seeded['study_uid']}",
    }

    login = by_action["login"]
    assert login["type"]["code"] == "110114" and login["action"] == "E"
    assert login["subtype"][0] == {"system": DCM, "code": "110122", "display": "Login"}
    assert login["outcome"] == "4" and login["outcomeDesc"] == "denied"

    assert by_action["worklist_view"]["type"]["code"] == "110112"
    assert by_action["report_signed"]["action"] == "U"
    signed_detail = by_action["report_signed"]["entity"][0]["detail"][0]["valueString"]
    assert "基底节" in signed_detail
    assert by_action["instances_ingested"]["action"] == "C"

    exported = [e for e in _events(world) if e.action == "audit_exported"]
    assert len(exported) == 1 and exported[0].detail["format"] == "fhir.json"
    # and the export event, exported in turn, is "Audit Log Used"
    again = _fhir(world, action="audit_exported")
    assert [r["resource"]["type"]["code"] for r in again["entry"]] == ["110101"]


def test_filters(world: World) -> None:
    seeded = _seed(world)
    base: datetime = seeded["base"]

    def ids(**params: str) -> list[str]:
        return [r["action"] + ":" + r["username"] for r in _csv(world, **params)]

    assert ids(username="dr_li") == ["report_signed:dr_li", "worklist_view:dr_li"]
    assert ids(action="login") == ["login:"]
    assert ids(object_id=seeded["study_uid"]) == [
        "study_viewed:nurse_ts01",
        "report_signed:dr_li",
    ]
    assert ids(site="TS02") == ["study_viewed:nurse_ts02"]
    window = {
        "since": (base + timedelta(minutes=1)).isoformat(),
        "until": (base + timedelta(minutes=3)).isoformat(),
    }
    assert ids(**window) == ["report_signed:dr_li", "login:"]
    # the same instant written in China Standard Time selects the same events
    cst = {k: datetime.fromisoformat(v).astimezone(_CST).isoformat() for k, v in window.items()}
    assert ids(**cst) == ["report_signed:dr_li", "login:"]
    assert ids(site="TS01", action="login") == []
    fhir = _fhir(world, username="nurse_ts02")
    assert [e["resource"]["agent"][0]["who"]["display"] for e in fhir["entry"]] == ["nurse_ts02"]
    empty = _fhir(world, username="nobody")
    assert empty["entry"] == []


_CST = timezone(timedelta(hours=8))


BAD_FILTERS: list[dict[str, str]] = [
    {"since": "yesterday"},
    {"until": "2026-13-01T00:00:00Z"},
    {"since": "2026-01-01T00:00:00"},  # no offset: ambiguous in a county on UTC+8
    {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
    {"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
    {"username": "x" * 65},
    {"site": "S" * 33},
]


def test_bad_filters_are_422(world: World) -> None:
    for url in (CSV_URL, FHIR_URL):
        for params in BAD_FILTERS:
            r = world.get("boss", url, params=params)
            assert r.status_code == 422, (url, params, r.text)
            assert r.json()["detail"]
            if "since" in params and "until" in params:
                assert "later than since" in r.text
    assert not [e for e in _events(world) if e.action == "audit_exported"]


def test_admins_only(world: World) -> None:
    for url in (CSV_URL, FHIR_URL):
        assert world.get(None, url).status_code == 401
        for username in ("dr_li", "nurse_ts01", "nurse_ts02", "gw_ts01", "gw_all"):
            r = world.get(username, url)
            assert r.status_code == 403, (url, username, r.status_code)
        # a clinic user is refused whatever the filter names (its own site or another)
        for site in ("TS01", "TS02"):
            assert world.get("nurse_ts01", url, params={"site": site}).status_code == 403
        # the role is checked before the filters: a bad filter tells a non-admin no more
        assert world.get("nurse_ts01", url, params={"since": "garbage"}).status_code == 403
    assert not [e for e in _events(world) if e.action == "audit_exported"]


def test_list_route_filters_by_site(world: World) -> None:
    _seed(world)
    r = world.get("boss", "/api/v1/audit", params={"site": "TS02"})
    assert r.status_code == 200
    assert [e["username"] for e in r.json()] == ["nurse_ts02"]


def test_export_streams_many_pages_in_order(world: World) -> None:
    """More events than one page (1000), many sharing one timestamp: the keyset pages
    neither skip nor repeat one."""
    at = world.clock.now - timedelta(hours=1)
    rows = [
        {
            "at": at + timedelta(seconds=i // 700),  # ties across page boundaries
            "username": f"u{i}",
            "role": "radiologist",
            "site_code": "",
            "action": "study_viewed",
            "object_type": "study",
            "object_id": f"1.2.3.{i}",
            "client_addr": "10.0.0.1",
            "outcome": "success",
            "detail": {"i": i},
        }
        for i in range(2345)
    ]
    with world.factory.begin() as session:
        session.execute(insert(AuditEvent), rows)
    got = _csv(world, action="study_viewed")
    assert len(got) == len(rows)
    assert [int(r["id"]) for r in got] == sorted(int(r["id"]) for r in got)
    assert {r["username"] for r in got} == {f"u{i}" for i in range(2345)}
    body = _fhir(world, action="study_viewed")
    assert len(body["entry"]) == len(rows)


def test_iter_events_pages_with_ties(session_factory: sessionmaker[Session]) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with session_factory.begin() as session:
        for i in range(23):
            audit.record(
                session=session,
                actor=None,
                action=AuditAction.STUDY_VIEWED,
                object_id=str(i),
                now=now + timedelta(seconds=(i * 7) % 5),  # out of id order, with ties
            )
        top = audit.last_id(session=session)
    pages = list(
        audit.iter_events(factory=session_factory, filters=audit.AuditFilter(), page_size=4)
    )
    assert all(len(p) <= 4 for p in pages) and len(pages) == 6
    flat = [e for p in pages for e in p]
    assert len({e.id for e in flat}) == 23
    assert [(e.at, e.id) for e in flat] == sorted((e.at, e.id) for e in flat)
    pinned = audit.AuditFilter(max_id=top - 3)
    assert sum(len(p) for p in audit.iter_events(factory=session_factory, filters=pinned)) == 20


def test_study_from_the_api_exports(world: World) -> None:
    """Events written by real requests (ingest, views) come out in both formats."""
    from fhir.resources.R4B.bundle import Bundle

    study = Study("TS01", "CT", "头颅平扫")
    assert world.announce(study).status_code in (200, 201, 202)
    assert world.get("dr_li", f"/api/v1/studies/{study.uid}").status_code == 200
    world.client.app.state.audit_writer.flush()  # type: ignore[attr-defined]  # views: batched
    rows = _csv(world, object_id=study.uid)
    assert [(r["action"], r["username"]) for r in rows] == [("study_viewed", "dr_li")]
    ingested = _csv(world, action="instances_ingested")
    assert [(r["object_id"], r["site"]) for r in ingested] == [("TS01", "TS01")]
    bundle = Bundle.model_validate(_fhir(world))
    assert bundle.entry is not None and len(bundle.entry) >= 2


_TEXT = st.text(max_size=40)


@st.composite
def _events_strategy(draw: st.DrawFn) -> list[AuditEvent]:
    """Transient events with arbitrary text where a caller can put text (a refused log-in
    records whatever user name was typed)."""
    n = draw(st.integers(min_value=1, max_value=5))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        AuditEvent(
            id=i + 1,
            at=start + timedelta(microseconds=draw(st.integers(0, 10**12))),
            username=draw(_TEXT),
            role=draw(st.sampled_from(["", "admin", "clinic", "radiologist", "gateway"])),
            site_code=draw(_TEXT),
            action=draw(st.sampled_from(["login", "study_viewed", "report_signed", "x_y"])),
            object_type=draw(st.sampled_from(["", "study", "report", "user", "audit"])),
            object_id=draw(_TEXT),
            client_addr=draw(st.sampled_from(["", "10.0.0.1", "::1", "testclient"])),
            outcome=draw(st.sampled_from(["success", "denied", "failure", "odd"])),
            detail=draw(st.dictionaries(_TEXT, _TEXT, max_size=2)),
        )
        for i in range(n)
    ]


@settings(max_examples=150, deadline=None)
@given(events=_events_strategy())
def test_any_text_survives_both_formats(events: list[AuditEvent]) -> None:
    from fhir.resources.R4B.bundle import Bundle

    text = "".join(csv_chunks([events]))
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text[1:], newline="")))
    assert rows[0] == list(CSV_COLUMNS)
    assert rows[1:] == [csv_row(e) for e in events]
    for row, event in zip(rows[1:], events, strict=True):
        cell = row[CSV_COLUMNS.index("object_id")]
        assert cell == event.object_id or cell == "'" + event.object_id
        assert not cell.startswith(("=", "+", "-", "@"))

    body = json.loads("".join(fhir_bundle_chunks([events], now=datetime(2026, 2, 1, tzinfo=UTC))))
    Bundle.model_validate(body)
    assert len(body["entry"]) == len(events)


def test_nul_in_a_recorded_text_is_replaced(session_factory: sessionmaker[Session]) -> None:
    """PostgreSQL refuses NUL in text: a typed user name holding one must still be recorded."""
    with session_factory.begin() as session:
        audit.record(
            session=session,
            actor=None,
            action=AuditAction.LOGIN,
            object_type="user",
            object_id="ad\x00min",
            outcome="denied",
            now=datetime(2026, 1, 1, tzinfo=UTC),
        )
    with session_factory() as session:
        assert session.scalars(select(AuditEvent.object_id)).one() == "ad\ufffdmin"
