"""The audit trail: append-only (there is deliberately no update or delete here)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from worklist.models import AuditEvent, Site, User

logger = logging.getLogger(__name__)


def _text(value: str, limit: int) -> str:
    """Cut to the column's size; NUL (which PostgreSQL refuses in text, and a refused log-in
    may carry in its user name) becomes U+FFFD, so recording the attempt cannot fail."""
    return value[:limit].replace("\x00", "\ufffd")


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
        action=_text(action, 64),
        object_type=_text(object_type, 32),
        object_id=_text(object_id, 128),
        client_addr=_text(client_addr, 64),
        outcome=_text(outcome, 16),
        detail=dict(detail or {}),
    )
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which events an export covers: ``since`` inclusive, ``until`` exclusive; ``max_id``
    pins the export to the events that existed when it started."""

    since: datetime | None = None
    until: datetime | None = None
    username: str | None = None
    action: str | None = None
    object_id: str | None = None
    site: str | None = None
    max_id: int | None = None


def _where(stmt: Select[AuditEvent], f: AuditFilter) -> Select[AuditEvent]:
    if f.since is not None:
        stmt = stmt.where(AuditEvent.at >= f.since)
    if f.until is not None:
        stmt = stmt.where(AuditEvent.at < f.until)
    if f.username is not None:
        stmt = stmt.where(AuditEvent.username == f.username)
    if f.action is not None:
        stmt = stmt.where(AuditEvent.action == f.action)
    if f.object_id is not None:
        stmt = stmt.where(AuditEvent.object_id == f.object_id)
    if f.site is not None:
        stmt = stmt.where(AuditEvent.site_code == f.site)
    if f.max_id is not None:
        stmt = stmt.where(AuditEvent.id <= f.max_id)
    return stmt


def last_id(*, session: Session) -> int:
    """The newest event's id (0 when there is none): the upper bound of an export."""
    return int(session.scalar(select(func.max(AuditEvent.id))) or 0)


def iter_events(
    *,
    factory: sessionmaker[Session],
    filters: AuditFilter,
    page_size: int = 1000,
) -> Iterator[list[AuditEvent]]:
    """Matching events oldest first, in pages of ``page_size`` (keyset on ``(at, id)``).

    Each page is read in its own short session, so a million-row export holds neither a
    million objects nor a pooled connection while a slow client downloads; the yielded
    events are detached (every column loaded)."""
    after: tuple[datetime, int] | None = None
    while True:
        stmt = _where(select(AuditEvent), filters)
        if after is not None:
            at, event_id = after
            # ``at >= :at`` lets the index on ``at`` bound the scan; the OR breaks ties
            stmt = stmt.where(
                AuditEvent.at >= at, or_(AuditEvent.at > at, AuditEvent.id > event_id)
            )
        stmt = stmt.order_by(AuditEvent.at, AuditEvent.id).limit(page_size)
        with factory() as session:
            page = list(session.scalars(stmt))
            session.expunge_all()
        if not page:
            return
        yield page
        if len(page) < page_size:
            return
        after = (page[-1].at, page[-1].id)


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
    site: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEvent]:
    """Events newest first, filtered (``since`` inclusive, ``until`` exclusive), one page."""
    filters = AuditFilter(
        since=since,
        until=until,
        username=username,
        action=action,
        object_id=object_id,
        site=site,
    )
    stmt = _where(select(AuditEvent), filters)
    stmt = stmt.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(stmt))


__all__ = ["AuditFilter", "iter_events", "last_id", "list_events", "record", "search_events"]
