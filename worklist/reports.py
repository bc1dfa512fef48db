"""Reports: drafts by the claim holder, preliminary and final signatures, a content hash,
and addenda.

A final report is immutable: saving or signing it again raises ``ReportSigned``. The hash
(``worklist.report_hashes``) is sha256 over canonical JSON of what was signed, so a later
change is detectable. Later corrections are addenda (author, time, reason, their own hash
chained to the report's); the report's status becomes 'amended' but its signed content and
hash stay exactly as signed. Any radiologist may add an addendum to a final report (the
original reader may be off shift when the correction is needed); no claim is involved
because nothing is being read.

Stroke and chest-pain reports expect a documented critical result (``worklist.critical``):
signing one final without any requires a reason (``no_critical_result_reason``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, joinedload

from worklist.errors import (
    NoReport,
    NotClaimable,
    NotClaimHolder,
    ReportSigned,
    StudyNotFound,
    WorklistError,
)
from worklist.models import (
    CATEGORY_CHEST_PAIN,
    CATEGORY_STROKE,
    REPORT_AMENDED,
    REPORT_DRAFT,
    REPORT_FINAL,
    REPORT_PRELIMINARY,
    ROLE_CLINIC,
    ROLE_RADIOLOGIST,
    STATUS_AMENDED,
    STATUS_CANCELLED,
    STATUS_DRAFT,
    STATUS_FINAL,
    STATUS_PRELIMINARY,
    CriticalResult,
    Report,
    ReportAddendum,
    Study,
    User,
)
from worklist.report_hashes import addendum_hash, report_content_hash
from worklist.report_templates import unresolved_choices
from worklist.settings import DEFAULT_DEADLINES, DEFAULT_LEASE
from worklist.visibility import TERMINAL_STATUSES, visible_studies_filter

logger = logging.getLogger(__name__)

SignStatus = Literal["preliminary", "final"]
SIGNED_STATUSES = (REPORT_PRELIMINARY, REPORT_FINAL, REPORT_AMENDED)
IMMUTABLE_STATUSES = (REPORT_FINAL, REPORT_AMENDED)
# categories whose reports prompt for a critical-result communication
CRITICAL_CATEGORIES = (CATEGORY_STROKE, CATEGORY_CHEST_PAIN)
MAX_REASON = 2000


class AddendumNotAllowed(WorklistError):
    """Only a report signed final takes addenda; until then, edit the draft."""


class NotARadiologist(WorklistError):
    """Only radiologists add addenda and record critical results."""


class InvalidReportInput(WorklistError, ValueError):
    """A report request is incomplete (an empty addendum) or names an unknown status."""


class UnresolvedChoices(WorklistError):
    """The report still offers a choice ([未见/可见]): pick one at each place first."""

    def __init__(self, places: list[str]) -> None:
        self.places = places
        super().__init__("Choose one option at each place before signing: " + "; ".join(places))


class CriticalResultRequired(WorklistError):
    """Stroke/chest-pain report: record a critical result or give no_critical_result_reason."""


def critical_result_expected(study: Study) -> bool:
    """True for the categories whose reports prompt for a critical result."""
    return study.category in CRITICAL_CATEGORIES


def report_visible_to(report: Report, viewer: User) -> bool:
    """Clinic users see signed reports of their own site; readers see everything."""
    if viewer.role == ROLE_CLINIC:
        return report.status in SIGNED_STATUSES and report.study.site_id == viewer.site_id
    return viewer.is_active and viewer.role != "gateway"


def get_report(*, session: Session, study: Study) -> Report | None:
    return session.scalars(
        select(Report)
        .where(Report.study_id == study.id)
        .options(joinedload(Report.author), joinedload(Report.signed_by))
        .execution_options(populate_existing=True)
    ).one_or_none()


def _hold_claim(
    *, session: Session, study: Study, user: User, now: datetime, lease: timedelta
) -> None:
    """Check ``user`` holds the claim and lock the study row; extends the lease.

    Raises ``NotClaimHolder``, ``ReportSigned`` (final/amended), ``NotClaimable`` (cancelled).
    """
    row = session.execute(
        update(Study)
        .where(
            Study.id == study.id,
            Study.claimed_by_id == user.id,
            Study.status.not_in(TERMINAL_STATUSES),
        )
        .values(claim_expires_at=now + lease, claim_warned_at=None)
        .returning(Study.id)
        .execution_options(synchronize_session=False)
    ).first()
    if row is not None:
        return
    status = session.scalar(select(Study.status).where(Study.id == study.id))
    if status is None:
        raise StudyNotFound()
    if status == STATUS_CANCELLED:
        raise NotClaimable()
    if status in TERMINAL_STATUSES:
        raise ReportSigned()
    raise NotClaimHolder()


def _set_study_status(session: Session, study: Study, status: str, *, clear_claim: bool) -> None:
    values: dict[str, object] = {"status": status}
    if clear_claim:
        values.update(claimed_by_id=None, claimed_at=None, claim_expires_at=None)
    session.execute(
        update(Study)
        .where(Study.id == study.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(study)


def save_draft(
    *,
    session: Session,
    study: Study,
    author: User,
    findings: str,
    impression: str,
    recommendation: str = "",
    now: datetime,
    lease: timedelta = DEFAULT_LEASE,
) -> Report:
    """Create or update the study's draft. The author must hold the claim.

    Editing a preliminary report turns it back into an unsigned draft. Raises
    ``NotClaimHolder``, ``ReportSigned`` (final/amended).
    """
    existing = get_report(session=session, study=study)
    if existing is not None and existing.status in IMMUTABLE_STATUSES:
        raise ReportSigned()
    _hold_claim(session=session, study=study, user=author, now=now, lease=lease)
    report = get_report(session=session, study=study)  # re-read under the lock
    if report is None:
        report = Report(study_id=study.id, author_id=author.id, created_at=now)
        session.add(report)
    elif report.status in IMMUTABLE_STATUSES:
        raise ReportSigned()
    report.author_id = author.id
    report.status = REPORT_DRAFT
    report.findings = findings
    report.impression = impression
    report.recommendation = recommendation
    report.updated_at = now
    report.signed_by_id = None
    report.signed_at = None
    report.content_sha256 = None
    session.flush()
    _set_study_status(session, study, STATUS_DRAFT, clear_claim=False)
    session.refresh(report)
    logger.info(
        "report draft saved",
        extra={
            "action": "report_draft_saved",
            "study_uid": study.study_instance_uid,
            "user_id": author.id,
        },
    )
    return report


def sign_report(
    *,
    session: Session,
    study: Study,
    signer: User,
    status: SignStatus,
    now: datetime,
    lease: timedelta = DEFAULT_LEASE,
    no_critical_result_reason: str | None = None,
    final_after: timedelta = DEFAULT_DEADLINES.final,
) -> Report:
    """Sign the report 'preliminary' or 'final' (the signer must hold the claim).

    The study follows: 'preliminary' (still claimed, for the final read; the read deadline
    is met, and the final report is due ``final_after`` after the study arrived, or at the
    read deadline if that is later) or 'final' (claim cleared). A report that still offers
    a template's choice (``[未见/可见]``) cannot be signed. A stroke / chest-pain report
    signed final with no critical result recorded needs ``no_critical_result_reason`` (kept
    on the report). Raises ``NoReport``, ``ReportSigned``, ``NotClaimHolder``,
    ``UnresolvedChoices``, ``CriticalResultRequired``, ``InvalidReportInput``.
    """
    if status not in (REPORT_PRELIMINARY, REPORT_FINAL):
        raise InvalidReportInput(f"cannot sign a report as {status!r}")
    existing = get_report(session=session, study=study)
    if existing is None:
        raise NoReport()
    if existing.status in IMMUTABLE_STATUSES:
        raise ReportSigned()
    _hold_claim(session=session, study=study, user=signer, now=now, lease=lease)
    report = get_report(session=session, study=study)
    if report is None:
        raise NoReport()
    if report.status in IMMUTABLE_STATUSES:
        raise ReportSigned()
    places = unresolved_choices(
        findings=report.findings, impression=report.impression, recommendation=report.recommendation
    )
    if places:
        raise UnresolvedChoices(places)
    reason = (no_critical_result_reason or "").strip() or None
    if status == REPORT_FINAL and critical_result_expected(study):
        recorded = session.scalar(
            select(func.count(CriticalResult.id)).where(CriticalResult.study_id == study.id)
        )
        if not recorded and reason is None:
            raise CriticalResultRequired()
    now = now.astimezone(UTC)
    report.status = status
    report.no_critical_result_reason = reason[:MAX_REASON] if reason else None
    report.signed_by_id = signer.id
    report.signed_at = now
    report.updated_at = now
    report.content_sha256 = report_content_hash(
        findings=report.findings,
        impression=report.impression,
        recommendation=report.recommendation,
        status=status,
        signer=signer.username,
        signed_at=now,
    )
    session.flush()
    if status == REPORT_FINAL:
        _set_study_status(session, study, STATUS_FINAL, clear_claim=True)
    else:
        _set_study_status(session, study, STATUS_PRELIMINARY, clear_claim=False)
        if study.final_deadline_at is None:
            due = study.received_at + final_after
            study.final_deadline_at = max(due, study.deadline_at) if study.deadline_at else due
            session.flush()
    session.refresh(report)
    logger.info(
        "report signed",
        extra={
            "action": "report_signed",
            "study_uid": study.study_instance_uid,
            "user_id": signer.id,
            "status": status,
            "sha256": report.content_sha256,
        },
    )
    return report


def add_addendum(
    *, session: Session, study: Study, author: User, text: str, reason: str, now: datetime
) -> ReportAddendum:
    """Append an addendum to the study's final (or already amended) report.

    The report becomes 'amended' (the study too); its signed content and hash are untouched.
    Raises ``NotARadiologist``, ``NoReport``, ``AddendumNotAllowed`` (not signed final yet),
    ``InvalidReportInput`` (empty text or reason).
    """
    if author.role != ROLE_RADIOLOGIST or not author.is_active:
        raise NotARadiologist()
    text, reason = text.strip(), reason.strip()
    if not text or not reason:
        raise InvalidReportInput("an addendum needs a text and a reason")
    report = get_report(session=session, study=study)
    if report is None:
        raise NoReport()
    # one conditional UPDATE: concurrent addenda serialise on the report row, and a report
    # that is not final cannot slip through between the check and the insert
    row = session.execute(
        update(Report)
        .where(Report.id == report.id, Report.status.in_(IMMUTABLE_STATUSES))
        .values(status=REPORT_AMENDED, updated_at=now)
        .returning(Report.content_sha256)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None or row[0] is None:
        raise AddendumNotAllowed()
    now = now.astimezone(UTC)
    addendum = ReportAddendum(
        report_id=report.id,
        author_id=author.id,
        created_at=now,
        text=text,
        reason=reason,
        content_sha256=addendum_hash(
            report_sha256=row[0],
            text=text,
            reason=reason,
            author=author.username,
            created_at=now,
        ),
    )
    session.add(addendum)
    session.flush()
    _set_study_status(session, study, STATUS_AMENDED, clear_claim=False)
    session.refresh(report)
    logger.info(
        "report amended",
        extra={
            "action": "report_amended",
            "study_uid": study.study_instance_uid,
            "user_id": author.id,
            "sha256": addendum.content_sha256,
        },
    )
    return addendum


def addenda_for(*, session: Session, report_ids: list[int]) -> dict[int, list[ReportAddendum]]:
    """The addenda of each report (oldest first), in one query."""
    found: dict[int, list[ReportAddendum]] = {rid: [] for rid in report_ids}
    if not report_ids:
        return found
    rows = session.scalars(
        select(ReportAddendum)
        .where(ReportAddendum.report_id.in_(report_ids))
        .options(joinedload(ReportAddendum.author))
        .order_by(ReportAddendum.created_at, ReportAddendum.id)
    )
    for addendum in rows:
        found[addendum.report_id].append(addendum)
    return found


def list_reports(
    *, session: Session, viewer: User, limit: int = 100, offset: int = 0
) -> list[Report]:
    """Reports the viewer may see, newest first; clinic users see signed ones only."""
    stmt = (
        select(Report)
        .join(Study, Report.study_id == Study.id)
        .where(visible_studies_filter(viewer))
    )
    if viewer.role == ROLE_CLINIC:
        stmt = stmt.where(Report.status.in_(SIGNED_STATUSES))
    newest = func.coalesce(Report.signed_at, Report.updated_at)
    stmt = (
        stmt.options(
            joinedload(Report.study).joinedload(Study.site),
            joinedload(Report.author),
            joinedload(Report.signed_by),
        )
        .order_by(newest.desc(), Report.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(stmt))


__all__ = [
    "CRITICAL_CATEGORIES",
    "SIGNED_STATUSES",
    "AddendumNotAllowed",
    "CriticalResultRequired",
    "InvalidReportInput",
    "NotARadiologist",
    "UnresolvedChoices",
    "add_addendum",
    "addenda_for",
    "critical_result_expected",
    "get_report",
    "list_reports",
    "report_visible_to",
    "save_draft",
    "sign_report",
]
