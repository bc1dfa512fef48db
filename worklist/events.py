"""The event feed: things readers must know now (urgent studies, escalations, claims, signed
reports, critical results).

Events are rows in ``events``; the id orders the feed, so any API replica can stream it and
a client resumes after the last id it saw. Webhook delivery (``worklist.webhooks``) reads
the same rows. Payloads carry no patient names or IDs.

**Ids in commit order.** ``publish`` only queues the event on its session; the rows are
inserted when the session commits (``_insert_published``, a ``before_commit`` hook), so a
reader that has seen id N never finds a committed event below N later: "ids above the last
seen" skips nothing, on any replica. PostgreSQL: the insert takes a transaction-scoped
advisory lock (``EVENT_LOCK``) first, so the sequence hands out ids one committing
transaction at a time and each commit is visible before the next can take an id; the
transaction then ``NOTIFY``s ``CHANNEL``, which wakes every process's readers
(``worklist.event_signal``). SQLite has one writer at a time, which gives the same order.
The lock is taken last, after every row lock of the transaction, so it adds no deadlock.

Who sees what (``scope_for``): radiologists and admins see every event (every active
radiologist is taken to be on shift); a clinic user sees only events of its own site; nobody
else sees any.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, event, false, func, select, true
from sqlalchemy.orm import Session, SessionTransaction

from worklist.errors import WorklistError
from worklist.models import (
    EVENT_KINDS,
    ROLE_ADMIN,
    ROLE_CLINIC,
    ROLE_RADIOLOGIST,
    Event,
    Site,
    Study,
    User,
)

logger = logging.getLogger(__name__)

KIND_STUDY_URGENT = "study_urgent"
KIND_ESCALATION = "escalation"
KIND_STUDY_CLAIMED = "study_claimed"
KIND_STUDY_RELEASED = "study_released"
KIND_REPORT_SIGNED = "report_signed"
KIND_REPORT_AMENDED = "report_amended"
KIND_CRITICAL_RESULT = "critical_result"
# the clinic's side: its acknowledgement (read-back) of a critical result, a study past its
# deadline with no report, a patient announced before the images
KIND_CRITICAL_RESULT_ACKNOWLEDGED = "critical_result_acknowledged"
KIND_STUDY_OVERDUE = "study_overdue"
KIND_CALL_AHEAD = "call_ahead"
# the holder's claim runs out soon (``claims.warn_expiring_claims``)
KIND_CLAIM_EXPIRING = "claim_expiring"
# a re-sent instance replaced a served one after the study's report was signed
KIND_STUDY_UPDATED_AFTER_REPORT = "study_updated_after_report"

# what a receiver must act on first (webhooks deliver these before the rest): an urgent study,
# its escalation and its critical result; the clinic's read-back of that result (the loop a
# critical result opens is closed only when the county hears it); a study past its deadline
# with no report; a township's call that a patient is on the way (the county prepares before
# the images arrive). Routine life-cycle events (claims, signatures) wait behind them.
URGENT_KINDS = frozenset(
    {
        KIND_STUDY_URGENT,
        KIND_ESCALATION,
        KIND_CRITICAL_RESULT,
        KIND_CRITICAL_RESULT_ACKNOWLEDGED,
        KIND_STUDY_OVERDUE,
        KIND_CALL_AHEAD,
    }
)

MAX_PAGE = 500
# PostgreSQL: NOTIFY channel of committed events, and the advisory lock ids are taken under
CHANNEL = "teleread_events"
EVENT_LOCK = 0x74656C6572656164  # "teleread" in ASCII, a signed 64-bit key
# session.info keys: events waiting for the commit; whether the last commit inserted any
_PENDING = "teleread_events_pending"
COMMITTED = "teleread_events_committed"


class UnknownEventKind(WorklistError):
    """Unknown event kind."""


def publish(
    *,
    session: Session,
    kind: str,
    study_uid: str | None,
    site_code: str | None,
    payload: dict[str, Any],
    now: datetime,
) -> Event:
    """Append one event of ``kind`` for the site ``site_code`` (None: no site's own).

    The row is inserted, and gets its id, when ``session`` commits (ids in commit order,
    see the module docstring); a rollback drops it. Until then the returned ``Event`` has no
    id and queries do not see it."""
    if kind not in EVENT_KINDS:
        raise UnknownEventKind(f"unknown event kind {kind!r}")
    item = Event(
        kind=kind,
        study_uid=study_uid,
        site_code=site_code,
        payload=dict(payload),
        created_at=now,
    )
    session.info.setdefault(_PENDING, []).append(item)
    return item


@event.listens_for(Session, "before_commit")
def _insert_published(session: Session) -> None:
    """Insert the events ``publish`` queued on ``session``, last thing before its commit."""
    pending: list[Event] = session.info.pop(_PENDING, [])
    session.info[COMMITTED] = bool(pending)
    if not pending:
        return
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        session.execute(select(func.pg_advisory_xact_lock(EVENT_LOCK)))
    session.add_all(pending)
    session.flush()
    if postgres:
        session.execute(select(func.pg_notify(CHANNEL, str(pending[-1].id))))
    for item in pending:
        logger.info(
            "event published",
            extra={
                "action": "event_published",
                "kind": item.kind,
                "study_uid": item.study_uid,
                "id": item.id,
            },
        )


@event.listens_for(Session, "after_transaction_end")
def _drop_unpublished(session: Session, transaction: SessionTransaction) -> None:
    """A session rolled back (or closed) without committing drops what it published."""
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def study_payload(study: Study) -> dict[str, Any]:
    """What an event says about a study: triage, status, deadline; no patient data."""
    return {
        "priority": study.priority,
        "category": study.category,
        "status": study.status,
        "modalities": study.modalities,
        "received_at": study.received_at.isoformat() if study.received_at else None,
        "deadline_at": study.deadline_at.isoformat() if study.deadline_at else None,
        "escalation_level": study.escalation_level or 0,
    }


def publish_study_event(
    *,
    session: Session,
    kind: str,
    study: Study,
    site_code: str | None,
    now: datetime,
    extra: dict[str, Any] | None = None,
) -> Event:
    """``publish`` for a study: its triage, status and deadline, plus ``extra``."""
    payload = study_payload(study)
    payload.update(extra or {})
    return publish(
        session=session,
        kind=kind,
        study_uid=study.study_instance_uid,
        site_code=site_code,
        payload=payload,
        now=now,
    )


@dataclass(frozen=True, slots=True)
class EventScope:
    """The events one viewer may see: all (``sites`` None) or those of ``sites``. The same
    rule as a query filter (``clause``) and as a test on one event (``sees``), so a stream
    fanned out in memory and a page read from the table agree by construction."""

    sites: frozenset[str] | None

    def sees(self, site_code: str | None) -> bool:
        return self.sites is None or (site_code is not None and site_code in self.sites)

    def clause(self) -> ColumnElement[bool]:
        if self.sites is None:
            return true()
        if not self.sites:
            return false()
        return Event.site_code.in_(sorted(self.sites))


NOTHING = EventScope(frozenset())
EVERYTHING = EventScope(None)


def scope_for(*, session: Session, viewer: User) -> EventScope:
    """Radiologists and admins: all; clinic users: their site's; everyone else: none."""
    if not viewer.is_active:
        return NOTHING
    if viewer.role in (ROLE_RADIOLOGIST, ROLE_ADMIN):
        return EVERYTHING
    if viewer.role == ROLE_CLINIC and viewer.site_id is not None:
        code = session.scalar(select(Site.code).where(Site.id == viewer.site_id))
        return NOTHING if code is None else EventScope(frozenset({code}))
    return NOTHING


def visible_events_filter(*, session: Session, viewer: User) -> ColumnElement[bool]:
    """``scope_for(...)`` as a query filter."""
    return scope_for(session=session, viewer=viewer).clause()


def list_after(
    *,
    session: Session,
    after_id: int,
    scope: EventScope = EVERYTHING,
    limit: int = 100,
    up_to: int | None = None,
) -> list[Event]:
    """Events of ``scope`` with an id above ``after_id`` (and at most ``up_to``), oldest
    first, at most ``limit`` (capped at ``MAX_PAGE``)."""
    limit = max(1, min(limit, MAX_PAGE))
    stmt = select(Event).where(Event.id > after_id, scope.clause())
    if up_to is not None:
        stmt = stmt.where(Event.id <= up_to)
    return list(session.scalars(stmt.order_by(Event.id).limit(limit)))


def list_since(*, session: Session, after_id: int, viewer: User, limit: int = 100) -> list[Event]:
    """Events ``viewer`` may see with an id above ``after_id``, oldest first."""
    scope = scope_for(session=session, viewer=viewer)
    return list_after(session=session, after_id=after_id, scope=scope, limit=limit)


def last_id(*, session: Session) -> int:
    """The newest event id (0 when there is none): where a fresh stream starts."""
    return session.scalar(select(Event.id).order_by(Event.id.desc()).limit(1)) or 0


def as_dict(event: Event) -> dict[str, Any]:
    """The event as sent on the stream and to webhooks."""
    return {
        "id": event.id,
        "kind": event.kind,
        "study_uid": event.study_uid,
        "site_code": event.site_code,
        "created_at": event.created_at.isoformat(),
        "payload": event.payload,
    }


__all__ = [
    "CHANNEL",
    "COMMITTED",
    "EVENT_LOCK",
    "EVERYTHING",
    "KIND_CALL_AHEAD",
    "KIND_CLAIM_EXPIRING",
    "KIND_CRITICAL_RESULT",
    "KIND_CRITICAL_RESULT_ACKNOWLEDGED",
    "KIND_ESCALATION",
    "KIND_REPORT_AMENDED",
    "KIND_REPORT_SIGNED",
    "KIND_STUDY_CLAIMED",
    "KIND_STUDY_OVERDUE",
    "KIND_STUDY_RELEASED",
    "KIND_STUDY_UPDATED_AFTER_REPORT",
    "KIND_STUDY_URGENT",
    "NOTHING",
    "URGENT_KINDS",
    "EventScope",
    "UnknownEventKind",
    "as_dict",
    "last_id",
    "list_after",
    "list_since",
    "publish",
    "publish_study_event",
    "scope_for",
    "study_payload",
    "visible_events_filter",
]
