"""Retention: expired audit events, events and finished webhook deliveries are
purged in bounded batches, the rest left alone; on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from pydantic import ValidationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from worklist import retention
from worklist.db import alembic_config, make_engine, upgrade
from worklist.housekeeping import Housekeeping
from worklist.models import (
    DELIVERY_DELIVERED,
    DELIVERY_FAILED,
    DELIVERY_PENDING,
    AuditEvent,
    Event,
    WebhookDelivery,
)
from worklist.settings import WorklistSettings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _audit_rows(ats: list[datetime]) -> list[dict[str, Any]]:
    return [
        {
            "at": at,
            "username": "dr_li",
            "role": "radiologist",
            "site_code": "",
            "action": "study_viewed",
            "object_type": "study",
            "object_id": f"1.2.3.{i}",
            "client_addr": "10.0.0.1",
            "outcome": "success",
            "detail": {},
        }
        for i, at in enumerate(ats)
    ]


def _count(session: Session, model: Any, *where: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_audit_purge_takes_only_old_rows_in_batches(
    session_factory: sessionmaker[Session],
) -> None:
    settings = WorklistSettings(audit_retention_days=365)
    old = [NOW - 400 * DAY + timedelta(minutes=i) for i in range(23)]
    edge = [NOW - 365 * DAY, NOW - 365 * DAY + timedelta(seconds=1)]  # on the line: kept
    recent = [NOW - 10 * DAY, NOW]
    with session_factory.begin() as session:
        session.execute(insert(AuditEvent), _audit_rows(old + edge + recent))

    with session_factory.begin() as session:
        first = retention.purge_expired(
            session=session, now=NOW, settings=settings, batch=5, max_batches=3
        )
    assert (first.audit_events, first.more) == (15, True)
    with session_factory.begin() as session:
        second = retention.purge_expired(
            session=session, now=NOW, settings=settings, batch=5, max_batches=3
        )
    assert (second.audit_events, second.more) == (8, False)
    with session_factory.begin() as session:
        third = retention.purge_expired(
            session=session, now=NOW, settings=settings, batch=5, max_batches=3
        )
    assert third.total == 0 and not third.more

    with session_factory() as session:
        left = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    kept = [e for e in left if e.action == "study_viewed"]
    assert sorted(e.at for e in kept) == sorted(edge + recent)
    purges = [e for e in left if e.action == retention.ACTION_PURGED]
    # one audit event per purge that deleted something, saying how many
    assert [p.detail["audit_events"] for p in purges] == [15, 8]
    assert all(p.username == "" and p.object_type == "audit" and p.at == NOW for p in purges)
    assert purges[0].detail["audit_retention_days"] == 365


def test_zero_keeps_forever(session_factory: sessionmaker[Session]) -> None:
    settings = WorklistSettings(
        audit_retention_days=0, event_retention_days=0, webhook_retention_days=0
    )
    with session_factory.begin() as session:
        session.execute(insert(AuditEvent), _audit_rows([NOW - 9000 * DAY]))
        session.add(Event(kind="study_urgent", payload={}, created_at=NOW - 9000 * DAY))
    with session_factory.begin() as session:
        result = retention.purge_expired(session=session, now=NOW, settings=settings)
    assert result.total == 0
    with session_factory() as session:
        assert _count(session, AuditEvent) == 1 and _count(session, Event) == 1


def _event(session: Session, created_at: datetime) -> int:
    event = Event(kind="study_urgent", study_uid="1.2.3", payload={}, created_at=created_at)
    session.add(event)
    session.flush()
    return event.id


def _delivery(session: Session, event_id: int, url: str, status: str, created_at: datetime) -> None:
    session.add(
        WebhookDelivery(
            event_id=event_id,
            url=url,
            status=status,
            attempts=1,
            next_attempt_at=created_at,
            delivered_at=created_at if status == DELIVERY_DELIVERED else None,
            created_at=created_at,
        )
    )


def test_events_and_webhook_deliveries_are_pruned(
    session_factory: sessionmaker[Session],
) -> None:
    settings = WorklistSettings(event_retention_days=7, webhook_retention_days=30)
    a, b = "https://a.example/hook", "https://b.example/hook"
    with session_factory.begin() as session:
        bare_old = [_event(session, NOW - 8 * DAY - timedelta(minutes=i)) for i in range(4)]
        bare_new = _event(session, NOW - 6 * DAY)
        # delivered 40 days ago to both URLs: those rows go, then the event
        gone = _event(session, NOW - 40 * DAY)
        _delivery(session, gone, a, DELIVERY_DELIVERED, NOW - 40 * DAY)
        _delivery(session, gone, b, DELIVERY_FAILED, NOW - 40 * DAY)
        # still pending for 35 days (a dead receiver): kept, and so is its event
        stuck = _event(session, NOW - 35 * DAY)
        _delivery(session, stuck, a, DELIVERY_PENDING, NOW - 35 * DAY)
        # delivered 20 days ago: inside the delivery retention, so row and event stay
        kept = _event(session, NOW - 20 * DAY)
        _delivery(session, kept, a, DELIVERY_DELIVERED, NOW - 20 * DAY)
        # B's newest delivery is old, but it is B's high-water mark: kept with its event
        mark = _event(session, NOW - 33 * DAY)
        _delivery(session, mark, b, DELIVERY_DELIVERED, NOW - 33 * DAY)
    with session_factory.begin() as session:
        result = retention.purge_expired(session=session, now=NOW, settings=settings, batch=2)
    assert (result.webhook_deliveries, result.events, result.audit_events) == (2, 5, 0)
    with session_factory() as session:
        left_events = set(session.scalars(select(Event.id)))
        left_deliveries = {(d.event_id, d.url) for d in session.scalars(select(WebhookDelivery))}
        purge = session.scalars(
            select(AuditEvent).where(AuditEvent.action == retention.ACTION_PURGED)
        ).one()
    assert left_events == {bare_new, stuck, kept, mark}
    assert not left_events & set(bare_old)
    assert left_deliveries == {(stuck, a), (kept, a), (mark, b)}
    assert purge.detail["events"] == 5 and purge.detail["webhook_deliveries"] == 2


def test_retention_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = WorklistSettings()
    assert defaults.audit_retention_days == 2190
    assert (defaults.event_retention_days, defaults.webhook_retention_days) == (7, 30)
    monkeypatch.setenv("TELEREAD_WORKLIST_AUDIT_RETENTION_DAYS", "5475")
    monkeypatch.setenv("TELEREAD_WORKLIST_EVENT_RETENTION_DAYS", "0")
    settings = WorklistSettings()
    assert (settings.audit_retention_days, settings.event_retention_days) == (5475, 0)
    monkeypatch.setenv("TELEREAD_WORKLIST_AUDIT_RETENTION_DAYS", "-1")
    with pytest.raises(ValidationError):
        WorklistSettings()


def test_housekeeping_runs_the_purge(session_factory: sessionmaker[Session]) -> None:
    """The housekeeping thread purges on its first pass (default settings: six years)."""
    now = datetime.now(UTC)
    with session_factory.begin() as session:
        session.execute(insert(AuditEvent), _audit_rows([now - 7 * 365 * DAY, now - DAY]))
    housekeeping = Housekeeping(session_factory, WorklistSettings(), interval=0.05)
    housekeeping.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with session_factory() as session:
                if _count(session, AuditEvent, AuditEvent.action == retention.ACTION_PURGED):
                    break
            time.sleep(0.05)
    finally:
        housekeeping.stop()
        housekeeping.join(timeout=10)
    with session_factory() as session:
        assert _count(session, AuditEvent, AuditEvent.action == "study_viewed") == 1
        assert _count(session, AuditEvent, AuditEvent.action == retention.ACTION_PURGED) == 1


def test_the_database_refuses_to_update_audit_events(
    session_factory: sessionmaker[Session],
) -> None:
    """Migration 0005's trigger: UPDATE refused on both databases; DELETE (retention) works."""
    with session_factory.begin() as session:
        session.execute(insert(AuditEvent), _audit_rows([NOW - 9000 * DAY, NOW]))
    with pytest.raises(DBAPIError, match="append-only"), session_factory.begin() as session:
        session.execute(update(AuditEvent).values(username="someone_else"))
    with session_factory() as session:
        assert set(session.scalars(select(AuditEvent.username))) == {"dr_li"}
    with session_factory.begin() as session:
        purged = retention.purge_expired(session=session, now=NOW, settings=WorklistSettings())
    assert purged.audit_events == 1


def test_migration_0005_downgrades_and_upgrades(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(AuditEvent), _audit_rows([NOW]))
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0004")
        with engine.begin() as conn:  # no trigger: the update goes through
            conn.execute(update(AuditEvent).values(username="changed"))
        upgrade(db_url)
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(update(AuditEvent).values(username="again"))
    finally:
        engine.dispose()
