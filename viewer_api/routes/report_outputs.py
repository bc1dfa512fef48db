"""A signed report as PDF, FHIR and DICOM SR; its read receipt; and its share link.

Every study route answers 404 to a clinic user of another site (and for a study nobody
can see); a draft is 404 to clinic users (they never learn it exists) and 409 to readers.
The pages a share link opens are ``viewer_api.routes.report_shares``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from storage.base import ObjectStore
from viewer_api.auditing import Auditor
from viewer_api.deps import (
    Audit,
    NowDep,
    SessionDep,
    StoreDep,
    ViewerUser,
    VisibleStudy,
    WorklistSettingsDep,
)
from viewer_api.errors import NoDestination, RoleDenied
from viewer_api.outputs.content import ReportContent, ReportNotSigned, gather
from viewer_api.outputs.fhir import SeriesSummary, diagnostic_report
from viewer_api.outputs.fonts import report_font
from viewer_api.outputs.html import render_html
from viewer_api.outputs.layout import LANGS, Lang, document
from viewer_api.outputs.pdf import ShareLink, render_pdf
from viewer_api.outputs.settings import OutputSettings, get_output_settings
from viewer_api.outputs.sr import BASIC_TEXT_SR
from viewer_api.outputs.sr_store import store_report_sr
from viewer_api.schemas.reports import SRSendOut
from viewer_api.schemas.share_links import ShareLinkOut
from viewer_api.validation import MAX_INT32
from worklist import receipts, reports, share_links, sr_sends
from worklist.audit import AuditAction
from worklist.errors import NoReport
from worklist.models import ROLE_CLINIC, Report, Study, User

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["report outputs"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"description": "No such study or signed report visible to you"},
    status.HTTP_409_CONFLICT: {"description": "The report is still a draft"},
}
NO_STORE = {"Cache-Control": "private, no-store"}


def get_outputs_settings(request: Request) -> OutputSettings:
    found: OutputSettings | None = getattr(request.app.state, "output_settings", None)
    return found or get_output_settings()


OutputSettingsDep = Annotated[OutputSettings, Depends(get_outputs_settings)]


def signed_content(
    *, session: Session, study: Study, user: User | None, settings: OutputSettings
) -> tuple[Report, ReportContent]:
    """The study's signed report; 404 (clinic) or 409 (readers) for a draft."""
    report = reports.get_report(session=session, study=study)
    if report is None:
        raise NoReport()
    if user is not None and not reports.report_visible_to(report, user):
        raise NoReport()
    try:
        content = gather(session=session, study=study, report=report, settings=settings)
    except ReportNotSigned as exc:
        if user is None or user.role == ROLE_CLINIC:
            raise NoReport() from exc
        raise  # 409 for readers
    return report, content


def base_url(request: Request, settings: OutputSettings) -> str:
    """Where patients and clinics reach the API: ``TELEREAD_API_PUBLIC_URL``, else the
    address this request came to."""
    return (settings.public_url or str(request.base_url)).rstrip("/")


def share_url(request: Request, settings: OutputSettings, token: str) -> str:
    """The address of a share link's page (what the QR code of the PDF it serves opens)."""
    return f"{base_url(request, settings)}/api/v1/share/{token}"


LangQuery = Annotated[Lang, Query(description=f"the report's language: {' or '.join(LANGS)}")]


def pdf_bytes(
    content: ReportContent, *, lang: Lang, share: ShareLink | None, out: OutputSettings
) -> bytes:
    """The report PDF in the packaged font (``ReportFontMissing``, 503, when none is
    installed)."""
    return render_pdf(
        document(content, lang),
        font=report_font(out.report_font),
        share=share,
        offset_hours=content.display_offset_hours,
    )


_OPENED = {
    "pdf": AuditAction.REPORT_PDF_VIEWED,
    "fhir": AuditAction.REPORT_FHIR_VIEWED,
    "html": AuditAction.REPORT_HTML_VIEWED,
}


def _opened(
    *, session: Session, audit: Auditor, user: User, study: Study, report: Report, via: str
) -> None:
    audit(
        _OPENED[via],
        object_id=study.study_instance_uid,
        detail={"status": report.status, "via": via},
    )
    receipts.record_read(
        session=session,
        study_uid=study.study_instance_uid,
        reader=user,
        report_status=report.status,
        via=via,
        now=audit.now,
        client_addr=audit.client_addr,
    )


