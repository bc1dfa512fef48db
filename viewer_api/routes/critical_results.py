"""A study's critical results: a radiologist documents one communicated (before or after
signing); readers list them. Recording is audited, a refused one too (outcome "refused")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from viewer_api.deps import (
    Audit,
    NowDep,
    RadiologistUser,
    ReaderUser,
    SessionDep,
    VisibleStudy,
)
from viewer_api.schemas import CriticalResultIn, CriticalResultOut
from worklist import critical, events
from worklist.audit import AuditAction

router = APIRouter(prefix="/api/v1", tags=["reports"])

_CRITICAL_ERRORS: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"description": "No such study visible to you"},
    status.HTTP_403_FORBIDDEN: {"description": "Only radiologists record critical results"},
    status.HTTP_409_CONFLICT: {"description": "The study is cancelled"},
    status.HTTP_422_UNPROCESSABLE_CONTENT: {"description": "Incomplete or inconsistent"},
}


@router.post(
    "/studies/{study_uid}/report/critical-results",
    response_model=CriticalResultOut,
    status_code=status.HTTP_201_CREATED,
    responses=_CRITICAL_ERRORS,
)
def record_critical_result(
    study_uid: str,
    body: CriticalResultIn,
    session: SessionDep,
    user: RadiologistUser,
    study: VisibleStudy,
    audit: Audit,
    now: NowDep,
) -> CriticalResultOut:
    """Document a critical result communicated for this study (before or after signing)."""
    with audit.refusals(AuditAction.CRITICAL_RESULT_RECORDED, object_id=study_uid):
        result = critical.record_critical_result(
            session=session,
            study=study,
            recorder=user,
            finding=body.finding,
            identified_at=body.identified_at,
            communicated_to_name=body.communicated_to_name,
            communicated_to_role=body.communicated_to_role,
            communicated_to_phone=body.communicated_to_phone,
            communicated_at=body.communicated_at,
            method=body.method,
            read_back_confirmed=body.read_back_confirmed,
            now=now,
        )
    audit(
        AuditAction.CRITICAL_RESULT_RECORDED,
        object_id=study.study_instance_uid,
        detail={
            "critical_result_id": result.id,
            "method": result.method,
            "read_back_confirmed": result.read_back_confirmed,
        },
    )
    events.publish_study_event(
        session=session,
        kind="critical_result",
        study=study,
        site_code=study.site.code,
        now=now,
        extra={
            "method": result.method,
            "read_back_confirmed": result.read_back_confirmed,
            "communicated_at": result.communicated_at.isoformat(),
        },
    )
    return CriticalResultOut.from_result(result)


@router.get(
    "/studies/{study_uid}/report/critical-results",
    response_model=list[CriticalResultOut],
    responses={status.HTTP_404_NOT_FOUND: {"description": "No such study visible to you"}},
)
def list_critical_results(
    session: SessionDep, user: ReaderUser, study: VisibleStudy, audit: Audit
) -> list[CriticalResultOut]:
    """A study's critical results for readers, also before its report exists."""
    results = critical.critical_results_for(session=session, study_ids=[study.id])[study.id]
    audit(
        AuditAction.CRITICAL_RESULTS_VIEWED,
        object_id=study.study_instance_uid,
        detail={"count": len(results)},
    )
    return [CriticalResultOut.from_result(r) for r in results]


__all__ = ["router"]
