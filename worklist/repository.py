"""Reading work: who sees which study, the ordered worklist, claims and their leases.

A claim is one conditional ``UPDATE``: it succeeds only while nobody else holds an unexpired
lease, so two readers can never both hold a study. ``claim_next`` picks the most urgent free
study with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and a conditional update plus row count
on SQLite (whose single writer lock serialises the updates).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, false, or_, select, true, update
from sqlalchemy.orm import Session, joinedload, selectinload

from worklist.errors import (
    ClaimConflict,
    NotAReader,
    NotClaimable,
    NotClaimHolder,
    StudyNotFound,
)
from worklist.models import (
    PRIORITY_ROUTINE,
    PRIORITY_STAT,
    ROLE_ADMIN,
    ROLE_CLINIC,
    ROLE_RADIOLOGIST,
    STATUS_AMENDED,
    STATUS_CANCELLED,
    STATUS_CLAIMED,
    STATUS_DRAFT,
    STATUS_FINAL,
    STATUS_PRELIMINARY,
    STATUS_READY,
    STATUS_RECEIVING,
    Site,
    Study,
    User,
)
from worklist.settings import (
    DEFAULT_DEADLINES,
    DEFAULT_LEASE,
    DEFAULT_STABLE_SECONDS,
    Deadlines,
)

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = (STATUS_CANCELLED, STATUS_FINAL, STATUS_AMENDED)
READER_ROLES = (ROLE_RADIOLOGIST, ROLE_ADMIN)
_SQLITE_CANDIDATES = 16


def visible_studies_filter(viewer: User) -> ColumnElement[bool]:
    """Clinic users see their own site; radiologists and admins all; anyone else nothing."""
    if not viewer.is_active:
        return false()
    if viewer.role in READER_ROLES:
        return true()
    if viewer.role == ROLE_CLINIC and viewer.site_id is not None:
        return Study.site_id == viewer.site_id
    return false()


def list_worklist(
    *,
    session: Session,
    viewer: User,
    now: datetime,
    site_code: str | None = None,
    modality: str | None = None,
    category: str | None = None,
    status: str | Sequence[str] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Study]:
    """Visible studies, most urgent then oldest first.

    Cancelled, final and amended studies are left out unless ``status`` asks for them.
    """
    stmt = select(Study).where(visible_studies_filter(viewer))
    if status is None:
        stmt = stmt.where(Study.status.not_in(TERMINAL_STATUSES))
    elif isinstance(status, str):
        stmt = stmt.where(Study.status == status)
    else:
        stmt = stmt.where(Study.status.in_(list(status)))
    if site_code is not None:
        stmt = stmt.where(Study.site_id.in_(select(Site.id).where(Site.code == site_code)))
    if modality:
        stmt = stmt.where(
            or_(
                Study.modalities == modality,
                Study.modalities.startswith(modality + "\\", autoescape=True),
                Study.modalities.endswith("\\" + modality, autoescape=True),
                Study.modalities.contains("\\" + modality + "\\", autoescape=True),
            )
        )
    if category is not None:
        stmt = stmt.where(Study.category == category)
    stmt = (
        stmt.options(joinedload(Study.site), joinedload(Study.claimed_by))
        .order_by(Study.priority_rank, Study.received_at, Study.id)
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(stmt))


def get_study(*, session: Session, study_uid: str, viewer: User) -> Study | None:
    """The study with its series, site, claim holder and report; None when not visible."""
    return session.scalars(
        select(Study)
        .where(Study.study_instance_uid == study_uid, visible_studies_filter(viewer))
        .options(
            joinedload(Study.site),
            joinedload(Study.claimed_by),
            joinedload(Study.report),
            selectinload(Study.series),
        )
    ).one_or_none()


def _load(session: Session, study_id: int) -> Study:
    return session.scalars(
        select(Study)
        .where(Study.id == study_id)
        .options(joinedload(Study.site), joinedload(Study.claimed_by))
        .execution_options(populate_existing=True)
    ).one()


def _require_reader(reader: User) -> None:
    if reader.role not in READER_ROLES or not reader.is_active:
        raise NotAReader()


def _claim_values(reader: User, now: datetime, lease: timedelta) -> dict[str, Any]:
    return {
        "claimed_by_id": reader.id,
        "claimed_at": now,
        "claim_expires_at": now + lease,
        # a draft or preliminary report keeps its status; otherwise the study is 'claimed'
        "status": case(
            (Study.status.in_((STATUS_DRAFT, STATUS_PRELIMINARY)), Study.status),
            else_=STATUS_CLAIMED,
        ),
    }


def _unclaimed_status(now: datetime, stable_seconds: int) -> Any:
    """'claimed' goes back to 'ready' (or 'receiving' if images arrived lately)."""
    cutoff = now - timedelta(seconds=stable_seconds)
    return case(
        (
            Study.status == STATUS_CLAIMED,
            case((Study.last_instance_at <= cutoff, STATUS_READY), else_=STATUS_RECEIVING),
        ),
        else_=Study.status,
    )


def claim_study(
    *,
    session: Session,
    study_uid: str,
    reader: User,
    now: datetime,
    lease: timedelta = DEFAULT_LEASE,
) -> Study:
    """Claim a study for ``reader`` (re-claiming your own extends the lease).

    Raises ``StudyNotFound``, ``NotClaimable`` (cancelled/final/amended), ``ClaimConflict``
    (someone else holds an unexpired claim), ``NotAReader``.
    """
    _require_reader(reader)
    row = session.execute(
        update(Study)
        .where(
            Study.study_instance_uid == study_uid,
            Study.status.not_in(TERMINAL_STATUSES),
            or_(
                Study.claimed_by_id.is_(None),
                Study.claimed_by_id == reader.id,
                Study.claim_expires_at < now,
            ),
        )
        .values(**_claim_values(reader, now, lease))
        .returning(Study.id)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        current = session.execute(
            select(Study.status).where(Study.study_instance_uid == study_uid)
        ).first()
        if current is None:
            raise StudyNotFound()
        if current.status in TERMINAL_STATUSES:
            raise NotClaimable()
        raise ClaimConflict()
    study = _load(session, row.id)
    logger.info(
        "study claimed",
        extra={"action": "study_claimed", "study_uid": study_uid, "user_id": reader.id},
    )
    return study


def release_study(
    *,
    session: Session,
    study_uid: str,
    reader: User,
    now: datetime,
    stable_seconds: int = DEFAULT_STABLE_SECONDS,
) -> Study:
    """Give a claim back. Only its holder may, or an admin. Raises ``StudyNotFound``,
    ``NotClaimHolder``."""
    holder = true() if reader.role == ROLE_ADMIN else Study.claimed_by_id == reader.id
    row = session.execute(
        update(Study)
        .where(Study.study_instance_uid == study_uid, Study.claimed_by_id.is_not(None), holder)
        .values(
            claimed_by_id=None,
            claimed_at=None,
            claim_expires_at=None,
            status=_unclaimed_status(now, stable_seconds),
        )
        .returning(Study.id)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        exists = session.execute(
            select(Study.id).where(Study.study_instance_uid == study_uid)
        ).first()
        if exists is None:
            raise StudyNotFound()
        raise NotClaimHolder()
    study = _load(session, row.id)
    logger.info(
        "study released",
        extra={"action": "study_released", "study_uid": study_uid, "user_id": reader.id},
    )
    return study


def _next_candidates(now: datetime) -> ColumnElement[bool]:
    return and_(
        Study.status.not_in(TERMINAL_STATUSES),
        # a routine study still receiving images is not handed out yet; urgent ones are
        or_(Study.status != STATUS_RECEIVING, Study.priority_rank == 0),
        or_(Study.claimed_by_id.is_(None), Study.claim_expires_at < now),
    )


_QUEUE_ORDER = (Study.priority_rank, Study.received_at, Study.id)


def claim_next(
    *,
    session: Session,
    reader: User,
    now: datetime,
    lease: timedelta = DEFAULT_LEASE,
) -> Study | None:
    """Claim the most urgent, then oldest, free study; None when there is none."""
    _require_reader(reader)
    values = _claim_values(reader, now, lease)
    study_id: int | None = None
    if session.get_bind().dialect.name == "postgresql":
        pick = (
            select(Study.id)
            .where(_next_candidates(now))
            .order_by(*_QUEUE_ORDER)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        study_id = session.scalars(
            update(Study)
            .where(Study.id == pick)
            .values(**values)
            .returning(Study.id)
            .execution_options(synchronize_session=False)
        ).first()
    else:
        while study_id is None:
            ids = session.scalars(
                select(Study.id)
                .where(_next_candidates(now))
                .order_by(*_QUEUE_ORDER)
                .limit(_SQLITE_CANDIDATES)
            ).all()
            if not ids:
                break
            for candidate in ids:
                study_id = session.scalars(
                    update(Study)
                    .where(Study.id == candidate, _next_candidates(now))
                    .values(**values)
                    .returning(Study.id)
                    .execution_options(synchronize_session=False)
                ).first()
                if study_id is not None:
                    break
    if study_id is None:
        return None
    study = _load(session, study_id)
    logger.info(
        "study claimed",
        extra={
            "action": "study_claimed",
            "study_uid": study.study_instance_uid,
            "user_id": reader.id,
            "next": True,
        },
    )
    return study


def expire_claims(
    *, session: Session, now: datetime, stable_seconds: int = DEFAULT_STABLE_SECONDS
) -> int:
    """Clear claims whose lease ran out; their studies wait for a reader again."""
    ids = session.scalars(
        update(Study)
        .where(
            Study.claimed_by_id.is_not(None),
            Study.claim_expires_at < now,
            Study.status.not_in(TERMINAL_STATUSES),
        )
        .values(
            claimed_by_id=None,
            claimed_at=None,
            claim_expires_at=None,
            status=_unclaimed_status(now, stable_seconds),
        )
        .returning(Study.id)
        .execution_options(synchronize_session="fetch")
    ).all()
    if ids:
        logger.info("claims expired", extra={"action": "claims_expired", "count": len(ids)})
    return len(ids)


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
    """A person flags (or downgrades) a study; automatic triage then leaves it alone."""
    _require_reader(user)
    if priority not in (PRIORITY_STAT, PRIORITY_ROUTINE):
        raise ValueError(f"unknown priority {priority!r}")
    study = session.scalars(
        select(Study).where(Study.study_instance_uid == study_uid).with_for_update()
    ).one_or_none()
    if study is None:
        raise StudyNotFound()
    stat = priority == PRIORITY_STAT
    study.priority = priority
    study.priority_rank = 0 if stat else 1
    study.category = category if stat else None
    study.triage_reasons = [f"set by {user.username}: {reason}"[:500]]
    study.triage_override_by_id = user.id
    study.triage_override_reason = reason
    study.deadline_at = study.received_at + deadlines.for_category(study.category)
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


__all__ = [
    "READER_ROLES",
    "TERMINAL_STATUSES",
    "claim_next",
    "claim_study",
    "expire_claims",
    "get_study",
    "list_worklist",
    "override_triage",
    "release_study",
    "visible_studies_filter",
]