def report_filename(content: ReportContent, ext: str) -> str:
    # ASCII only: the accession number if it is plain, else the study UID
    stem = content.accession if content.accession.isascii() and content.accession else ""
    stem = "".join(ch for ch in stem if ch.isalnum() or ch in "-_") or content.study_uid
    return f"report-{stem}.{ext}"


@router.get(
    "/studies/{study_uid}/report.pdf",
    response_class=Response,
    responses={**_ERRORS, status.HTTP_200_OK: {"content": {"application/pdf": {}}}},
)
def report_pdf(
    study_uid: str,
    session: SessionDep,
    user: ViewerUser,
    study: VisibleStudy,
    audit: Audit,
    out: OutputSettingsDep,
    lang: LangQuery = "zh-CN",
) -> Response:
    report, content = signed_content(session=session, study=study, user=user, settings=out)
    # no share link: links are made on purpose (POST .../share-links), never by a download
    pdf = pdf_bytes(content, lang=lang, share=None, out=out)
    _opened(session=session, audit=audit, user=user, study=study, report=report, via="pdf")
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            **NO_STORE,
            "Content-Disposition": f'inline; filename="{report_filename(content, "pdf")}"',
        },
    )


@router.get(
    "/studies/{study_uid}/report.html",
    response_class=HTMLResponse,
    responses={**_ERRORS, status.HTTP_200_OK: {"content": {"text/html": {}}}},
)
def report_html(
    study_uid: str,
    session: SessionDep,
    user: ViewerUser,
    study: VisibleStudy,
    audit: Audit,
    out: OutputSettingsDep,
    lang: LangQuery = "zh-CN",
) -> HTMLResponse:
    """The signed report as an HTML fragment, laid out as the PDF is (the print view)."""
    report, content = signed_content(session=session, study=study, user=user, settings=out)
    _opened(session=session, audit=audit, user=user, study=study, report=report, via="html")
    return HTMLResponse(render_html(document(content, lang)), headers=NO_STORE)


def _series(study: Study) -> list[SeriesSummary]:
    return [
        SeriesSummary(
            uid=s.series_instance_uid,
            modality=s.modality,
            number=s.series_number,
            description=s.series_description,
            num_instances=s.num_instances,
        )
        for s in study.series
    ]


@router.get(
    "/studies/{study_uid}/report.fhir.json",
    response_class=Response,
    responses={**_ERRORS, status.HTTP_200_OK: {"content": {"application/fhir+json": {}}}},
)
def report_fhir(
    study_uid: str,
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    study: VisibleStudy,
    audit: Audit,
    out: OutputSettingsDep,
) -> Response:
    report, content = signed_content(session=session, study=study, user=user, settings=out)
    pdf_url = f"{base_url(request, out)}/api/v1/studies/{study_uid}/report.pdf"
    resource = diagnostic_report(content, document(content), series=_series(study), pdf_url=pdf_url)
    _opened(session=session, audit=audit, user=user, study=study, report=report, via="fhir")
    return Response(
        json.dumps(resource, ensure_ascii=False),
        media_type="application/fhir+json",
        headers=NO_STORE,
    )


@router.post("/studies/{study_uid}/report/sr", responses=_ERRORS)
def report_sr(
    study_uid: str,
    response: Response,
    session: SessionDep,
    store: StoreDep,
    user: ViewerUser,
    study: VisibleStudy,
    audit: Audit,
    now: NowDep,
    out: OutputSettingsDep,
    wl_settings: WorklistSettingsDep,
    send: Annotated[bool, Query(description="also (re)send it to the site's destination")] = False,
) -> dict[str, Any]:
    """(Re)generate the DICOM SR of the current signed report version; idempotent. With
    ``send=true`` it is also queued for the site's configured DICOM destination, as signing
    queues it (``sr_send`` in the answer and in the report JSON: pending, sent or failed,
    with the last error); the SR stays stored either way."""
    if user.role == ROLE_CLINIC:
        raise RoleDenied()
    _, content = signed_content(session=session, study=study, user=user, settings=out)
    if send and not study.site.sr_destination:
        raise NoDestination(f"No DICOM destination is configured for {study.site.code}")
    stored = store_report_sr(
        content,
        session=session,
        store=store,
        study=study,
        now=now,
        station_name=out.sr_station_name,
        deadlines=wl_settings.deadlines,
    )
    audit(
        AuditAction.REPORT_SR_GENERATED,
        object_id=study_uid,
        detail={"sop_instance_uid": stored.sop_uid, "created": stored.created},
    )
    if send:
        sr_sends.queue_for(session=session, study=study, reason=sr_sends.REASON_REQUESTED, now=now)
    row = sr_sends.send_of(session=session, study_id=study.id)
    response.status_code = status.HTTP_201_CREATED if stored.created else status.HTTP_200_OK
    return {
        "study_instance_uid": stored.study_uid,
        "series_instance_uid": stored.series_uid,
        "sop_instance_uid": stored.sop_uid,
        "sop_class_uid": BASIC_TEXT_SR,
        "size": stored.size,
        "created": stored.created,
        "sr_send": SRSendOut.from_send(row).model_dump(mode="json") if row is not None else None,
    }


