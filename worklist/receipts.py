"""Read receipts: when a clinic user first opened a study's final report, and who.

Kept in the audit trail (no table of its own): opening a final report as a clinic user
through the PDF or FHIR outputs appends a ``report_first_read`` event unless the report
was already read; the JSON route's ``report_viewed`` events by clinic users of a final
(or amended) report count as reads too, so every way of opening it is covered. The
receipt is the earliest of those events, so two simultaneous first reads still give one
answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from worklist import audit
from worklist.audit import AuditAction
from worklist.models import REPORT_AMENDED, REPORT_FINAL, ROLE_CLINIC, AuditEvent, User

FIRST_READ = AuditAction.REPORT_FIRST_READ
VIEWED = AuditAction.REPORT_VIEWED  # the JSON report route's event
FINAL_STATUSES = (REPORT_FINAL, REPORT_AMENDED)
SCAN_LIMIT = 1000


@dataclass(frozen=True)
class Receipt:
    first_read_at: datetime
    first_read_by: str  # username
    site_code: str
    via: str  # "pdf", "fhir", "json"


def _receipt(event: AuditEvent) -> Receipt:
    via = str((event.detail or {}).get("via", "json"))
    return Receipt(
        first_read_at=event.at,
        first_read_by=event.username,
        site_code=event.site_code,
        via=via,
    )


def first_read(*, session: Session, study_uid: str) -> Receipt | None:
    """The first time a clinic user opened the study's final report, or None."""
    events = session.scalars(
        select(AuditEvent)
        .where(
            AuditEvent.object_type == "report",
            AuditEvent.object_id == study_uid,
            AuditEvent.action.in_((FIRST_READ, VIEWED)),
            AuditEvent.role == ROLE_CLINIC,
            AuditEvent.outcome == "success",
        )
        .order_by(AuditEvent.at, AuditEvent.id)
        .limit(SCAN_LIMIT)
    )
    for event in events:
        if event.action == FIRST_READ:
            return _receipt(event)
        if (event.detail or {}).get("status") in FINAL_STATUSES:
            return _receipt(event)
    return None


def record_read(
    *,
    session: Session,
    study_uid: str,
    reader: User,
    report_status: str,
    via: str,
    now: datetime,
    client_addr: str = "",
) -> bool:
    """Note that ``reader`` opened the study's report; True when this was the first read
    of the final report by a clinic user (and so was recorded)."""
    if reader.role != ROLE_CLINIC or report_status not in FINAL_STATUSES:
        return False
    if first_read(session=session, study_uid=study_uid) is not None:
        return False
    audit.record(
        session=session,
        actor=reader,
        action=FIRST_READ,
        object_type="report",
        object_id=study_uid,
        client_addr=client_addr,
        detail={"status": report_status, "via": via},
        now=now,
    )
    return True


__all__ = ["FIRST_READ", "Receipt", "first_read", "record_read"]
