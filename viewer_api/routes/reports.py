"""Reports: a study's draft, its signature, addenda, and the caller's list of reports. A
study's critical results are ``viewer_api.routes.critical_results``, the report templates
``viewer_api.routes.report_templates``.

Every endpoint that touches a study's report leaves an audit event; a refused change (for
example an edit of a signed final report) is audited too, with outcome "refused".
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import Response
from sqlalchemy.orm import Session

from viewer_api.deps import (
    Audit,
    NowDep,
    RadiologistUser,
    ReaderUser,
    SessionDep,
    ViewerUser,
    VisibleStudy,
    WorklistSettingsDep,
    get_visible_study,
    reads_only,
)
from viewer_api.json_body import JsonBody
from viewer_api.schemas import (
    MAX_OFFSET,
    AddendumIn,
    ReportDraftIn,
    ReportOut,
    SignIn,
)
from worklist import critical, events, reports, sr_sends
from worklist.audit import AuditAction
from worklist.errors import NoReport
from worklist.models import REPORT_AMENDED, ROLE_CLINIC, Report, Study

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


def report_out(session: Session, report: Report) -> ReportOut:
    """The report JSON with its addenda, critical results and the state of its SR's send."""
    study: Study = report.study
    addenda = reports.addenda_for(session=session, report_ids=[report.id])[report.id]
    results = critical.critical_results_for(session=session, study_ids=[study.id])[study.id]
    return ReportOut.from_report(
        report,
        addenda=addenda,
        critical_results=results,
        critical_result_expected=reports.critical_result_expected(study),
        sr_send=sr_sends.send_of(session=session, study_id=study.id),
    )


REPORT_JSON: JsonBody[ReportOut] = JsonBody(ReportOut)


@router.get("/studies/{study_uid}/report", response_model=ReportOut, responses=_ERRORS)
@reads_only
def get_report(
    study_uid: str,
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    audit: Audit,
    now: NowDep,
) -> Response:
    """The study's report with its addenda and critical results (a clinic: signed ones of
    its own site). Read as often as studies are opened; the body is made here
    (``viewer_api.json_body``). The request only reads (``reads_only``), but for a clinic
    user's view: a read receipt, which may end the report-to-clinic stage
    (``viewer_api.metrics.turnaround``), committed in its own transaction before the
    answer (``Auditor.committed``). A radiologist's is audited off the request path
    (``Auditor.view``). Either way the session is done with in the route's thread, not in
    another hop to the pool (and ``get_visible_study`` runs here too, not as a dependency
    of its own)."""
    study = get_visible_study(study_uid, request, session, user, now)
    report = study.report  # loaded with the study, its author and signer too
    # clinic staff see signed reports of their own site only, never an unfinished draft
    if report is None or not reports.report_visible_to(report, user):
        raise NoReport()
    out = report_out(session, report)
    detail = {
        "status": report.status,
        "addenda": len(out.addenda),
        "critical_results": len(out.critical_results),
    }
    session.commit()  # here, in this thread: get_db has nothing left to hand to another
    uid = study.study_instance_uid
    if user.role == ROLE_CLINIC:
        audit.committed(AuditAction.REPORT_VIEWED, object_id=uid, detail=detail)
    else:
        audit.view(AuditAction.REPORT_VIEWED, object_id=uid, detail=detail)
    return REPORT_JSON.response(out)


@router.put("/studies/{study_uid}/report", response_model=ReportOut, responses=_ERRORS)
def save_draft(
    study_uid: str,
    body: ReportDraftIn,
    session: SessionDep,
    user: ReaderUser,
    study: VisibleStudy,
    audit: Audit,
    now: NowDep,
    wl_settings: WorklistSettingsDep,
) -> ReportOut:
    with audit.refusals(AuditAction.REPORT_DRAFT_SAVED, object_id=study_uid):
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
    audit(AuditAction.REPORT_DRAFT_SAVED, object_id=study.study_instance_uid)
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
    study: VisibleStudy,
    audit: Audit,
    now: NowDep,
    wl_settings: WorklistSettingsDep,
) -> ReportOut:
    """Sign the draft (preliminary or final); its SR is then queued for the site's PACS,
    when the site has one (the report's ``sr_send`` says how that goes)."""
    with audit.refusals(AuditAction.REPORT_SIGNED, object_id=study_uid):
        report = reports.sign_report(
            session=session,
            study=study,
            signer=user,
            status=body.status,
            now=now,
            lease=wl_settings.lease,
            no_critical_result_reason=body.no_critical_result_reason,
            final_after=wl_settings.deadlines.final,
        )
    detail: dict[str, Any] = {"status": report.status, "content_sha256": report.content_sha256}
    if report.no_critical_result_reason:
        detail["no_critical_result_reason"] = report.no_critical_result_reason
    audit(AuditAction.REPORT_SIGNED, object_id=study.study_instance_uid, detail=detail)
    events.publish_study_event(
        session=session,
        kind="report_signed",
        study=study,
        site_code=study.site.code,
        now=now,
        extra={"status": report.status, "content_sha256": report.content_sha256},
    )
    sr_sends.queue_for(
        session=session,
        study=study,
        reason=sr_sends.REASON_SIGNED.format(status=report.status),
        now=now,
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
    study: VisibleStudy,
    audit: Audit,
    now: NowDep,
) -> ReportOut:
    """Append an addendum to a final report (any radiologist; no claim needed). The report
    and the study become 'amended'; the signed content and its hash do not change. The
    amended report's SR is queued for the site's PACS, when the site has one."""
    with audit.refusals(AuditAction.REPORT_ADDENDUM_ADDED, object_id=study_uid):
        addendum = reports.add_addendum(
            session=session,
            study=study,
            author=user,
            text=body.text,
            reason=body.reason,
            now=now,
        )
    audit(
        AuditAction.REPORT_ADDENDUM_ADDED,
        object_id=study.study_instance_uid,
        detail={"addendum_id": addendum.id, "content_sha256": addendum.content_sha256},
    )
    events.publish_study_event(
        session=session,
        kind="report_amended",
        study=study,
        site_code=study.site.code,
        now=now,
        extra={"status": REPORT_AMENDED, "addendum_sha256": addendum.content_sha256},
    )
    sr_sends.queue_for(session=session, study=study, reason=sr_sends.REASON_AMENDED, now=now)
    report = reports.get_report(session=session, study=study)
    if report is None:  # pragma: no cover - add_addendum needs one
        raise NoReport()
    return report_out(session, report)


@router.get("/reports", response_model=list[ReportOut])
def list_reports(
    session: SessionDep,
    user: ViewerUser,
    audit: Audit,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[ReportOut]:
    found = reports.list_reports(session=session, viewer=user, limit=limit, offset=offset)
    addenda = reports.addenda_for(session=session, report_ids=[r.id for r in found])
    results = critical.critical_results_for(session=session, study_ids=[r.study_id for r in found])
    audit(
        AuditAction.REPORTS_LISTED,
        detail={"study_uids": [r.study.study_instance_uid for r in found], "offset": offset},
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


__all__ = ["report_out", "router"]