@router.post(
    "/studies/{study_uid}/report/share-links",
    response_model=ShareLinkOut,
    status_code=status.HTTP_201_CREATED,
    responses=_ERRORS,
)
def create_share_link(
    study_uid: str,
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    study: VisibleStudy,
    audit: Audit,
    out: OutputSettingsDep,
) -> ShareLinkOut:
    """A new link that opens the signed report and its images without a log-in, for
    ``TELEREAD_API_SHARE_TTL_SECONDS``. Its ``url`` is in this answer only."""
    signed_content(session=session, study=study, user=user, settings=out)
    link, token = share_links.create_share_link(
        session=session, study=study, creator=user, now=audit.now, ttl_seconds=out.share_ttl_seconds
    )
    audit(
        AuditAction.REPORT_SHARE_LINK_ISSUED,
        object_id=study_uid,
        detail={"share_link_id": link.id, "expires_at": link.expires_at.isoformat()},
    )
    logger.info(
        "share link made",
        extra={"action": "share_link_created", "study_uid": study_uid, "share_link_id": link.id},
    )
    return ShareLinkOut.from_link(
        link, state=share_links.STATE_ACTIVE, url=share_url(request, out, token)
    )


@router.get(
    "/studies/{study_uid}/report/share-links",
    response_model=list[ShareLinkOut],
    responses=_ERRORS,
)
def list_share_links(
    study_uid: str, session: SessionDep, user: ViewerUser, study: VisibleStudy, audit: Audit
) -> list[ShareLinkOut]:
    """The study's share links, newest first, with their state (never their tokens)."""
    links = share_links.list_share_links(session=session, study=study)
    audit(AuditAction.REPORT_SHARE_LINKS_LISTED, object_id=study_uid)
    return [
        ShareLinkOut.from_link(link, state=share_links.link_state(link, now=audit.now))
        for link in links
    ]


@router.delete(
    "/studies/{study_uid}/report/share-links/{link_id}",
    response_model=ShareLinkOut,
    responses={status.HTTP_404_NOT_FOUND: {"description": "No such link to this study"}},
)
def revoke_share_link(
    study_uid: str,
    link_id: Annotated[int, Path(ge=1, le=MAX_INT32)],
    session: SessionDep,
    user: ViewerUser,
    study: VisibleStudy,
    audit: Audit,
) -> ShareLinkOut:
    """Revoke one share link: from now on it answers 410 ``share_link_revoked``."""
    link = share_links.revoke_share_link(
        session=session, study=study, link_id=link_id, actor=user, now=audit.now
    )
    audit(
        AuditAction.REPORT_SHARE_LINK_REVOKED,
        object_id=study_uid,
        detail={"share_link_id": link.id},
    )
    logger.info(
        "share link revoked",
        extra={"action": "share_link_revoked", "study_uid": study_uid, "share_link_id": link.id},
    )
    return ShareLinkOut.from_link(link, state=share_links.link_state(link, now=audit.now))


@router.get("/studies/{study_uid}/report/receipt", responses=_ERRORS)
def report_receipt(
    study_uid: str, session: SessionDep, user: ViewerUser, study: VisibleStudy
) -> dict[str, Any]:
    """When a clinic user first opened the final report (radiologists and admins)."""
    if user.role == ROLE_CLINIC:
        raise RoleDenied()
    receipt = receipts.first_read(session=session, study_uid=study_uid)
    if receipt is None:
        return {"first_read_at": None, "first_read_by": None, "site": None, "via": None}
    return {
        "first_read_at": receipt.first_read_at.astimezone(UTC).isoformat(),
        "first_read_by": receipt.first_read_by,
        "site": receipt.site_code or None,
        "via": receipt.via,
    }


def read_object(store: ObjectStore, key: str) -> bytes:
    with store.open(key) as stream:
        return stream.read()


__all__ = [
    "NO_STORE",
    "LangQuery",
    "OutputSettingsDep",
    "base_url",
    "pdf_bytes",
    "read_object",
    "report_filename",
    "router",
    "share_url",
    "signed_content",
]
