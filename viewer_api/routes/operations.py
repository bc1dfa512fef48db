"""The operations page's "now": studies past their deadline or escalated, each
radiologist's workload today, each township gateway's health (admin only). The period
figures (volumes, turnaround) are ``routes/stats.py``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fastapi import APIRouter
from pydantic import BaseModel

from viewer_api.deps import AdminUser, NowDep, SessionDep
from viewer_api.routes.report_outputs import OutputSettingsDep
from worklist import operations

router = APIRouter(prefix="/api/v1/ops", tags=["operations"])


class LateStudyOut(BaseModel):
    study_instance_uid: str
    site: str
    patient_name: str
    study_description: str
    modality: str
    category: str | None
    priority: str
    status: str
    received_at: datetime
    deadline_at: datetime | None
    overdue: bool
    escalation_level: int
    claimed_by: str | None


class ReaderLoadOut(BaseModel):
    username: str
    display_name: str
    claimed_now: int
    read_today: int
    median_read_minutes: float | None


class GatewayHealthOut(BaseModel):
    gateway: str
    sites: list[str]
    last_contact: datetime | None
    stale: bool
    pending_urgent: int
    pending_routine: int
    oldest_unsent_age_seconds: float | None
    last_error: str | None
    last_error_attempts: int | None
    clock_offset_seconds: float | None  # county minus gateway, at its last report


class OperationsNow(BaseModel):
    at: datetime
    day_start: datetime  # "today" starts here (local midnight in the display time zone)
    late: list[LateStudyOut]
    readers: list[ReaderLoadOut]
    gateways: list[GatewayHealthOut]


@router.get("/now", response_model=OperationsNow)
def operations_now(
    session: SessionDep, user: AdminUser, now: NowDep, out: OutputSettingsDep
) -> OperationsNow:
    zone = timezone(timedelta(hours=out.display_utc_offset_hours))
    day_start = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    return OperationsNow(
        at=now,
        day_start=day_start,
        late=[
            LateStudyOut.model_validate(s, from_attributes=True)
            for s in operations.late_studies(session=session, now=now)
        ],
        readers=[
            ReaderLoadOut.model_validate(r, from_attributes=True)
            for r in operations.reader_workload(session=session, now=now, day_start=day_start)
        ],
        gateways=[
            GatewayHealthOut.model_validate(g, from_attributes=True)
            for g in operations.gateway_health(session=session, now=now)
        ],
    )


__all__ = ["router"]
