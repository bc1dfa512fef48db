"""The audit writer: views taken down on the request path, written later in one batch; one
row per key and few minutes where asked; kept for the next round when the database fails;
written on close."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from viewer_api.auditing import AuditWriter
from worklist.accounts import create_site, create_user
from worklist.audit import AuditAction, PendingEvent
from worklist.db import make_engine, make_sessionmaker, upgrade
from worklist.models import AuditEvent, User

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
VIEWED = AuditAction.DICOMWEB_IMAGES_VIEWED


@pytest.fixture
def factory(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    return make_sessionmaker(make_engine(url))


def _nurse(factory: sessionmaker[Session]) -> User:
    with factory.begin() as session:
        create_site(session=session, code="TS01", name="一号卫生院", now=NOW)
        user = create_user(
            session=session, username="nurse", password="pw-123456", role="clinic",
            site_code="TS01", now=NOW,
        )  # fmt: skip
        session.expunge(user)
    return user


def _view(user: User, study: str, at: datetime) -> PendingEvent:
    return PendingEvent.of(
        actor=user, action=VIEWED, object_id=study, client_addr="10.0.0.7", now=at
    )


def _rows(factory: sessionmaker[Session]) -> list[tuple[str, str, str, datetime]]:
    with factory() as session:
        return [
            (e.username, e.site_code, e.object_id, e.at.replace(tzinfo=UTC))
            for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        ]


def test_one_row_per_key_and_window_written_in_one_batch(factory: sessionmaker[Session]) -> None:
    nurse = _nurse(factory)
    writer = AuditWriter(factory, interval=3600, repeat_seconds=300)
    for seconds in (0, 10, 299, 300, 310):  # a new row once 5 minutes have passed
        for study in ("1.2.3", "1.2.4"):
            at = NOW + timedelta(seconds=seconds)
            writer.add(_view(nurse, study, at), once_per=(nurse.id, VIEWED, study))
    writer.add(_view(nurse, "1.2.3", NOW))  # no key: always kept
    assert _rows(factory) == []  # nothing written on the request path
    assert writer.flush() == 5
    assert _rows(factory) == [
        ("nurse", "TS01", "1.2.3", NOW),
        ("nurse", "TS01", "1.2.4", NOW),
        ("nurse", "TS01", "1.2.3", NOW + timedelta(seconds=300)),
        ("nurse", "TS01", "1.2.4", NOW + timedelta(seconds=300)),
        ("nurse", "TS01", "1.2.3", NOW),
    ]
    writer.close()


def test_a_failed_write_keeps_the_events_for_the_next_round(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    nurse = _nurse(factory)
    broken = make_sessionmaker(make_engine(f"sqlite:///{tmp_path / 'empty.db'}"))  # no tables
    writer = AuditWriter(broken, interval=3600)
    writer.add(_view(nurse, "1.2.3", NOW))
    with pytest.raises(OperationalError):
        writer.flush()
    writer.add(_view(nurse, "1.2.4", NOW))
    writer.factory = factory  # the database is back
    writer.close()  # stops the thread and writes what is left, oldest first
    assert [row[2] for row in _rows(factory)] == ["1.2.3", "1.2.4"]


def test_past_max_pending_the_oldest_are_dropped(factory: sessionmaker[Session]) -> None:
    nurse = _nurse(factory)
    writer = AuditWriter(factory, interval=3600, max_pending=2)
    for study in ("1.2.1", "1.2.2", "1.2.3"):
        writer.add(_view(nurse, study, NOW))
    writer.close()
    assert writer.dropped == 1
    assert [row[2] for row in _rows(factory)] == ["1.2.2", "1.2.3"]


def test_the_thread_writes_without_being_asked(factory: sessionmaker[Session]) -> None:
    nurse = _nurse(factory)
    writer = AuditWriter(factory, interval=0.05)
    writer.add(_view(nurse, "1.2.3", NOW))
    deadline = time.monotonic() + 30
    while not _rows(factory) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [row[2] for row in _rows(factory)] == ["1.2.3"]
    writer.close()
