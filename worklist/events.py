"""The event feed: things readers must know now (urgent studies, escalations, claims, signed
reports, critical results).

Events are rows in ``events``; the id orders the feed, so any API replica can stream it (SSE
polls the table) and a client resumes after the last id it saw. Webhook delivery
(``worklist.webhooks``) reads the same rows. Payloads carry no patient names or IDs.

Who sees what: radiologists and admins see every event (every active radiologist is taken to
be on shift); a clinic user sees only events of its own site; nobody else sees any.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, false, select, true
from sqlalchemy.orm import Session

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

MAX_PAGE = 500


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
    """Append one event (flushed, so it has its id; it is seen once the session commits)."""
    if kind not in EVENT_KINDS:
        raise UnknownEventKind(f"unknown event kind {kind!r}")
    event = Event(
        kind=kind,
        study_uid=study_uid,
        site_code=site_code,
        payload=dict(payload),
        created_at=now,
    )
    session.add(event)
    session.flush()
    logger.info(
        "event published",
        extra={"action": "event_published", "kind": kind, "study_uid": study_uid, "id": event.id},
    )
    return event


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


def visible_events_filter(*, session: Session, viewer: User) -> ColumnElement[bool]:
    """Radiologists and admins: all; clinic users: their site's; everyone else: none."""
    if not viewer.is_active:
        return false()
    if viewer.role in (ROLE_RADIOLOGIST, ROLE_ADMIN):
        return true()
    if viewer.role == ROLE_CLINIC and viewer.site_id is not None:
        code = session.scalar(select(Site.code).where(Site.id == viewer.site_id))
        if code is None:
            return false()
        return Event.site_code == code
    return false()


def list_since(*, session: Session, after_id: int, viewer: User, limit: int = 100) -> list[Event]:
    """Visible events with an id above ``after_id``, oldest first, at most ``limit``."""
    limit = max(1, min(limit, MAX_PAGE))
    return list(
        session.scalars(
            select(Event)
            .where(Event.id > after_id, visible_events_filter(session=session, viewer=viewer))
            .order_by(Event.id)
            .limit(limit)
        )
    )


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
    "KIND_STUDY_URGENT",
    "UnknownEventKind",
    "as_dict",
    "last_id",
    "list_since",
    "publish",
    "publish_study_event",
    "study_payload",
    "visible_events_filter",
]
