"""The operations page's "now": studies past their deadline or escalated, each
radiologist's workload today, each township gateway's health (admin only). The period
figures (volumes, turnaround) are ``routes/stats.py``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from viewer_api.deps import AdminUser, NowDep, SessionDep
from viewer_api.outputs.settings import OutputSettings
from viewer_api.routes.report_outputs import OutputSettingsDep
from worklist import operations
from worklist.turnaround import WEEK, period_turnaround, weekly_turnaround

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


def local_day_start(now: datetime, out: OutputSettings) -> datetime:
    """Local midnight (the display time zone) before ``now``: where "today" starts."""
    zone = timezone(timedelta(hours=out.display_utc_offset_hours))
    return now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)


@router.get("/now", response_model=OperationsNow)
def operations_now(
    session: SessionDep, user: AdminUser, now: NowDep, out: OutputSettingsDep
) -> OperationsNow:
    day_start = local_day_start(now, out)
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


WINDOWS = {"today": None, "7d": timedelta(days=7)}


@router.get("/turnaround")
def operations_turnaround(
    session: SessionDep,
    user: AdminUser,
    now: NowDep,
    out: OutputSettingsDep,
    window: Annotated[Literal["today", "7d"], Query()] = "today",
    site: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    """Turnaround hop by hop for the studies that came in today (local midnight on) or in
    the last 7 days, optionally one site's: per category (stroke, chest pain, routine) each
    timeline stage's p50/p90/p95 in seconds and count, how their deadlines went, and the
    urgent studies still unanswered past a deadline (``worklist.turnaround``). Aggregates
    and study UIDs only, no patient data."""
    span = WINDOWS[window]
    since = local_day_start(now, out) if span is None else now - span
    figures = period_turnaround(session=session, now=now, since=since, site_code=site)
    return {"window": window, **figures.as_dict()}


MAX_WEEKS = 12


@router.get("/turnaround/weekly")
def operations_turnaround_weekly(
    session: SessionDep,
    user: AdminUser,
    now: NowDep,
    out: OutputSettingsDep,
    weeks: Annotated[int, Query(ge=1, le=MAX_WEEKS)] = 4,
    site: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    """The headline stages (scan -> listed -> claimed -> report -> clinic opened) per site
    and week, this week (from local Monday midnight) and the ``weeks - 1`` before it: per
    category (stroke, chest pain, routine) p50/p90 in seconds and count, the reading
    deadline kept, and the urgent studies' share read within their deadline
    (``worklist.turnaround.weekly_turnaround``). Aggregates only, no patient data."""
    day_start = local_day_start(now, out)
    monday = day_start - timedelta(days=day_start.weekday())
    since = monday - WEEK * (weeks - 1)
    figures = weekly_turnaround(session=session, now=now, since=since, site_code=site)
    return figures.as_dict()


__all__ = ["router"]
