"""A reader's change of a study's triage (urgent or routine, with a reason)."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from worklist.errors import (
    NotClaimable,
    StudyNotFound,
)
from worklist.models import (
    PRIORITY_ROUTINE,
    PRIORITY_STAT,
    ROLE_CLINIC,
    Study,
    User,
)
from worklist.settings import (
    DEFAULT_DEADLINES,
    Deadlines,
)
from worklist.triage import Reason
from worklist.visibility import TERMINAL_STATUSES, require_reader, visible_studies_filter

logger = logging.getLogger(__name__)


def override_triage(
    *,
    session: Session,
    study_uid: str,
    user: User,
    priority: str,
    category: str | None,
    reason: str,
    now: datetime,
    deadlines: Deadlines = DEFAULT_DEADLINES,
) -> Study:
    """A person flags (or downgrades) a study; automatic triage then leaves it alone.

    Readers may do either; a clinic user may only flag (``stat``) a study of its own site
    (another site's study is ``StudyNotFound``). The escalation level starts again from 0
    against the new deadline.
    """
    if user.role == ROLE_CLINIC and user.is_active and priority == PRIORITY_STAT:
        pass  # visibility below limits a clinic to its own site
    else:
        require_reader(user)
    if priority not in (PRIORITY_STAT, PRIORITY_ROUTINE):
        raise ValueError(f"unknown priority {priority!r}")
    study = session.scalars(
        select(Study)
        .where(Study.study_instance_uid == study_uid, visible_studies_filter(user))
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if study is None:
        raise StudyNotFound()
    if study.status in TERMINAL_STATUSES:
        raise NotClaimable(f"the study is {study.status}; its triage can no longer change")
    stat = priority == PRIORITY_STAT
    study.priority = priority
    study.priority_rank = 0 if stat else 1
    study.category = category if stat else None
    who = user.display_name or user.username
    set_by = Reason("set_by", category=study.category, by=who, note=reason[:500])
    study.triage_reasons = [set_by.to_json()]
    study.triage_override_by_id = user.id
    study.triage_override_reason = reason
    study.deadline_at = study.received_at + deadlines.for_category(study.category)
    study.escalation_level = 0
    study.overdue_at = None
    session.flush()
    logger.info(
        "triage overridden",
        extra={
            "action": "triage_overridden",
            "study_uid": study_uid,
            "user_id": user.id,
            "priority": priority,
            "category": study.category,
        },
    )
    return study


__all__ = ["override_triage"]
