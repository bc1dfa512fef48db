"""Critical results: an actionable finding and its documented communication.

Following the ACR's practice for communicating actionable findings, each record says what
was found, when it was identified, who was told (name, role, phone), when, by what means,
and whether the receiver read it back. Records are append-only and sit beside the report,
not inside it: a critical finding may be phoned through before the report is written, or
after it is signed, without touching the signed content. They belong to the case: while a
radiologist holds the study's claim, only they or the report's author record them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload

from worklist.errors import StudyNotFound, WorklistError
from worklist.models import (
    CRITICAL_METHODS,
    ROLE_CLINIC,
    ROLE_RADIOLOGIST,
    STATUS_CANCELLED,
    CriticalResult,
    Study,
    User,
)

logger = logging.getLogger(__name__)

# how far ahead of the server clock a reported time may be (workstation clocks drift)
CLOCK_SKEW = timedelta(minutes=5)


class InvalidCriticalResult(WorklistError):
    """The critical result is incomplete or inconsistent."""


class CriticalResultNotAllowed(WorklistError):
    """Only radiologists record critical results, and not on a cancelled study."""


class NotTheCaseReader(WorklistError):
    """Another radiologist holds this study: only the claim holder or the report's author
    records its critical results."""


def record_critical_result(
    *,
    session: Session,
    study: Study,
    recorder: User,
    finding: str,
    identified_at: datetime,
    communicated_to_name: str,
    communicated_to_role: str,
    communicated_to_phone: str,
    communicated_at: datetime,
    method: str,
    read_back_confirmed: bool,
    now: datetime,
) -> CriticalResult:
    """Record one communicated critical result on ``study`` by ``recorder`` at ``now``.

    Raises ``CriticalResultNotAllowed`` (not a radiologist, cancelled study) and
    ``InvalidCriticalResult`` (empty finding or receiver, unknown method, communicated
    before identified, times in the future).
    """
    if recorder.role != ROLE_RADIOLOGIST or not recorder.is_active:
        raise CriticalResultNotAllowed()
    if study.status == STATUS_CANCELLED:
        raise CriticalResultNotAllowed("This study is cancelled")
    _require_case_reader(study, recorder, now)
    finding = finding.strip()
    name = communicated_to_name.strip()
    if not finding:
        raise InvalidCriticalResult("The finding is empty")
    if not name:
        raise InvalidCriticalResult("Say who received the result (communicated_to_name)")
    if method not in CRITICAL_METHODS:
        raise InvalidCriticalResult(f"method must be one of {', '.join(CRITICAL_METHODS)}")
    identified_at = _aware(identified_at)
    communicated_at = _aware(communicated_at)
    if communicated_at < identified_at:
        raise InvalidCriticalResult("communicated_at is before identified_at")
    if communicated_at > now + CLOCK_SKEW:
        raise InvalidCriticalResult("communicated_at is in the future")
    result = CriticalResult(
        study_id=study.id,
        finding=finding,
        identified_at=identified_at,
        communicated_to_name=name,
        communicated_to_role=communicated_to_role.strip(),
        communicated_to_phone=communicated_to_phone.strip(),
        communicated_at=communicated_at,
        method=method,
        read_back_confirmed=read_back_confirmed,
        recorded_by_id=recorder.id,
        recorded_at=now,
    )
    session.add(result)
    session.flush()
    session.refresh(result, attribute_names=["recorded_by"])
    logger.info(
        "critical result recorded",
        extra={
            "action": "critical_result_recorded",
            "study_uid": study.study_instance_uid,
            "user_id": recorder.id,
            "method": method,
            "read_back_confirmed": read_back_confirmed,
        },
    )
    return result


def _require_case_reader(study: Study, recorder: User, now: datetime) -> None:
    """On a study someone holds a live claim on, only the holder or the report's author
    records a critical result (it goes into that report); ``NotTheCaseReader`` otherwise."""
    holder = study.claimed_by
    claimed = holder is not None and (
        study.claim_expires_at is None or _aware(study.claim_expires_at) >= now
    )
    if not claimed or holder is None or holder.id == recorder.id:
        return
    report = study.report
    if report is not None and report.author_id == recorder.id:
        return
    author = f"; the report's author is {report.author.username}" if report is not None else ""
    raise NotTheCaseReader(
        f"{holder.username} holds this study: only the claim holder or the report's author "
        f"records its critical results{author}"
    )


def critical_results_for(
    *, session: Session, study_ids: Sequence[int]
) -> dict[int, list[CriticalResult]]:
    """Each study's critical results (in order of communication), in one query."""
    found: dict[int, list[CriticalResult]] = {sid: [] for sid in study_ids}
    if not study_ids:
        return found
    rows = session.scalars(
        select(CriticalResult)
        .where(CriticalResult.study_id.in_(list(study_ids)))
        .options(joinedload(CriticalResult.recorded_by), joinedload(CriticalResult.acknowledged_by))
        .order_by(CriticalResult.communicated_at, CriticalResult.id)
    )
    for result in rows:
        found[result.study_id].append(result)
    return found


