"""The operations picture (admin): volumes, turnaround against deadlines, urgent finds."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from viewer_api.deps import AdminUser, Audit, NowDep, SessionDep, WorklistSettingsDep
from worklist.audit import AuditAction
from worklist.stats import MAX_DAYS, operations_stats

router = APIRouter(prefix="/api/v1/stats", tags=["stats"])


@router.get("")
def get_stats(
    session: SessionDep,
    user: AdminUser,
    audit: Audit,
    now: NowDep,
    wl_settings: WorklistSettingsDep,
    days: Annotated[int, Query(ge=1, le=MAX_DAYS)] = 30,
    site: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    """Figures for the studies that arrived in the last ``days`` days (optionally one site):
    ``volumes`` per site and modality, ``turnaround`` (arrival -> final, minutes) per
    category with its ``deadline_minutes``, ``urgent`` stroke / chest-pain counts, and
    ``by_day`` arrivals per category. Aggregates only, no patient data."""
    stats = operations_stats(
        session=session, now=now, days=days, site_code=site, deadlines=wl_settings.deadlines
    )
    audit(AuditAction.STATS_VIEWED, detail={"days": days, "site": site})
    return stats.as_dict()
