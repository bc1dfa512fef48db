"""The audit trail: append-only (there is deliberately no update or delete here)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worklist.models import AuditEvent, Site, User

logger = logging.getLogger(__name__)


def record(
    *,
    session: Session,
    actor: User | None,
    action: str,
    object_type: str = "",
    object_id: str = "",
    client_addr: str = "",
    outcome: str = "success",
    detail: dict[str, Any] | None = None,
    now: datetime,
) -> AuditEvent:
    """Append one event; who (copied from ``actor``, so it survives renames), what, where."""
    site_code = ""
    if actor is not None and actor.site_id is not None:
        site_code = session.scalar(select(Site.code).where(Site.id == actor.site_id)) or ""
    event = AuditEvent(
        at=now,
        user_id=actor.id if actor is not None else None,
        username=actor.username if actor is not None else "",
        role=actor.role if actor is not None else "",
        site_code=site_code,
        action=action[:64],
        object_type=object_type[:32],
        object_id=object_id[:128],
        client_addr=client_addr[:64],
        outcome=outcome[:16],
        detail=dict(detail or {}),
    )
    session.add(event)
    session.flush()
    return event


def list_events(
    *,
    session: Session,
    action: str | None = None,
    object_id: str | None = None,
    limit: int = 200,
) -> list[AuditEvent]:
    """Events newest first, optionally for one action and/or object."""
    stmt = select(AuditEvent)
    if action is not None:
        stmt = stmt.where(AuditEvent.action == action)
    if object_id is not None:
        stmt = stmt.where(AuditEvent.object_id == object_id)
    return list(
        session.scalars(stmt.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit))
    )


def search_events(
    *,
    session: Session,
    action: str | None = None,
    username: str | None = None,
    object_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEvent]:
    """Events newest first, filtered (``since`` inclusive, ``until`` exclusive), one page."""
    stmt = select(AuditEvent)
    if action is not None:
        stmt = stmt.where(AuditEvent.action == action)
    if username is not None:
        stmt = stmt.where(AuditEvent.username == username)
    if object_id is not None:
        stmt = stmt.where(AuditEvent.object_id == object_id)
    if since is not None:
        stmt = stmt.where(AuditEvent.at >= since)
    if until is not None:
        stmt = stmt.where(AuditEvent.at < until)
    stmt = stmt.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(stmt))


__all__ = ["list_events", "record", "search_events"]