def acknowledge(
    *, session: Session, study_uid: str, result_id: int, user: User, now: datetime
) -> tuple[CriticalResult, Study, bool]:
    """A clinic user of the study's site acknowledges (reads back) a critical result: who
    and when are recorded on it, with ``read_back_confirmed``. The first acknowledgement
    stands (``changed`` False after it). ``StudyNotFound`` for another site's study or an
    unknown result; ``CriticalResultNotAllowed`` for anyone but the site's clinic staff."""
    if user.role != ROLE_CLINIC or not user.is_active:
        raise CriticalResultNotAllowed("Only the site's clinic staff acknowledge a result")
    found = session.execute(
        select(CriticalResult, Study)
        .join(Study, CriticalResult.study_id == Study.id)
        .where(
            CriticalResult.id == result_id,
            Study.study_instance_uid == study_uid,
            Study.site_id == user.site_id,
        )
        .options(joinedload(Study.site))
    ).first()
    if found is None:
        raise StudyNotFound("No such critical result")
    result, study = found
    changed = session.execute(
        update(CriticalResult)
        .where(CriticalResult.id == result.id, CriticalResult.acknowledged_at.is_(None))
        .values(acknowledged_by_id=user.id, acknowledged_at=now, read_back_confirmed=True)
        .returning(CriticalResult.id)
        .execution_options(synchronize_session=False)
    ).first()
    session.refresh(result)
    if changed is not None:
        logger.info(
            "critical result acknowledged",
            extra={
                "action": "critical_result_acknowledged",
                "study_uid": study_uid,
                "user_id": user.id,
            },
        )
    return result, study, changed is not None


def unacknowledged(
    *, session: Session, site_id: int | None, since: datetime
) -> list[tuple[CriticalResult, Study]]:
    """Critical results recorded since ``since`` that no clinic user has acknowledged, of
    one site (None: all), the newest first."""
    stmt = (
        select(CriticalResult, Study)
        .join(Study, CriticalResult.study_id == Study.id)
        .where(
            CriticalResult.acknowledged_at.is_(None),
            CriticalResult.recorded_at >= since,
            Study.status != STATUS_CANCELLED,
        )
        .options(joinedload(CriticalResult.recorded_by), joinedload(Study.site))
        .order_by(CriticalResult.recorded_at.desc(), CriticalResult.id.desc())
        .limit(100)
    )
    if site_id is not None:
        stmt = stmt.where(Study.site_id == site_id)
    return [(r, s) for r, s in session.execute(stmt).all()]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise InvalidCriticalResult("times need a UTC offset (e.g. 2026-01-01T08:00:00+08:00)")
    return value.astimezone(UTC)


__all__ = [
    "CriticalResultNotAllowed",
    "InvalidCriticalResult",
    "NotTheCaseReader",
    "acknowledge",
    "critical_results_for",
    "record_critical_result",
    "unacknowledged",
]
