"""Reports: a study's draft, its signature, and the caller's list of reports."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from viewer_api.deps import (
    ClientAddr,
    NowDep,
    ReaderUser,
    SessionDep,
    ViewerUser,
    WorklistSettingsDep,
)
from viewer_api.routes.studies import visible_study
from viewer_api.schemas import ReportDraftIn, ReportOut, SignIn
from worklist import audit, reports
from worklist.errors import NoReport

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["reports"])

MAX_PAGE = 500
_ERRORS: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"description": "No such study (or report) visible to you"},
    status.HTTP_409_CONFLICT: {"description": "Not your claim, or already signed final"},
}


@router.get("/studies/{study_uid}/report", response_model=ReportOut, responses=_ERRORS)
def get_report(
    study_uid: str, session: SessionDep, user: ViewerUser, now: NowDep, client_addr: ClientAddr
) -> ReportOut:
    study = visible_study(session=session, study_uid=study_uid, viewer=user)
    report = reports.get_report(session=session, study=study)
    # clinic staff see signed reports of their own site only, never an unfinished draft
    if report is None or not reports.report_visible_to(report, user):
        raise NoReport()
    audit.record(
        session=session,
        actor=user,
        action="report_viewed",
        object_type="report",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        detail={"status": report.status},
        now=now,
    )
    return ReportOut.from_report(report)


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
    return ReportOut.from_report(report)


@router.post("/studies/{study_uid}/report/sign", response_model=ReportOut, responses=_ERRORS)
def sign(
    study_uid: str,
    body: SignIn,
    session: SessionDep,
    user: ReaderUser,
    now: NowDep,
    client_addr: ClientAddr,
    wl_settings: WorklistSettingsDep,
) -> ReportOut:
    study = visible_study(session=session, study_uid=study_uid, viewer=user)
    report = reports.sign_report(
        session=session,
        study=study,
        signer=user,
        status=body.status,
        now=now,
        lease=wl_settings.lease,
    )
    audit.record(
        session=session,
        actor=user,
        action="report_signed",
        object_type="report",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        detail={"status": report.status, "content_sha256": report.content_sha256},
        now=now,
    )
    logger.info(
        "report signed",
        extra={"action": "report_signed", "study_uid": study_uid, "status": report.status},
    )
    return ReportOut.from_report(report)


@router.get("/reports", response_model=list[ReportOut])
def list_reports(
    session: SessionDep,
    user: ViewerUser,
    now: NowDep,
    client_addr: ClientAddr,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[ReportOut]:
    found = reports.list_reports(session=session, viewer=user, limit=limit, offset=offset)
    audit.record(
        session=session,
        actor=user,
        action="reports_listed",
        object_type="report",
        client_addr=client_addr,
        detail={"study_uids": [r.study.study_instance_uid for r in found], "offset": offset},
        now=now,
    )
    return [ReportOut.from_report(r) for r in found]
