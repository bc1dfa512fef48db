"""Claims and their leases: who reads which study.

A claim is one conditional ``UPDATE``: it succeeds only while nobody else holds an unexpired
lease, so two readers can never both hold a study. ``claim_next`` picks the most urgent free
study with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and a conditional update plus row count
on SQLite (whose single writer lock serialises the updates).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import ColumnElement, and_, case, or_, select, true, update
from sqlalchemy.orm import Session, joinedload

from worklist.errors import (
    ClaimConflict,
    NotAReader,
    NotClaimable,
    NotClaimHolder,
    StudyNotFound,
    WorklistError,
)
from worklist.events import KIND_CLAIM_EXPIRING, KIND_STUDY_RELEASED, publish_study_event
from worklist.models import (
    ROLE_ADMIN,
    STATUS_CANCELLED,
    STATUS_CLAIMED,
    STATUS_DRAFT,
    STATUS_PRELIMINARY,
    STATUS_READY,
    STATUS_RECEIVING,
    Study,
    User,
)
from worklist.settings import (
    DEFAULT_LEASE,
    DEFAULT_STABLE_SECONDS,
)
from worklist.visibility import TERMINAL_STATUSES, require_reader

logger = logging.getLogger(__name__)

_SQLITE_CANDIDATES = 16
# a claim's holder is warned this long before the lease runs out
CLAIM_WARNING = timedelta(minutes=2)


def _load(session: Session, study_id: int) -> Study:
    return session.scalars(
        select(Study)
        .where(Study.id == study_id)
        .options(joinedload(Study.site), joinedload(Study.claimed_by))
        .execution_options(populate_existing=True)
    ).one()


def _claim_values(reader: User, now: datetime, lease: timedelta) -> dict[str, Any]:
    return {
        "claimed_by_id": reader.id,
        "claimed_at": now,
        "claim_expires_at": now + lease,
        "claim_warned_at": None,
        "claim_expired_by_id": None,
        "claim_expired_at": None,
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
    require_reader(reader)
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
    require_reader(reader)
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


def warn_expiring_claims(
    *, session: Session, now: datetime, ahead: timedelta = CLAIM_WARNING
) -> int:
    """Tell each holder whose claim runs out within ``ahead`` (a ``claim_expiring`` event
    naming them, once per lease: renewing or claiming again re-arms it)."""
    rows = session.execute(
        update(Study)
        .where(
            Study.claimed_by_id.is_not(None),
            Study.claim_expires_at >= now,
            Study.claim_expires_at <= now + ahead,
            Study.claim_warned_at.is_(None),
            Study.status.not_in(TERMINAL_STATUSES),
        )
        .values(claim_warned_at=now)
        .returning(Study.id)
        .execution_options(synchronize_session=False)
    ).all()
    for (study_id,) in rows:
        study = _load(session, study_id)
        assert study.claimed_by is not None and study.claim_expires_at is not None
        publish_study_event(
            session=session,
            kind=KIND_CLAIM_EXPIRING,
            study=study,
            site_code=study.site.code,
            now=now,
            extra={
                "by": study.claimed_by.username,
                "expires_at": study.claim_expires_at.isoformat(),
                "seconds_left": int((study.claim_expires_at - now).total_seconds()),
            },
        )
    return len(rows)


def expire_claims(
    *, session: Session, now: datetime, stable_seconds: int = DEFAULT_STABLE_SECONDS
) -> int:
    """Clear claims whose lease ran out; their studies wait for a reader again (each with a
    ``study_released`` event naming the former holder, who stays on the study as
    ``claim_expired_by`` for every reader to see until someone claims it)."""
    rows = session.execute(
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
            claim_warned_at=None,
            claim_expired_by_id=Study.claimed_by_id,
            claim_expired_at=now,
            status=_unclaimed_status(now, stable_seconds),
        )
        .returning(Study.id)
        .execution_options(synchronize_session="fetch")
    ).all()
    ids = [row.id for row in rows]
    for study_id in ids:  # readers' pages learn the study is free again, and whose it was
        study = _load(session, study_id)
        holder = study.claim_expired_by.username if study.claim_expired_by else None
        publish_study_event(
            session=session,
            kind=KIND_STUDY_RELEASED,
            study=study,
            site_code=study.site.code,
            now=now,
            extra={"reason": "lease expired", "by": holder},
        )
    if ids:
        logger.info("claims expired", extra={"action": "claims_expired", "count": len(ids)})
    return len(ids)


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
    require_reader(reader)
    row = session.execute(
        update(Study)
        .where(
            Study.study_instance_uid == study_uid,
            Study.claimed_by_id == reader.id,
            Study.status.not_in(TERMINAL_STATUSES),
        )
        .values(claim_expires_at=now + lease, claim_warned_at=None)
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
    require_reader(assignee)
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
    "assign_study",
    "cancel_study",
    "claim_next",
    "claim_study",
    "expire_claims",
    "release_study",
    "renew_claim",
    "warn_expiring_claims",
]
