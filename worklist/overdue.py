"""Overdue studies: past the read deadline with no signed report yet, claimed or not.

The clinic that sent a study is told once (a ``study_overdue`` event for its site) when the
deadline passes and nothing has been signed: ``studies.overdue_at`` records that it was
told, set by a conditional ``UPDATE ... WHERE overdue_at IS NULL`` so two scanners publish
one event. A person changing the study's triage sets a new deadline and clears the mark.
(Escalation, ``worklist.escalation``, is the readers' side: unclaimed studies only.)
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.orm import Session, joinedload

from worklist.events import KIND_STUDY_OVERDUE, publish_study_event
from worklist.models import (
    STATUS_CLAIMED,
    STATUS_DRAFT,
    STATUS_READY,
    STATUS_RECEIVING,
    Event,
    Study,
)

logger = logging.getLogger(__name__)

# no report signed yet: a preliminary report answers the clinic
UNREPORTED_STATUSES = (STATUS_RECEIVING, STATUS_READY, STATUS_CLAIMED, STATUS_DRAFT)
MAX_PER_SCAN = 500


def overdue_filter(now: datetime) -> ColumnElement[bool]:
    """Studies past their deadline with no signed report."""
    return and_(
        Study.status.in_(UNREPORTED_STATUSES),
        Study.deadline_at.is_not(None),
        Study.deadline_at <= now,
    )


def overdue_studies(*, session: Session, site_id: int | None, now: datetime) -> list[Study]:
    """A site's (None: every site's) overdue studies, the longest overdue first."""
    stmt = select(Study).where(overdue_filter(now)).options(joinedload(Study.site))
    if site_id is not None:
        stmt = stmt.where(Study.site_id == site_id)
    return list(session.scalars(stmt.order_by(Study.deadline_at, Study.id).limit(MAX_PER_SCAN)))


def scan(*, session: Session, now: datetime) -> list[Event]:
    """Publish ``study_overdue`` once for every study that has just become overdue."""
    candidates = session.scalars(
        select(Study)
        .where(overdue_filter(now), Study.overdue_at.is_(None))
        .options(joinedload(Study.site))
        .order_by(Study.deadline_at, Study.id)
        .limit(MAX_PER_SCAN)
    ).all()
    published = []
    for study in candidates:
        marked = session.execute(
            update(Study)
            .where(Study.id == study.id, Study.overdue_at.is_(None), overdue_filter(now))
            .values(overdue_at=now)
            .returning(Study.id)
            .execution_options(synchronize_session=False)
        ).first()
        if marked is None:
            continue
        study.overdue_at = now
        overdue_seconds = int((now - study.deadline_at).total_seconds()) if study.deadline_at else 0
        published.append(
            publish_study_event(
                session=session,
                kind=KIND_STUDY_OVERDUE,
                study=study,
                site_code=study.site.code,
                now=now,
                extra={"overdue_seconds": overdue_seconds},
            )
        )
        logger.warning(
            "study overdue",
            extra={
                "action": "study_overdue",
                "study_uid": study.study_instance_uid,
                "category": study.category,
            },
        )
    return published


__all__ = ["UNREPORTED_STATUSES", "overdue_filter", "overdue_studies", "scan"]
