"""Knowing a study is complete: quiet for the stable age (Orthanc's "stable study"), or
the modality said so (MPPS COMPLETED with the number of instances it made)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from worklist.errors import StudyNotFound
from worklist.models import STATUS_READY, STATUS_RECEIVING, Study

logger = logging.getLogger(__name__)


def mark_stable_studies(*, session: Session, now: datetime, stable_seconds: int) -> list[str]:
    """Studies quiet for ``stable_seconds`` go from 'receiving' to 'ready'; their UIDs."""
    cutoff = now - timedelta(seconds=stable_seconds)
    uids = session.scalars(
        update(Study)
        .where(Study.status == STATUS_RECEIVING, Study.last_instance_at <= cutoff)
        .values(status=STATUS_READY)
        .returning(Study.study_instance_uid)
        .execution_options(synchronize_session="fetch")
    ).all()
    session.flush()
    for uid in uids:
        logger.info("study stable", extra={"action": "study_stable", "study_uid": uid})
    return list(uids)


@dataclass
class CompletionOutcome:
    """What ``mark_study_complete`` found: ``ready`` once the study holds every expected
    instance (whether this call or an earlier one made it so)."""

    study_uid: str
    status: str
    num_instances: int
    expected_instances: int
    ready: bool
    changed: bool


def mark_study_complete(
    *,
    session: Session,
    study_uid: str,
    expected_instances: int,
    now: datetime,
    site_code: str | None = None,
) -> CompletionOutcome:
    """The modality says the study is complete (MPPS COMPLETED) with ``expected_instances``:
    'receiving' -> 'ready' when the study holds at least that many. Idempotent; a study past
    'receiving' (ready, claimed, reported) is left as it is.

    Raises ``StudyNotFound`` (also for a study of another site than ``site_code``: the caller
    must not learn it exists).
    """
    study = session.scalars(
        select(Study)
        .where(Study.study_instance_uid == study_uid)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if study is None or (site_code is not None and study.site.code != site_code):
        raise StudyNotFound(f"no study {study_uid}")
    changed = False
    if study.status == STATUS_RECEIVING and study.num_instances >= expected_instances:
        study.status = STATUS_READY
        changed = True
        session.flush()
        logger.info(
            "study complete",
            extra={
                "action": "study_complete",
                "study_uid": study_uid,
                "expected": expected_instances,
                "num_instances": study.num_instances,
            },
        )
    return CompletionOutcome(
        study_uid=study_uid,
        status=study.status,
        num_instances=study.num_instances,
        expected_instances=expected_instances,
        ready=study.num_instances >= expected_instances,
        changed=changed,
    )


__all__ = ["CompletionOutcome", "mark_stable_studies", "mark_study_complete"]
