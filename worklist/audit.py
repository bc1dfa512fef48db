"""The audit trail: append-only (there is deliberately no update or delete here)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, func, insert, or_, select
from sqlalchemy.orm import Session, sessionmaker

from worklist.models import AuditEvent, Site, User

logger = logging.getLogger(__name__)


class AuditAction(StrEnum):
    """Every action the audit trail records; the value is what the ``action`` column holds
    (the exports map these names onto the DICOM audit vocabulary, ``audit_export.classify``).
    ``object_type`` is the kind of object the action is about, unless the caller says."""

    # accounts and access
    LOGIN = "login"
    LOGOUT = "logout"
    USER_CREATED = "user_created"
    USER_DISABLED = "user_disabled"
    USER_ENABLED = "user_enabled"
    USER_PASSWORD_RESET = "user_password_reset"
    USER_TOKENS_REVOKED = "user_tokens_revoked"
    GATEWAY_CREDENTIAL_REVOKED = "gateway_credential_revoked"
    STUDY_ACCESS_REFUSED = "study_access_refused"
    # arrivals from the township gateways
    INSTANCES_INGESTED = "instances_ingested"
    # a gateway refused a DICOM association (called or calling AE title, or a device not of
    # its site); reported with the gateway's status, the modality's address in the detail
    ASSOCIATION_REFUSED = "association_refused"
    STUDY_COMPLETE = "study_complete"
    # an announced instance held for an admin (study of another site, another patient)
    INGEST_CONFLICT_HELD = "ingest_conflict_held"
    INGEST_CONFLICT_RESOLVED = "ingest_conflict_resolved"
    INGEST_CONFLICTS_VIEWED = "ingest_conflicts_viewed"
    # a re-sent instance (other bytes under a filed SOP Instance UID, ``worklist.resends``)
    INSTANCE_REPLACED = "instance_replaced"  # the re-send is served now
    INSTANCE_VERSION_KEPT = "instance_version_kept"  # kept beside the version served
    INSTANCE_VERSIONS_VIEWED = "instance_versions_viewed"
    INSTANCE_VERSION_RETRIEVED = "instance_version_retrieved"
    # the worklist
    WORKLIST_VIEW = "worklist_view"
    STUDY_VIEWED = "study_viewed"
    PRIORS_VIEWED = "priors_viewed"
    STUDY_TIMELINE_VIEWED = "study_timeline_viewed"
    INSTANCE_VIEWED = "instance_viewed"
    STUDY_CLAIMED = "study_claimed"
    CLAIM_RENEWED = "claim_renewed"
    STUDY_RELEASED = "study_released"
    STUDY_ASSIGNED = "study_assigned"
    STUDY_CANCELLED = "study_cancelled"
    STUDY_FLAGGED = "study_flagged"
    STUDY_UNFLAGGED = "study_unflagged"
    # DICOMweb
    DICOMWEB_SEARCHED = "dicomweb_searched"
    DICOMWEB_METADATA_VIEWED = "dicomweb_metadata_viewed"
    DICOMWEB_IMAGES_VIEWED = "dicomweb_images_viewed"
    DICOMWEB_RETRIEVED = "dicomweb_retrieved"
    # reports
    REPORT_VIEWED = "report_viewed"
    REPORT_PDF_VIEWED = "report_pdf_viewed"
    REPORT_FHIR_VIEWED = "report_fhir_viewed"
    REPORT_HTML_VIEWED = "report_html_viewed"  # the print view
    REPORT_FIRST_READ = "report_first_read"
    REPORTS_LISTED = "reports_listed"
    REPORT_DRAFT_SAVED = "report_draft_saved"
    REPORT_SIGNED = "report_signed"
    REPORT_ADDENDUM_ADDED = "report_addendum_added"
    REPORT_TEMPLATE_VIEWED = "report_template_viewed"
    CRITICAL_RESULT_RECORDED = "critical_result_recorded"
    CRITICAL_RESULTS_VIEWED = "critical_results_viewed"
    CRITICAL_RESULT_ACKNOWLEDGED = "critical_result_acknowledged"  # the clinic's read-back
    REPORT_SR_GENERATED = "report_sr_generated"
    REPORT_SR_SENT = "report_sr_sent"
    REPORT_SHARE_LINK_ISSUED = "report_share_link_issued"
    REPORT_SHARE_LINKS_LISTED = "report_share_links_listed"
    REPORT_SHARE_LINK_REVOKED = "report_share_link_revoked"
    # a use of a share link (anonymous; the detail names the link): its page, PDF, images
    REPORT_SHARE_VIEWED = "report_share_viewed"
    # the clinic announces an urgent patient before the images
    CALL_AHEAD_ANNOUNCED = "call_ahead_announced"
    CALL_AHEAD_CANCELLED = "call_ahead_cancelled"
    # operations
    STATS_VIEWED = "stats_viewed"
    AUDIT_VIEWED = "audit_viewed"
    AUDIT_EXPORTED = "audit_exported"
    AUDIT_PURGED = "audit_purged"
    # a stored object that does not match the sha256 recorded at ingest (or is gone)
    OBJECT_INTEGRITY_FAILED = "object_integrity_failed"

    @property
    def object_type(self) -> str:
        return _OBJECT_TYPES.get(self, "")


# the kind of object each action is about (the ``object_type`` column)
_OBJECT_TYPES: dict[AuditAction, str] = {
    **dict.fromkeys(
        (
            AuditAction.LOGIN,
            AuditAction.LOGOUT,
            AuditAction.USER_CREATED,
            AuditAction.USER_DISABLED,
            AuditAction.USER_ENABLED,
            AuditAction.USER_PASSWORD_RESET,
            AuditAction.USER_TOKENS_REVOKED,
            AuditAction.GATEWAY_CREDENTIAL_REVOKED,
        ),
        "user",
    ),
    **dict.fromkeys(
        (AuditAction.INSTANCES_INGESTED, AuditAction.ASSOCIATION_REFUSED),
        "site",
    ),
    **dict.fromkeys(
        (AuditAction.WORKLIST_VIEW, AuditAction.INGEST_CONFLICTS_VIEWED),
        "worklist",
    ),
    **dict.fromkeys(
        (
            AuditAction.STUDY_ACCESS_REFUSED,
            AuditAction.STUDY_COMPLETE,
            AuditAction.INGEST_CONFLICT_HELD,
            AuditAction.INGEST_CONFLICT_RESOLVED,
            AuditAction.INSTANCE_REPLACED,
            AuditAction.INSTANCE_VERSION_KEPT,
            AuditAction.INSTANCE_VERSIONS_VIEWED,
            AuditAction.INSTANCE_VERSION_RETRIEVED,
            AuditAction.STUDY_VIEWED,
            AuditAction.PRIORS_VIEWED,
            AuditAction.STUDY_TIMELINE_VIEWED,
            AuditAction.STUDY_CLAIMED,
            AuditAction.CLAIM_RENEWED,
            AuditAction.STUDY_RELEASED,
            AuditAction.STUDY_ASSIGNED,
            AuditAction.STUDY_CANCELLED,
            AuditAction.STUDY_FLAGGED,
            AuditAction.STUDY_UNFLAGGED,
            AuditAction.DICOMWEB_METADATA_VIEWED,
            AuditAction.DICOMWEB_IMAGES_VIEWED,
            AuditAction.DICOMWEB_RETRIEVED,
        ),
        "study",
    ),
    **dict.fromkeys(
        (AuditAction.INSTANCE_VIEWED, AuditAction.OBJECT_INTEGRITY_FAILED),
        "instance",
    ),
    **dict.fromkeys(
        (AuditAction.DICOMWEB_SEARCHED,),
        "dicomweb",
    ),
    **dict.fromkeys(
        (
            AuditAction.REPORT_VIEWED,
            AuditAction.REPORT_PDF_VIEWED,
            AuditAction.REPORT_FHIR_VIEWED,
            AuditAction.REPORT_HTML_VIEWED,
            AuditAction.REPORT_FIRST_READ,
            AuditAction.REPORTS_LISTED,
            AuditAction.REPORT_DRAFT_SAVED,
            AuditAction.REPORT_SIGNED,
            AuditAction.REPORT_ADDENDUM_ADDED,
            AuditAction.REPORT_TEMPLATE_VIEWED,
            AuditAction.CRITICAL_RESULT_RECORDED,
            AuditAction.CRITICAL_RESULTS_VIEWED,
            AuditAction.CRITICAL_RESULT_ACKNOWLEDGED,
            AuditAction.REPORT_SR_GENERATED,
            AuditAction.REPORT_SR_SENT,
            AuditAction.REPORT_SHARE_LINK_ISSUED,
            AuditAction.REPORT_SHARE_LINKS_LISTED,
            AuditAction.REPORT_SHARE_LINK_REVOKED,
            AuditAction.REPORT_SHARE_VIEWED,
        ),
        "report",
    ),
    **dict.fromkeys(
        (AuditAction.CALL_AHEAD_ANNOUNCED, AuditAction.CALL_AHEAD_CANCELLED),
        "call_ahead",
    ),
    **dict.fromkeys(
        (AuditAction.STATS_VIEWED,),
        "stats",
    ),
    **dict.fromkeys(
        (
            AuditAction.AUDIT_VIEWED,
            AuditAction.AUDIT_EXPORTED,
            AuditAction.AUDIT_PURGED,
        ),
        "audit",
    ),
}


def _text(value: str, limit: int) -> str:
    """Cut to the column's size; NUL (which PostgreSQL refuses in text, and a refused log-in
    may carry in its user name) becomes U+FFFD, so recording the attempt cannot fail."""
    return value[:limit].replace("\x00", "\ufffd")


def record(
    *,
    session: Session,
    actor: User | None,
    action: AuditAction,
    object_type: str | None = None,
    object_id: str = "",
    client_addr: str = "",
    outcome: str = "success",
    detail: dict[str, Any] | None = None,
    now: datetime,
) -> AuditEvent:
    """Append one event; who (copied from ``actor``, so it survives renames), what, where.
    ``object_type`` defaults to the action's."""
    site_code = ""
    if actor is not None and actor.site_id is not None:
        site_code = session.scalar(select(Site.code).where(Site.id == actor.site_id)) or ""
    event = AuditEvent(
        **PendingEvent.of(
            actor=actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            client_addr=client_addr,
            outcome=outcome,
            detail=detail,
            now=now,
        ).row(site_code)
    )
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event taken down now and written later with others (``append_events``): the
    actor is copied, its site code looked up when written."""

    at: datetime
    user_id: int | None
    username: str
    role: str
    site_id: int | None
    action: AuditAction
    object_type: str
    object_id: str
    client_addr: str
    outcome: str
    detail: dict[str, Any]

    @classmethod
    def of(
        cls,
        *,
        actor: User | None,
        action: AuditAction,
        object_type: str | None = None,
        object_id: str = "",
        client_addr: str = "",
        outcome: str = "success",
        detail: dict[str, Any] | None = None,
        now: datetime,
    ) -> PendingEvent:
        return cls(
            at=now,
            user_id=actor.id if actor is not None else None,
            username=actor.username if actor is not None else "",
            role=actor.role if actor is not None else "",
            site_id=actor.site_id if actor is not None else None,
            action=action,
            object_type=action.object_type if object_type is None else object_type,
            object_id=object_id,
            client_addr=client_addr,
            outcome=outcome,
            detail=dict(detail or {}),
        )

    def row(self, site_code: str) -> dict[str, Any]:
        """The ``audit_events`` row, every text cut to its column."""
        return {
            "at": self.at,
            "user_id": self.user_id,
            "username": self.username,
            "role": self.role,
            "site_code": site_code,
            "action": _text(self.action, 64),
            "object_type": _text(self.object_type, 32),
            "object_id": _text(self.object_id, 128),
            "client_addr": _text(self.client_addr, 64),
            "outcome": _text(self.outcome, 16),
            "detail": self.detail,
        }


def append_events(*, session: Session, events: Sequence[PendingEvent]) -> None:
    """Write ``events`` in one multi-row INSERT (and one query for their sites' codes)."""
    if not events:
        return
    site_ids = {e.site_id for e in events if e.site_id is not None}
    codes: dict[int, str] = {}
    if site_ids:
        found = session.execute(select(Site.id, Site.code).where(Site.id.in_(site_ids)))
        codes = {row.id: row.code for row in found}
    rows = [e.row(codes.get(e.site_id, "") if e.site_id is not None else "") for e in events]
    session.execute(insert(AuditEvent), rows)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which events an export covers: ``since`` inclusive, ``until`` exclusive; ``max_id``
    pins the export to the events that existed when it started."""

    since: datetime | None = None
    until: datetime | None = None
    username: str | None = None
    action: str | None = None
    object_id: str | None = None
    site: str | None = None
    max_id: int | None = None


def _where(stmt: Select[AuditEvent], f: AuditFilter) -> Select[AuditEvent]:
    if f.since is not None:
        stmt = stmt.where(AuditEvent.at >= f.since)
    if f.until is not None:
        stmt = stmt.where(AuditEvent.at < f.until)
    if f.username is not None:
        stmt = stmt.where(AuditEvent.username == f.username)
    if f.action is not None:
        stmt = stmt.where(AuditEvent.action == f.action)
    if f.object_id is not None:
        stmt = stmt.where(AuditEvent.object_id == f.object_id)
    if f.site is not None:
        stmt = stmt.where(AuditEvent.site_code == f.site)
    if f.max_id is not None:
        stmt = stmt.where(AuditEvent.id <= f.max_id)
    return stmt


def last_id(*, session: Session) -> int:
    """The newest event's id (0 when there is none): the upper bound of an export."""
    return int(session.scalar(select(func.max(AuditEvent.id))) or 0)


def iter_events(
    *,
    factory: sessionmaker[Session],
    filters: AuditFilter,
    page_size: int = 1000,
) -> Iterator[list[AuditEvent]]:
    """Matching events oldest first, in pages of ``page_size`` (keyset on ``(at, id)``).

    Each page is read in its own short session, so a million-row export holds neither a
    million objects nor a pooled connection while a slow client downloads; the yielded
    events are detached (every column loaded)."""
    after: tuple[datetime, int] | None = None
    while True:
        stmt = _where(select(AuditEvent), filters)
        if after is not None:
            at, event_id = after
            # ``at >= :at`` lets the index on ``at`` bound the scan; the OR breaks ties
            stmt = stmt.where(
                AuditEvent.at >= at, or_(AuditEvent.at > at, AuditEvent.id > event_id)
            )
        stmt = stmt.order_by(AuditEvent.at, AuditEvent.id).limit(page_size)
        with factory() as session:
            page = list(session.scalars(stmt))
            session.expunge_all()
        if not page:
            return
        yield page
        if len(page) < page_size:
            return
        after = (page[-1].at, page[-1].id)


def list_events(
    *,
    session: Session,
    action: str | None = None,
    object_id: str | None = None,
    limit: int = 200,
) -> list[AuditEvent]:
    """Events newest first, optionally for one action and/or object."""
    stmt = select(AuditEvent)
    if action is not None:
        stmt = stmt.where(AuditEvent.action == action)
    if object_id is not None:
        stmt = stmt.where(AuditEvent.object_id == object_id)
    return list(
        session.scalars(stmt.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit))
    )


def search_events(
    *,
    session: Session,
    action: str | None = None,
    username: str | None = None,
    object_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    site: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEvent]:
    """Events newest first, filtered (``since`` inclusive, ``until`` exclusive), one page."""
    filters = AuditFilter(
        since=since,
        until=until,
        username=username,
        action=action,
        object_id=object_id,
        site=site,
    )
    stmt = _where(select(AuditEvent), filters)
    stmt = stmt.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(stmt))


__all__ = [
    "AuditAction",
    "AuditFilter",
    "PendingEvent",
    "append_events",
    "iter_events",
    "last_id",
    "list_events",
    "record",
    "search_events",
]
