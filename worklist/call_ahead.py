"""Call-ahead: a clinic announces an urgent patient before (or while) the scan is made.

The announcement names the patient (ID and/or name), what is suspected (stroke or chest
pain), when the symptoms began and a note. Readers see it at once (a ``call_ahead`` event and
a pending row). The first study of that patient at that site that arrives while the
announcement is pending is urgent from its first instance: ``worklist.ingest`` calls
``match_arrival`` when it creates a study. A study that had already started arriving when
the call came (the scan was under way) is made urgent by ``announce`` itself.

A match is the same patient ID (when both sides have one), else the same name (DICOM
person-name components joined, case and spacing ignored). An announcement is pending until
it matches a study, is cancelled, or expires (``PENDING_HOURS``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.orm import Session, joinedload

from worklist.errors import StudyNotFound, UnknownSite, WorklistError
from worklist.events import KIND_CALL_AHEAD, KIND_STUDY_URGENT, publish, publish_study_event
from worklist.models import (
    CATEGORY_CHEST_PAIN,
    CATEGORY_STROKE,
    PRIORITY_STAT,
    ROLE_CLINIC,
    CallAhead,
    Site,
    Study,
    User,
)
from worklist.settings import DEFAULT_DEADLINES, Deadlines
from worklist.triage import Reason
from worklist.visibility import READER_ROLES, TERMINAL_STATUSES

logger = logging.getLogger(__name__)

CATEGORIES = (CATEGORY_STROKE, CATEGORY_CHEST_PAIN)
PENDING_HOURS = 6
# a study that began arriving this long before the call can still be the one announced
RECENT_STUDY = timedelta(hours=2)
CLOCK_SKEW = timedelta(minutes=5)


class InvalidCallAhead(WorklistError):
    """The call-ahead needs the patient (ID or name) and a category, stroke or chest pain."""


class CallAheadNotAllowed(WorklistError):
    """Only the site's clinic staff, radiologists and admins announce patients."""


def patient_key(name: str) -> str:
    """A person name compared loosely: components joined, case and spaces ignored."""
    return "".join(name.replace("^", " ").replace("=", " ").split()).casefold()


def _matches(call: CallAhead, study: Study) -> bool:
    if call.patient_id.strip() and study.patient_id.strip():
        return call.patient_id.strip().casefold() == study.patient_id.strip().casefold()
    wanted = patient_key(call.patient_name)
    return bool(wanted) and wanted in {
        patient_key(group) for group in [study.patient_name, *study.patient_name.split("=")]
    }


def reason_for(call: CallAhead) -> Reason:
    return Reason("call_ahead", category=call.category, note=call.note.strip() or None)


def _make_urgent(study: Study, call: CallAhead, deadlines: Deadlines) -> bool:
    """Flag ``study`` as the call says; True when it was not urgent before."""
    was_stat = study.priority == PRIORITY_STAT
    if study.triage_override_by_id is not None and not was_stat:
        return False  # a person downgraded it: they decide
    study.priority = PRIORITY_STAT
    study.priority_rank = 0
    study.category = study.category or call.category
    before = [Reason.from_json(r) for r in study.triage_reasons or []]
    reasons = [reason_for(call), *(r for r in before if r.code != "call_ahead")]
    study.triage_reasons = [r.to_json() for r in reasons[:20]]
    study.deadline_at = study.received_at + deadlines.for_category(study.category)
    return not was_stat


def _pending(now: datetime) -> ColumnElement[bool]:
    return and_(
        CallAhead.study_id.is_(None),
        CallAhead.cancelled_at.is_(None),
        CallAhead.expires_at > now,
    )


def match_arrival(
    *, session: Session, study: Study, now: datetime, deadlines: Deadlines = DEFAULT_DEADLINES
) -> CallAhead | None:
    """Link the oldest pending call-ahead for ``study``'s patient at its site to it and make
    it urgent (the caller publishes ``study_urgent``); None when no call matches."""
    calls = session.scalars(
        select(CallAhead)
        .where(CallAhead.site_id == study.site_id, _pending(now))
        .order_by(CallAhead.created_at, CallAhead.id)
    ).all()
    for call in calls:
        if not _matches(call, study):
            continue
        linked = session.execute(
            update(CallAhead)
            .where(CallAhead.id == call.id, CallAhead.study_id.is_(None))
            .values(study_id=study.id, matched_at=now)
            .returning(CallAhead.id)
            .execution_options(synchronize_session=False)
        ).first()
        if linked is None:
            continue  # another request took it
        call.study_id, call.matched_at = study.id, now
        _make_urgent(study, call, deadlines)
        logger.info(
            "call-ahead matched",
            extra={
                "action": "call_ahead_matched",
                "call_ahead_id": call.id,
                "study_uid": study.study_instance_uid,
            },
        )
        return call
    return None


def _site_for(session: Session, user: User, site_code: str | None) -> Site:
    if user.role == ROLE_CLINIC and user.is_active:
        site = session.get(Site, user.site_id) if user.site_id is not None else None
        if site is None or (site_code and site_code != site.code):
            raise CallAheadNotAllowed("A clinic announces patients of its own site only")
        return site
    if user.role not in READER_ROLES or not user.is_active:
        raise CallAheadNotAllowed()
    if not site_code:
        raise InvalidCallAhead("Say which site the patient is at")
    site = session.scalars(select(Site).where(Site.code == site_code)).one_or_none()
    if site is None:
        raise UnknownSite(f"no site {site_code!r}")
    return site


