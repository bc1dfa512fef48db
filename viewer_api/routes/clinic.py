"""The clinic hears back: its open alerts (critical results not yet acknowledged, studies
overdue without a report), the acknowledgement of a critical result (recorded as its
read-back), and call-ahead announcements of urgent patients.

Live alerts travel on the event stream (``routes/events.py``), filtered to the clinic's
site: ``report_signed``, ``report_amended``, ``critical_result``,
``critical_result_acknowledged``, ``study_overdue``, ``call_ahead``. Event payloads carry no
patient data: the page fetches the details here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, Field

from viewer_api.auditing import Auditor
from viewer_api.deps import Audit, NowDep, SessionDep, WorklistSettingsDep, require_roles
from viewer_api.validation import Input
from worklist import call_ahead, critical, events
from worklist.audit import AuditAction
from worklist.models import ROLE_ADMIN, ROLE_CLINIC, ROLE_RADIOLOGIST, CallAhead, User
from worklist.overdue import overdue_studies

router = APIRouter(prefix="/api/v1", tags=["clinic"])

ClinicUser = Annotated[User, Depends(require_roles(ROLE_CLINIC, ROLE_ADMIN))]
AcknowledgingUser = Annotated[User, Depends(require_roles(ROLE_CLINIC))]
AnnouncingUser = Annotated[User, Depends(require_roles(ROLE_CLINIC, ROLE_RADIOLOGIST, ROLE_ADMIN))]
# a critical result older than this no longer raises a banner
ALERT_WINDOW = timedelta(days=7)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"description": "Not found, or not visible to you"}
}


def display_name(user: User | None) -> str | None:
    return (user.display_name or user.username) if user is not None else None


class CriticalAlert(BaseModel):
    id: int
    study_instance_uid: str
    site: str
    patient_name: str
    patient_id: str
    study_description: str
    finding: str
    communicated_at: datetime
    recorded_by: str
    category: str | None


class OverdueAlert(BaseModel):
    study_instance_uid: str
    site: str
    patient_name: str
    patient_id: str
    study_description: str
    category: str | None
    deadline_at: datetime
    status: str


class ClinicAlerts(BaseModel):
    critical: list[CriticalAlert]
    overdue: list[OverdueAlert]


@router.get("/clinic/alerts", response_model=ClinicAlerts)
def clinic_alerts(session: SessionDep, user: ClinicUser, now: NowDep) -> ClinicAlerts:
    """What the clinic must see now: critical results nobody at the site has acknowledged
    (the last week's), and its studies past the deadline with no report. An admin sees
    every site's."""
    site_id = user.site_id if user.role == ROLE_CLINIC else None
    pending = critical.unacknowledged(session=session, site_id=site_id, since=now - ALERT_WINDOW)
    late = overdue_studies(session=session, site_id=site_id, now=now)
    return ClinicAlerts(
        critical=[
            CriticalAlert(
                id=result.id,
                study_instance_uid=study.study_instance_uid,
                site=study.site.code,
                patient_name=study.patient_name,
                patient_id=study.patient_id,
                study_description=study.study_description,
                finding=result.finding,
                communicated_at=result.communicated_at,
                recorded_by=display_name(result.recorded_by) or "",
                category=study.category,
            )
            for result, study in pending
        ],
        overdue=[
            OverdueAlert(
                study_instance_uid=s.study_instance_uid,
                site=s.site.code,
                patient_name=s.patient_name,
                patient_id=s.patient_id,
                study_description=s.study_description,
                category=s.category,
                deadline_at=s.deadline_at or now,
                status=s.status,
            )
            for s in late
        ],
    )


class AcknowledgedOut(BaseModel):
    id: int
    read_back_confirmed: bool
    acknowledged_by: str | None
    acknowledged_at: datetime | None


@router.post(
    "/studies/{study_uid}/report/critical-results/{result_id}/acknowledge",
    response_model=AcknowledgedOut,
    responses=_NOT_FOUND,
)
def acknowledge_critical_result(
    study_uid: str,
    result_id: int,
    session: SessionDep,
    user: AcknowledgingUser,
    now: NowDep,
    audit: Audit,
) -> AcknowledgedOut:
    """The clinic read the critical result back: recorded on it (who, when, read-back
    confirmed). Idempotent: the first acknowledgement stands."""
    result, study, changed = critical.acknowledge(
        session=session, study_uid=study_uid, result_id=result_id, user=user, now=now
    )
    if changed:
        audit(
            AuditAction.CRITICAL_RESULT_ACKNOWLEDGED,
            object_id=study_uid,
            detail={"critical_result_id": result.id},
        )
        events.publish_study_event(
            session=session,
            kind=events.KIND_CRITICAL_RESULT_ACKNOWLEDGED,
            study=study,
            site_code=study.site.code,
            now=now,
            extra={"critical_result_id": result.id},
        )
    return AcknowledgedOut(
        id=result.id,
        read_back_confirmed=result.read_back_confirmed,
        acknowledged_by=display_name(result.acknowledged_by),
        acknowledged_at=result.acknowledged_at,
    )


# --- call-ahead ---------------------------------------------------------------------------
class CallAheadIn(Input):
    site: str | None = Field(default=None, max_length=32)  # a clinic's own site if omitted
    patient_id: str = Field(default="", max_length=64)
    patient_name: str = Field(default="", max_length=200)
    category: Literal["stroke", "chest_pain"]  # no default: the caller says which
    onset_at: datetime | None = None
    note: str = Field(default="", max_length=1000)


class CallAheadOut(BaseModel):
    id: int
    site: str
    patient_id: str
    patient_name: str
    category: str
    onset_at: datetime | None
    note: str
    announced_by: str
    announced_at: datetime
    expires_at: datetime
    study_instance_uid: str | None
    matched_at: datetime | None
    cancelled_at: datetime | None

    @classmethod
    def of(cls, call: CallAhead) -> CallAheadOut:
        return cls(
            id=call.id,
            site=call.site.code,
            patient_id=call.patient_id,
            patient_name=call.patient_name,
            category=call.category,
            onset_at=call.onset_at,
            note=call.note,
            announced_by=display_name(call.created_by) or "",
            announced_at=call.created_at,
            expires_at=call.expires_at,
            study_instance_uid=call.study.study_instance_uid if call.study else None,
            matched_at=call.matched_at,
            cancelled_at=call.cancelled_at,
        )


def _audit_call(audit: Auditor, action: AuditAction, call: CallAhead) -> None:
    audit(
        action, object_id=str(call.id), detail={"category": call.category, "site": call.site.code}
    )


@router.post(
    "/call-aheads",
    response_model=CallAheadOut,
    status_code=status.HTTP_201_CREATED,
    responses={status.HTTP_422_UNPROCESSABLE_CONTENT: {"description": "No patient, bad time"}},
)
def announce_call_ahead(
    body: CallAheadIn,
    session: SessionDep,
    user: AnnouncingUser,
    now: NowDep,
    audit: Audit,
    wl_settings: WorklistSettingsDep,
) -> CallAheadOut:
    """Announce an urgent patient before (or during) the scan: the patient's first study
    at the site is urgent from its first instance."""
    call = call_ahead.announce(
        session=session,
        user=user,
        site_code=body.site,
        patient_id=body.patient_id,
        patient_name=body.patient_name,
        category=body.category,
        onset_at=body.onset_at,
        note=body.note,
        now=now,
        deadlines=wl_settings.deadlines,
    )
    _audit_call(audit, AuditAction.CALL_AHEAD_ANNOUNCED, call)
    session.refresh(call)
    return CallAheadOut.of(call)


@router.get("/call-aheads", response_model=list[CallAheadOut])
def list_call_aheads(
    session: SessionDep,
    user: AnnouncingUser,
    now: NowDep,
    recent: Annotated[bool, Query(description="also the last day's matched ones")] = False,
) -> list[CallAheadOut]:
    """Pending call-aheads (a clinic: its site's), newest first."""
    calls = call_ahead.list_call_aheads(
        session=session, viewer=user, now=now, pending_only=not recent
    )
    return [CallAheadOut.of(c) for c in calls]


@router.post(
    "/call-aheads/{call_ahead_id}/cancel", response_model=CallAheadOut, responses=_NOT_FOUND
)
def cancel_call_ahead(
    call_ahead_id: int,
    session: SessionDep,
    user: AnnouncingUser,
    now: NowDep,
    audit: Audit,
) -> CallAheadOut:
    """Withdraw a pending call-ahead (the patient will not come, or was announced twice)."""
    call = call_ahead.cancel(session=session, user=user, call_ahead_id=call_ahead_id, now=now)
    _audit_call(audit, AuditAction.CALL_AHEAD_CANCELLED, call)
    return CallAheadOut.of(call)


__all__ = ["router"]
