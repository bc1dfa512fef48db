"""Deadlines and escalation: a study nobody has claimed by half its read deadline escalates
(level 1), an overdue one escalates again (level 2). A study whose report is signed (a
preliminary report met the read deadline) no longer escalates, whether claimed or not.

Each level is raised once: the level is kept on the study row and raised by a conditional
``UPDATE ... WHERE escalation_level < n``, so two housekeeping threads (or API replicas)
scanning at the same moment publish one event per level, not two. Claimed studies do not
escalate; one whose claim is released or expires escalates on the next scan if it is late.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session, joinedload

from worklist.events import KIND_ESCALATION, publish_study_event
from worklist.models import STATUS_PRELIMINARY, Event, Study
from worklist.visibility import TERMINAL_STATUSES

logger = logging.getLogger(__name__)

LEVEL_HALF = 1
LEVEL_OVERDUE = 2
MAX_PER_SCAN = 500


def _unclaimed(now: datetime) -> ColumnElement[bool]:
    return or_(Study.claimed_by_id.is_(None), Study.claim_expires_at < now)


def due_level(study: Study, now: datetime) -> int:
    """The escalation level ``study`` has reached at ``now`` (0, 1 or 2)."""
    if study.deadline_at is None:
        return 0
    if now >= study.deadline_at:
        return LEVEL_OVERDUE
    half = study.received_at + (study.deadline_at - study.received_at) / 2
    return LEVEL_HALF if now >= half else 0


def scan(*, session: Session, now: datetime) -> list[Event]:
    """Escalate every unclaimed open study whose level is due; the published events."""
    candidates = session.scalars(
        select(Study)
        .where(
            Study.status.not_in((*TERMINAL_STATUSES, STATUS_PRELIMINARY)),
            Study.deadline_at.is_not(None),
            Study.escalation_level < LEVEL_OVERDUE,
            _unclaimed(now),
        )
        .options(joinedload(Study.site))
        .order_by(Study.deadline_at, Study.id)
        .limit(MAX_PER_SCAN)
    ).all()
    published: list[Event] = []
    for study in candidates:
        level = due_level(study, now)
        if level <= study.escalation_level:
            continue
        # only one scanner raises a given level
        raised = session.execute(
            update(Study)
            .where(
                and_(
                    Study.id == study.id,
                    Study.escalation_level < level,
                    _unclaimed(now),
                )
            )
            .values(escalation_level=level)
            .returning(Study.id)
            .execution_options(synchronize_session=False)
        ).first()
        if raised is None:
            continue
        study.escalation_level = level
        remaining = (study.deadline_at - now).total_seconds() if study.deadline_at else 0.0
        event = publish_study_event(
            session=session,
            kind=KIND_ESCALATION,
            study=study,
            site_code=study.site.code,
            now=now,
            extra={
                "level": level,
                "reason": "overdue" if level == LEVEL_OVERDUE else "unclaimed at half deadline",
                "time_left_seconds": int(remaining),
            },
        )
        published.append(event)
        logger.warning(
            "study escalated",
            extra={
                "action": "study_escalated",
                "study_uid": study.study_instance_uid,
                "level": level,
                "category": study.category,
            },
        )
    return published


__all__ = ["LEVEL_HALF", "LEVEL_OVERDUE", "due_level", "scan"]