def announce(
    *,
    session: Session,
    user: User,
    site_code: str | None,
    patient_id: str,
    patient_name: str,
    category: str,
    onset_at: datetime | None,
    note: str,
    now: datetime,
    deadlines: Deadlines = DEFAULT_DEADLINES,
) -> CallAhead:
    """Record a call-ahead and tell the readers; a study of the patient already arriving at
    the site is made urgent at once. Raises ``InvalidCallAhead``, ``CallAheadNotAllowed``,
    ``UnknownSite``."""
    site = _site_for(session, user, site_code)
    patient_id, patient_name, note = patient_id.strip(), patient_name.strip(), note.strip()
    if category not in CATEGORIES:
        raise InvalidCallAhead("The category must be stroke or chest_pain")
    if not (patient_id or patient_key(patient_name)):
        raise InvalidCallAhead("Say which patient: a patient ID or a name")
    if onset_at is not None:
        if onset_at.tzinfo is None:
            raise InvalidCallAhead("The onset time needs a UTC offset")
        if onset_at > now + CLOCK_SKEW:
            raise InvalidCallAhead("The onset time is in the future")
    call = CallAhead(
        site_id=site.id,
        patient_id=patient_id[:64],
        patient_name=patient_name[:200],
        category=category,
        onset_at=onset_at,
        note=note[:1000],
        created_by_id=user.id,
        created_at=now,
        expires_at=now + timedelta(hours=PENDING_HOURS),
    )
    session.add(call)
    session.flush()
    study = _arriving_study(session, call, now)
    if study is not None:
        call.study_id, call.matched_at = study.id, now
        if _make_urgent(study, call, deadlines):
            study.escalation_level = 0
            study.overdue_at = None
            session.flush()
            publish_study_event(
                session=session,
                kind=KIND_STUDY_URGENT,
                study=study,
                site_code=site.code,
                now=now,
            )
    session.flush()
    publish(
        session=session,
        kind=KIND_CALL_AHEAD,
        study_uid=study.study_instance_uid if study is not None else None,
        site_code=site.code,
        payload={
            "call_ahead_id": call.id,
            "category": category,
            "onset_at": onset_at.isoformat() if onset_at else None,
            "matched": study is not None,
        },
        now=now,
    )
    logger.info(
        "call-ahead announced",
        extra={
            "action": "call_ahead_announced",
            "call_ahead_id": call.id,
            "site": site.code,
            "category": category,
            "study_uid": study.study_instance_uid if study is not None else None,
        },
    )
    return call


def _arriving_study(session: Session, call: CallAhead, now: datetime) -> Study | None:
    """The patient's study at the site that began arriving recently and is not read yet."""
    candidates = session.scalars(
        select(Study)
        .where(
            Study.site_id == call.site_id,
            Study.status.not_in(TERMINAL_STATUSES),
            Study.received_at >= now - RECENT_STUDY,
            Study.id.not_in(select(CallAhead.study_id).where(CallAhead.study_id.is_not(None))),
        )
        .order_by(Study.received_at.desc(), Study.id.desc())
        .limit(50)
    ).all()
    return next((s for s in candidates if _matches(call, s)), None)


def cancel(*, session: Session, user: User, call_ahead_id: int, now: datetime) -> CallAhead:
    """Withdraw a pending call-ahead (the site's clinic, or a reader)."""
    call = session.get(CallAhead, call_ahead_id)
    if call is None or not visible_to(call, user):
        raise StudyNotFound("No such call-ahead")
    if call.cancelled_at is None and call.study_id is None:
        call.cancelled_at = now
        call.cancelled_by_id = user.id
        session.flush()
    return call


def visible_to(call: CallAhead, user: User) -> bool:
    if not user.is_active:
        return False
    if user.role in READER_ROLES:
        return True
    return user.role == ROLE_CLINIC and user.site_id == call.site_id


def list_call_aheads(
    *, session: Session, viewer: User, now: datetime, pending_only: bool = True, limit: int = 100
) -> Sequence[CallAhead]:
    """Call-aheads the viewer may see, newest first: the pending ones, or also those of the
    last day (matched, cancelled or expired)."""
    stmt = select(CallAhead).options(
        joinedload(CallAhead.site), joinedload(CallAhead.created_by), joinedload(CallAhead.study)
    )
    if viewer.role == ROLE_CLINIC:
        stmt = stmt.where(CallAhead.site_id == viewer.site_id)
    elif viewer.role not in READER_ROLES:
        return []
    if pending_only:
        stmt = stmt.where(_pending(now))
    else:
        stmt = stmt.where(CallAhead.created_at >= now - timedelta(days=1))
    return session.scalars(stmt.order_by(CallAhead.created_at.desc()).limit(limit)).all()


__all__ = [
    "CATEGORIES",
    "CallAheadNotAllowed",
    "InvalidCallAhead",
    "announce",
    "cancel",
    "list_call_aheads",
    "match_arrival",
    "patient_key",
    "visible_to",
]
