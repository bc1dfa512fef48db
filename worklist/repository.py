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
from typing import Any, NoReturn

from sqlalchemy import ColumnElement, Select, and_, case, false, func, or_, select, true, update
from sqlalchemy.orm import Session, joinedload, selectinload

from worklist.errors import (
    ClaimConflict,
    NotAReader,
    NotClaimable,
    NotClaimHolder,
    StudyNotFound,
    WorklistError,
)
from worklist.events import KIND_STUDY_RELEASED, publish_study_event
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
# count_worklist stops here: an exact total of a huge backlog costs a scan and helps nobody
COUNT_CAP = 10_000


def visible_studies_filter(viewer: User) -> ColumnElement[bool]:
    """Clinic users see their own site; radiologists and admins all; anyone else nothing."""
    if not viewer.is_active:
        return false()
    if viewer.role in READER_ROLES:
        return true()
    if viewer.role == ROLE_CLINIC and viewer.site_id is not None:
        return Study.site_id == viewer.site_id
    return false()


def _worklist_query(
    session: Session,
    viewer: User,
    site_code: str | None,
    modality: str | None,
    category: str | None,
    status: str | Sequence[str] | None,
    reader: str | None,
) -> Select[Study]:
    stmt = select(Study).where(visible_studies_filter(viewer))
    if status is None:
        stmt = stmt.where(Study.status.not_in(TERMINAL_STATUSES))
    elif isinstance(status, str):
        stmt = stmt.where(Study.status == status)
    else:
        stmt = stmt.where(Study.status.in_(list(status)))
    # ids looked up first (not sub-selects) so PostgreSQL walks a queue index in order
    if site_code is not None:
        site_id = session.scalar(select(Site.id).where(Site.code == site_code))
        stmt = stmt.where(Study.site_id == site_id if site_id is not None else false())
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
    if reader is not None:
        reader_id = session.scalar(select(User.id).where(User.username == reader))
        stmt = stmt.where(Study.claimed_by_id == reader_id if reader_id is not None else false())
    return stmt


def list_worklist(
    *,
    session: Session,
    viewer: User,
    now: datetime,
    site_code: str | None = None,
    modality: str | None = None,
    category: str | None = None,
    status: str | Sequence[str] | None = None,
    reader: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Study]:
    """Visible studies, most urgent then oldest first.

    Cancelled, final and amended studies are left out unless ``status`` asks for them.
    ``reader`` is the username holding the claim.
    """
    stmt = _worklist_query(session, viewer, site_code, modality, category, status, reader)
    stmt = (
        stmt.options(joinedload(Study.site), joinedload(Study.claimed_by))
        .order_by(Study.priority_rank, Study.received_at, Study.id)
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(stmt))


def count_worklist(
    *,
    session: Session,
    viewer: User,
    site_code: str | None = None,
    modality: str | None = None,
    category: str | None = None,
    status: str | Sequence[str] | None = None,
    reader: str | None = None,
    cap: int | None = COUNT_CAP,
) -> int:
    """How many studies ``list_worklist`` would page through with the same filters, counting
    at most ``cap`` (a backlog beyond it reads as ``cap``; None counts everything)."""
    stmt = _worklist_query(session, viewer, site_code, modality, category, status, reader)
    ids = stmt.with_only_columns(Study.id).order_by(None)
    if cap is not None:
        ids = ids.limit(cap)
    return int(session.scalar(select(func.count()).select_from(ids.subquery())) or 0)


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


def _raise_why_missed(session: Session, study_uid: str, *, otherwise: WorklistError) -> NoReturn:
    """A conditional UPDATE on a study matched nothing: say why (no such study, a study
    already final or cancelled, or ``otherwise``)."""
    current = session.execute(
        select(Study.status).where(Study.study_instance_uid == study_uid)
    ).first()
    if current is None:
        raise StudyNotFound()
    if current.status in TERMINAL_STATUSES:
        raise NotClaimable()
    raise otherwise


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
        _raise_why_missed(session, study_uid, otherwise=ClaimConflict())
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
    """Clear claims whose lease ran out; their studies wait for a reader again (each with a
    ``study_released`` event)."""
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
    for study_id in ids:  # readers' pages learn the study is free again
        study = _load(session, study_id)
        publish_study_event(
            session=session,
            kind=KIND_STUDY_RELEASED,
            study=study,
            site_code=study.site.code,
            now=now,
            extra={"reason": "lease expired"},
        )
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
    """A person flags (or downgrades) a study; automatic triage then leaves it alone.

    Readers may do either; a clinic user may only flag (``stat``) a study of its own site
    (another site's study is ``StudyNotFound``). The escalation level starts again from 0
    against the new deadline.
    """
    if user.role == ROLE_CLINIC and user.is_active and priority == PRIORITY_STAT:
        pass  # visibility below limits a clinic to its own site
    else:
        _require_reader(user)
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
    study.triage_reasons = [f"set by {user.username}: {reason}"[:500]]
    study.triage_override_by_id = user.id
    study.triage_override_reason = reason
    study.deadline_at = study.received_at + deadlines.for_category(study.category)
    study.escalation_level = 0
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


