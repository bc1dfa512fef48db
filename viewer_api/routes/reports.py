"""Reports: a study's draft, its signature, addenda, and the caller's list of reports. A
study's critical results are ``viewer_api.routes.critical_results``, the report templates
``viewer_api.routes.report_templates``.

Every endpoint that touches a study's report leaves an audit event; a refused change (for
example an edit of a signed final report) is audited too, with outcome "refused".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from sqlalchemy.orm import Session

from viewer_api.deps import (
    ClientAddr,
    NowDep,
    ReaderUser,
    SessionDep,
    ViewerUser,
    WorklistSettingsDep,
    require_roles,
)
from viewer_api.routes.studies import visible_study
from viewer_api.schemas import (
    MAX_OFFSET,
    AddendumIn,
    ReportDraftIn,
    ReportOut,
    SignIn,
)
from worklist import audit, critical, events, report_templates, reports
from worklist.errors import NoReport, WorklistError
from worklist.models import REPORT_AMENDED, ROLE_RADIOLOGIST, Report, Study, User

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["reports"])

MAX_PAGE = 500
_ERRORS: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"description": "No such study (or report) visible to you"},
    status.HTTP_409_CONFLICT: {"description": "Not your claim, or already signed final"},
}
_SIGN_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    status.HTTP_422_UNPROCESSABLE_CONTENT: {
        "description": "A stroke / chest-pain report signed final with no critical result "
        "recorded and no no_critical_result_reason"
    },
}
_ADDENDUM_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    status.HTTP_403_FORBIDDEN: {"description": "Only radiologists add addenda"},
    status.HTTP_409_CONFLICT: {"description": "The report is not signed final yet"},
}
# worklist errors of the report features that the app-wide table does not know
_STATUS_FOR: tuple[tuple[type[Exception], int], ...] = (
    (reports.AddendumNotAllowed, status.HTTP_409_CONFLICT),
    (reports.NotARadiologist, status.HTTP_403_FORBIDDEN),
    (reports.CriticalResultRequired, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (critical.CriticalResultNotAllowed, status.HTTP_409_CONFLICT),
    (critical.InvalidCriticalResult, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (report_templates.NoTemplate, status.HTTP_404_NOT_FOUND),
    (ValueError, status.HTTP_422_UNPROCESSABLE_CONTENT),
)

# add addenda and record critical results: radiologists only (medical content)
RadiologistUser = Annotated[User, Depends(require_roles(ROLE_RADIOLOGIST))]


@contextmanager
def refusals_audited(
    session: Session, user: User, action: str, study_uid: str, client_addr: str, now: datetime
) -> Iterator[None]:
    """Audit a refused request (outcome "refused") and turn the report features' own errors
    into their HTTP status. The request's work is rolled back first (it also releases the
    SQLite write lock a conditional UPDATE took), then the refusal alone is committed."""
    try:
        yield
    except (WorklistError, ValueError) as exc:
        session.rollback()
        audit.record(
            session=session,
            actor=user,
            action=action,
            object_type="report",
            object_id=study_uid,
            client_addr=client_addr,
            outcome="refused",
            detail={"error": type(exc).__name__, "message": str(exc)[:500]},
            now=now,
        )
        session.commit()
        for cls, code in _STATUS_FOR:
            if isinstance(exc, cls):
                raise HTTPException(code, str(exc)) from exc
        raise


def report_out(session: Session, report: Report) -> ReportOut:
    """The report JSON with its addenda and critical results."""
    study: Study = report.study
    addenda = reports.addenda_for(session=session, report_ids=[report.id])[report.id]
    results = critical.critical_results_for(session=session, study_ids=[study.id])[study.id]
    return ReportOut.from_report(
        report,
        addenda=addenda,
        critical_results=results,
        critical_result_expected=reports.critical_result_expected(study),
    )


def publish_change(
    session: Session, kind: str, study: Study, extra: dict[str, Any], now: datetime
) -> None:
    """Tell the event stream and the webhooks about a report change (no patient data)."""
    events.publish(
        session=session,
        kind=kind,
        study_uid=study.study_instance_uid,
        site_code=study.site.code,
        payload={**events.study_payload(study), **extra},
        now=now,
    )


@router.get("/studies/{study_uid}/report", response_model=ReportOut, responses=_ERRORS)
def get_report(
    study_uid: str, session: SessionDep, user: ViewerUser, now: NowDep, client_addr: ClientAddr
) -> ReportOut:
    study = visible_study(session=session, study_uid=study_uid, viewer=user)
    report = reports.get_report(session=session, study=study)
    # clinic staff see signed reports of their own site only, never an unfinished draft
    if report is None or not reports.report_visible_to(report, user):
        raise NoReport()
    out = report_out(session, report)
    audit.record(
        session=session,
        actor=user,
        action="report_viewed",
        object_type="report",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        detail={
            "status": report.status,
            "addenda": len(out.addenda),
            "critical_results": len(out.critical_results),
        },
        now=now,
    )
    return out


@router.put("/studies/{study_uid}/report", response_model=ReportOut, responses=_ERRORS)
def save_draft(
    study_uid: str,
    body: ReportDraftIn,
    session: SessionDep,
    user: ReaderUser,
    now: NowDep,
    client_addr: ClientAddr,
    wl_settings: WorklistSettingsDep,
) -> ReportOut:
    with refusals_audited(session, user, "report_draft_saved", study_uid, client_addr, now):
        study = visible_study(session=session, study_uid=study_uid, viewer=user)
        report = reports.save_draft(
            session=session,
            study=study,
            author=user,
            findings=body.findings,
            impression=body.impression,
            recommendation=body.recommendation,
            now=now,
            lease=wl_settings.lease,
        )
    audit.record(
        session=session,
        actor=user,
        action="report_draft_saved",
        object_type="report",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        now=now,
    )
    logger.info(
        "report draft saved", extra={"action": "report_draft_saved", "study_uid": study_uid}
    )
    return report_out(session, report)


@router.post("/studies/{study_uid}/report/sign", response_model=ReportOut, responses=_SIGN_ERRORS)
def sign(
    study_uid: str,
    body: SignIn,
    session: SessionDep,
    user: ReaderUser,
    now: NowDep,
    client_addr: ClientAddr,
    wl_settings: WorklistSettingsDep,
) -> ReportOut:
    with refusals_audited(session, user, "report_signed", study_uid, client_addr, now):
        study = visible_study(session=session, study_uid=study_uid, viewer=user)
        report = reports.sign_report(
            session=session,
            study=study,
            signer=user,
            status=body.status,
            now=now,
            lease=wl_settings.lease,
            no_critical_result_reason=body.no_critical_result_reason,
        )
    detail: dict[str, Any] = {"status": report.status, "content_sha256": report.content_sha256}
    if report.no_critical_result_reason:
        detail["no_critical_result_reason"] = report.no_critical_result_reason
    audit.record(
        session=session,
        actor=user,
        action="report_signed",
        object_type="report",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        detail=detail,
        now=now,
    )
    publish_change(
        session,
        "report_signed",
        study,
        {"status": report.status, "content_sha256": report.content_sha256},
        now,
    )
    logger.info(
        "report signed",
        extra={"action": "report_signed", "study_uid": study_uid, "status": report.status},
    )
    return report_out(session, report)


@router.post(
    "/studies/{study_uid}/report/addenda",
    response_model=ReportOut,
    status_code=status.HTTP_201_CREATED,
    responses=_ADDENDUM_ERRORS,
)
def add_addendum(
    study_uid: str,
    body: AddendumIn,
    session: SessionDep,
    user: RadiologistUser,
    now: NowDep,
    client_addr: ClientAddr,
) -> ReportOut:
    """Append an addendum to a final report (any radiologist; no claim needed). The report
    and the study become 'amended'; the signed content and its hash do not change."""
    with refusals_audited(session, user, "report_addendum_added", study_uid, client_addr, now):
        study = visible_study(session=session, study_uid=study_uid, viewer=user)
        addendum = reports.add_addendum(
            session=session,
            study=study,
            author=user,
            text=body.text,
            reason=body.reason,
            now=now,
        )
    audit.record(
        session=session,
        actor=user,
        action="report_addendum_added",
        object_type="report",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        detail={"addendum_id": addendum.id, "content_sha256": addendum.content_sha256},
        now=now,
    )
    publish_change(
        session,
        "report_amended",
        study,
        {"status": REPORT_AMENDED, "addendum_sha256": addendum.content_sha256},
        now,
    )
    report = reports.get_report(session=session, study=study)
    if report is None:  # pragma: no cover - add_addendum needs one
        raise NoReport()
    return report_out(session, report)


@router.get("/reports", response_model=list[ReportOut])
def list_reports(
    session: SessionDep,
    user: ViewerUser,
    now: NowDep,
    client_addr: ClientAddr,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[ReportOut]:
    found = reports.list_reports(session=session, viewer=user, limit=limit, offset=offset)
    addenda = reports.addenda_for(session=session, report_ids=[r.id for r in found])
    results = critical.critical_results_for(session=session, study_ids=[r.study_id for r in found])
    audit.record(
        session=session,
        actor=user,
        action="reports_listed",
        object_type="report",
        client_addr=client_addr,
        detail={"study_uids": [r.study.study_instance_uid for r in found], "offset": offset},
        now=now,
    )
    return [
        ReportOut.from_report(
            r,
            addenda=addenda[r.id],
            critical_results=results[r.study_id],
            critical_result_expected=reports.critical_result_expected(r.study),
        )
        for r in found
    ]


__all__ = ["RadiologistUser", "publish_change", "refusals_audited", "report_out", "router"]
