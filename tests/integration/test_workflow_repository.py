"""Workflow in worklist/: leases, assign, cancel, flags, filters, events, escalation and
webhook delivery, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_workflow_support import WEBHOOK_SECRET, Receiver, start_receiver
from tests.integration.test_worklist_claims import LEASE, add
from tests.integration.test_worklist_ingest import NOW, fast_user, seed, study
from worklist import escalation, events, webhooks
from worklist.claims import (
    assign_study,
    cancel_study,
    claim_next,
    claim_study,
    expire_claims,
    renew_claim,
)
from worklist.errors import NotAReader, NotClaimable, NotClaimHolder, StudyNotFound
from worklist.models import DELIVERY_DELIVERED, DELIVERY_FAILED, WebhookDelivery
from worklist.repository import count_worklist, list_worklist
from worklist.triage_override import override_triage


def test_renew_assign_cancel(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        a = fast_user(s, "a", "radiologist")
        b = fast_user(s, "b", "radiologist")
        boss = fast_user(s, "boss", "admin")
        clinic = fast_user(s, "c1", "clinic", "TS01")
        add(s, "3.1")
        add(s, "3.2")
        claim_study(session=s, study_uid="3.1", reader=a, now=NOW, lease=LEASE)
        later = NOW + timedelta(minutes=10)
        st = renew_claim(session=s, study_uid="3.1", reader=a, now=later, lease=LEASE)
        assert st.claim_expires_at == later + LEASE
        with pytest.raises(NotClaimHolder):
            renew_claim(session=s, study_uid="3.1", reader=b, now=later, lease=LEASE)
        with pytest.raises(NotClaimHolder):
            renew_claim(session=s, study_uid="3.2", reader=a, now=later, lease=LEASE)
        with pytest.raises(StudyNotFound):
            renew_claim(session=s, study_uid="0", reader=a, now=later)
        # an admin moves the study from a to b
        with pytest.raises(NotAReader):
            assign_study(session=s, study_uid="3.1", assignee=b, by=a, now=later)
        with pytest.raises(NotAReader):
            assign_study(session=s, study_uid="3.1", assignee=clinic, by=boss, now=later)
        st, previous = assign_study(
            session=s, study_uid="3.1", assignee=b, by=boss, now=later, lease=LEASE
        )
        assert (st.claimed_by_id, previous, st.status) == (b.id, a.id, "claimed")
        with pytest.raises(NotClaimHolder):
            renew_claim(session=s, study_uid="3.1", reader=a, now=later)
        # cancelled: off the worklist, shown with its reason, no longer claimable
        st = cancel_study(session=s, study_uid="3.1", by=boss, reason="duplicate send", now=later)
        assert (st.status, st.cancel_reason, st.claimed_by_id) == (
            "cancelled",
            "duplicate send",
            None,
        )
        assert st.cancelled_by_id == boss.id and st.cancelled_at == later
        with pytest.raises(NotClaimable):
            cancel_study(session=s, study_uid="3.1", by=boss, reason="again", now=later)
        with pytest.raises(NotAReader):
            cancel_study(session=s, study_uid="3.2", by=a, reason="x", now=later)
        with pytest.raises(NotClaimable):
            claim_study(session=s, study_uid="3.1", reader=a, now=later)
        with pytest.raises(NotClaimable):
            renew_claim(session=s, study_uid="3.1", reader=b, now=later)
        uids = [x.study_instance_uid for x in list_worklist(session=s, viewer=a, now=later)]
        assert uids == ["3.2"]
        gone = list_worklist(session=s, viewer=a, now=later, status="cancelled")
        assert [x.cancel_reason for x in gone] == ["duplicate send"]


def test_filters_reader_and_count(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        a = fast_user(s, "a", "radiologist")
        c2 = fast_user(s, "c2", "clinic", "TS02")
        for i in range(7):
            add(s, f"2.{i}", minutes=i, site="TS01" if i % 2 else "TS02")
        claim_study(session=s, study_uid="2.3", reader=a, now=NOW, lease=LEASE)
        claim_study(session=s, study_uid="2.4", reader=a, now=NOW, lease=LEASE)
        assert count_worklist(session=s, viewer=a) == 7
        assert count_worklist(session=s, viewer=c2) == 4
        assert count_worklist(session=s, viewer=a, site_code="TS01") == 3
        mine = list_worklist(session=s, viewer=a, now=NOW, reader="a")
        assert [x.study_instance_uid for x in mine] == ["2.3", "2.4"]
        assert count_worklist(session=s, viewer=a, reader="a") == 2
        assert count_worklist(session=s, viewer=a, reader="nobody") == 0
        assert count_worklist(session=s, viewer=a, cap=3) == 3
        assert count_worklist(session=s, viewer=a, site_code="TS09") == 0
        page = list_worklist(session=s, viewer=a, now=NOW, limit=3, offset=3)
        assert [x.study_instance_uid for x in page] == ["2.3", "2.4", "2.5"]


def test_flags_and_study_urgent_events(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        a = fast_user(s, "a", "radiologist")
        c1 = fast_user(s, "c1", "clinic", "TS01")
        c2 = fast_user(s, "c2", "clinic", "TS02")
        add(s, "1.1")  # routine
        add(s, "1.2", text="急性脑卒中")  # urgent by text: one study_urgent event
        add(s, "1.2")  # more instances: no second event
        s.commit()  # events are inserted (and get their ids) at commit
        urgent = [e.study_uid for e in events.list_since(session=s, after_id=0, viewer=a)]
        assert urgent == ["1.2"]
        # a clinic flags its own study; another site's is not found for it
        with pytest.raises(StudyNotFound):
            override_triage(
                session=s,
                study_uid="1.1",
                user=c2,
                priority="stat",
                category="stroke",
                reason="x",
                now=NOW,
            )
        st = override_triage(
            session=s,
            study_uid="1.1",
            user=c1,
            priority="stat",
            category="chest_pain",
            reason="patient in pain",
            now=NOW,
        )
        assert (st.priority, st.category, st.deadline_at) == (
            "stat",
            "chest_pain",
            st.received_at + timedelta(minutes=30),
        )
        # but a clinic may not downgrade
        with pytest.raises(NotAReader):
            override_triage(
                session=s,
                study_uid="1.1",
                user=c1,
                priority="routine",
                category=None,
                reason="x",
                now=NOW,
            )
        assert claim_next(session=s, reader=a, now=NOW, lease=LEASE) is not None


def test_event_visibility(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        a = fast_user(s, "a", "radiologist")
        c1 = fast_user(s, "c1", "clinic", "TS01")
        gw = fast_user(s, "gw", "gateway")
        e1 = events.publish(
            session=s, kind="report_signed", study_uid="9.1", site_code="TS01", payload={}, now=NOW
        )
        events.publish(
            session=s, kind="report_signed", study_uid="9.2", site_code="TS02", payload={}, now=NOW
        )
        events.publish(
            session=s, kind="escalation", study_uid=None, site_code=None, payload={}, now=NOW
        )
        assert e1.id is None  # inserted at commit, in commit order
        assert events.list_since(session=s, after_id=0, viewer=a) == []
        s.commit()
        assert len(events.list_since(session=s, after_id=0, viewer=a)) == 3
        assert len(events.list_since(session=s, after_id=e1.id, viewer=a)) == 2
        assert len(events.list_since(session=s, after_id=0, viewer=a, limit=1)) == 1
        assert [e.study_uid for e in events.list_since(session=s, after_id=0, viewer=c1)] == ["9.1"]
        assert events.list_since(session=s, after_id=0, viewer=gw) == []
        with pytest.raises(events.UnknownEventKind):
            events.publish(
                session=s, kind="nope", study_uid=None, site_code=None, payload={}, now=NOW
            )


def test_escalation_levels_once_each(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        a = fast_user(s, "a", "radiologist")
        add(s, "4.1", text="急性脑卒中")  # stroke: 20 minutes from NOW
        add(s, "4.2", text="胸痛")  # chest pain: 30 minutes
        add(s, "4.3")  # routine: 24 h
        s.commit()
        assert escalation.scan(session=s, now=NOW + timedelta(minutes=9)) == []
        got = escalation.scan(session=s, now=NOW + timedelta(minutes=10))
        assert [(e.study_uid, e.payload["level"]) for e in got] == [("4.1", 1)]
        assert escalation.scan(session=s, now=NOW + timedelta(minutes=11)) == []
        # a claimed study does not escalate; once its lease lapses it does
        claim_study(session=s, study_uid="4.2", reader=a, now=NOW, lease=timedelta(minutes=16))
        assert escalation.scan(session=s, now=NOW + timedelta(minutes=15)) == []
        got = escalation.scan(session=s, now=NOW + timedelta(minutes=17))
        assert [(e.study_uid, e.payload["level"]) for e in got] == [("4.2", 1)]
        got = escalation.scan(session=s, now=NOW + timedelta(minutes=31))
        assert sorted((e.study_uid, e.payload["level"]) for e in got) == [("4.1", 2), ("4.2", 2)]
        assert escalation.scan(session=s, now=NOW + timedelta(hours=2)) == []
        got = escalation.scan(session=s, now=NOW + timedelta(hours=25))
        assert [(e.study_uid, e.payload["level"]) for e in got] == [("4.3", 2)]
        assert study(s, "4.3").escalation_level == 2
        # escalations are on the feed, without patient names
        s.commit()
        feed = events.list_since(session=s, after_id=0, viewer=a)
        assert [e.kind for e in feed].count("escalation") == 5
        assert all("王" not in str(events.as_dict(e)) for e in feed)


def test_expired_lease_returns_to_queue_then_next(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        a = fast_user(s, "a", "radiologist")
        b = fast_user(s, "b", "radiologist")
        add(s, "6.1", text="STROKE")
        assert claim_next(session=s, reader=a, now=NOW, lease=LEASE) is not None
        assert claim_next(session=s, reader=b, now=NOW, lease=LEASE) is None
        assert expire_claims(session=s, now=NOW + LEASE + timedelta(seconds=1)) == 1
        s.commit()
        [released] = [
            e
            for e in events.list_since(session=s, after_id=0, viewer=b)
            if e.kind == "study_released"
        ]
        assert (released.study_uid, released.payload["reason"]) == ("6.1", "lease expired")
        st = claim_next(session=s, reader=b, now=NOW + LEASE + timedelta(seconds=2), lease=LEASE)
        assert st is not None and st.claimed_by_id == b.id


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from start_receiver(fail_first=2)


def test_webhook_delivery_retries_and_survives(
    session_factory: sessionmaker[Session], receiver: Receiver
) -> None:
    now = [NOW]
    with session_factory.begin() as s:
        seed(s)
        old = events.publish(
            session=s,
            kind="escalation",
            study_uid="0.1",
            site_code="TS01",
            payload={},
            now=NOW - timedelta(hours=1),
        )
        for uid in ("7.1", "7.2"):
            events.publish(
                session=s,
                kind="study_urgent",
                study_uid=uid,
                site_code="TS01",
                payload={"category": "stroke"},
                now=NOW,
            )
    unreachable = "http://127.0.0.1:9/nothing-listens"
    urls = [receiver.url, unreachable]
    with httpx.Client(timeout=2) as client:

        def run() -> webhooks.RunStats:
            return webhooks.run_once(
                factory=session_factory,
                client=client,
                urls=urls,
                secret=WEBHOOK_SECRET,
                clock=lambda: now[0],
                max_attempts=3,
            )

        first = run()  # old events are not backfilled; receiver fails the first two
        assert (first.queued, first.delivered, first.retried) == (4, 0, 4)
        assert run().delivered == 0  # not due yet (backoff)
        now[0] += timedelta(seconds=6)
        second = run()
        assert (second.delivered, second.retried) == (2, 2)
        now[0] += timedelta(seconds=11)
        third = run()
        assert (third.delivered, third.failed) == (0, 2)
    assert [r.kind for r in receiver.received] == ["study_urgent", "study_urgent"]
    assert all(r.signature_ok for r in receiver.received)
    assert {r.body["study_uid"] for r in receiver.received} == {"7.1", "7.2"}
    with session_factory() as s:
        rows = s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        assert all(r.event_id != old.id for r in rows)
        assert {(r.url, r.status) for r in rows} == {
            (receiver.url, DELIVERY_DELIVERED),
            (unreachable, DELIVERY_FAILED),
        }
        # a new event later is queued after the last one (delivery state is in the table)
        events.publish(
            session=s,
            kind="report_signed",
            study_uid="7.1",
            site_code="TS01",
            payload={},
            now=now[0],
        )
        s.commit()
        assert webhooks.enqueue(session=s, urls=urls, now=now[0]) == 2


@pytest.fixture
def plain_receiver() -> Iterator[Receiver]:
    yield from start_receiver()


def test_urgent_webhooks_go_first(
    session_factory: sessionmaker[Session], plain_receiver: Receiver
) -> None:
    """A backlog of routine events (a receiver that was down, say) does not hold back an
    urgent one published after them: it is delivered first."""
    with session_factory.begin() as s:
        seed(s)
        for n in range(6):
            events.publish(
                session=s,
                kind="study_claimed",
                study_uid=f"8.{n}",
                site_code="TS01",
                payload={},
                now=NOW,
            )
        # the urgent ones: the result, the clinic's read-back of it, a missed deadline and a
        # township's call that a patient is on the way
        for n, kind in enumerate(
            ("critical_result", "critical_result_acknowledged", "study_overdue", "call_ahead")
        ):
            events.publish(
                session=s,
                kind=kind,
                study_uid=f"8.9{n}",
                site_code="TS01",
                payload={},
                now=NOW,
            )
    with httpx.Client(timeout=5) as client:
        stats = webhooks.run_once(
            factory=session_factory,
            client=client,
            urls=[plain_receiver.url],
            secret=WEBHOOK_SECRET,
            clock=lambda: NOW,
            parallel=1,  # one at a time: the order of arrival is the order of sending
        )
    assert stats.delivered == 10
    kinds = [r.kind for r in plain_receiver.received]
    assert set(kinds[:4]) == {
        "critical_result",
        "critical_result_acknowledged",
        "study_overdue",
        "call_ahead",
    }
    assert kinds[4:] == ["study_claimed"] * 6