def renew_claim(
    *,
    session: Session,
    study_uid: str,
    reader: User,
    now: datetime,
    lease: timedelta = DEFAULT_LEASE,
) -> Study:
    """Extend the holder's lease to ``now + lease`` (the reader is still working).

    A lapsed lease that nobody else has taken yet can still be renewed. Raises
    ``StudyNotFound``, ``NotClaimable`` (cancelled/final/amended), ``NotClaimHolder``.
    """
    _require_reader(reader)
    row = session.execute(
        update(Study)
        .where(
            Study.study_instance_uid == study_uid,
            Study.claimed_by_id == reader.id,
            Study.status.not_in(TERMINAL_STATUSES),
        )
        .values(claim_expires_at=now + lease)
        .returning(Study.id)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        _raise_why_missed(
            session, study_uid, otherwise=NotClaimHolder("you do not hold a claim on this study")
        )
    return _load(session, row.id)


def assign_study(
    *,
    session: Session,
    study_uid: str,
    assignee: User,
    by: User,
    now: datetime,
    lease: timedelta = DEFAULT_LEASE,
) -> tuple[Study, int | None]:
    """An admin hands a study to ``assignee``, taking it from whoever held it.

    Returns the study and the previous holder's user id. Raises ``NotAReader`` (``by`` is
    not an admin, or ``assignee`` cannot read), ``StudyNotFound``, ``NotClaimable``.
    """
    if by.role != ROLE_ADMIN or not by.is_active:
        raise NotAReader("only an admin can reassign a study")
    _require_reader(assignee)
    current = session.execute(
        select(Study.id, Study.status, Study.claimed_by_id)
        .where(Study.study_instance_uid == study_uid)
        .with_for_update()
    ).first()
    if current is None:
        raise StudyNotFound()
    if current.status in TERMINAL_STATUSES:
        raise NotClaimable()
    session.execute(
        update(Study)
        .where(Study.id == current.id)
        .values(**_claim_values(assignee, now, lease))
        .execution_options(synchronize_session=False)
    )
    study = _load(session, current.id)
    logger.info(
        "study assigned",
        extra={"action": "study_assigned", "study_uid": study_uid, "user_id": assignee.id},
    )
    return study, current.claimed_by_id


def cancel_study(
    *, session: Session, study_uid: str, by: User, reason: str, now: datetime
) -> Study:
    """An admin takes a study off the worklist (wrong patient, duplicate, test send...).

    Raises ``NotAReader`` (not an admin), ``StudyNotFound``, ``NotClaimable`` (already
    cancelled, final or amended).
    """
    if by.role != ROLE_ADMIN or not by.is_active:
        raise NotAReader("only an admin can cancel a study")
    row = session.execute(
        update(Study)
        .where(Study.study_instance_uid == study_uid, Study.status.not_in(TERMINAL_STATUSES))
        .values(
            status=STATUS_CANCELLED,
            cancelled_by_id=by.id,
            cancelled_at=now,
            cancel_reason=reason,
            claimed_by_id=None,
            claimed_at=None,
            claim_expires_at=None,
        )
        .returning(Study.id)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        current = session.execute(
            select(Study.status).where(Study.study_instance_uid == study_uid)
        ).first()
        if current is None:
            raise StudyNotFound()
        raise NotClaimable(f"the study is already {current.status}")
    logger.info("study cancelled", extra={"action": "study_cancelled", "study_uid": study_uid})
    return _load(session, row.id)


__all__ = [
    "COUNT_CAP",
    "READER_ROLES",
    "TERMINAL_STATUSES",
    "assign_study",
    "cancel_study",
    "claim_next",
    "claim_study",
    "count_worklist",
    "expire_claims",
    "get_study",
    "list_worklist",
    "override_triage",
    "release_study",
    "renew_claim",
    "visible_studies_filter",
]
