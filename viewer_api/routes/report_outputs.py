"""A signed report as PDF, FHIR and DICOM SR; its read receipt; and its share link.

Every study route answers 404 to a clinic user of another site (and for a study nobody
can see); a draft is 404 to clinic users (they never learn it exists) and 409 to readers.
The share routes take no login: the HMAC-signed, time-limited token is the credential.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from storage.base import ObjectStore
from viewer_api.deps import (
    ClientAddr,
    NowDep,
    SessionDep,
    SettingsDep,
    StoreDep,
    ViewerUser,
    WorklistSettingsDep,
)
from viewer_api.outputs.content import ReportContent, ReportNotSigned, gather
from viewer_api.outputs.fhir import SeriesSummary, diagnostic_report, report_text
from viewer_api.outputs.images import NotRenderable, render_png
from viewer_api.outputs.pdf import render_pdf
from viewer_api.outputs.qr import qr_svg
from viewer_api.outputs.send import Destination, SRSendFailed, send_sr
from viewer_api.outputs.settings import OutputSettings, get_output_settings
from viewer_api.outputs.share import (
    ShareTokenExpired,
    ShareTokenInvalid,
    make_share_token,
    read_share_token,
)
from viewer_api.outputs.sr import BASIC_TEXT_SR, StoredSR, store_report_sr
from viewer_api.routes.studies import visible_study
from viewer_api.settings import ApiSettings
from worklist import audit, receipts, reports
from worklist.errors import NoReport, StudyNotFound
from worklist.models import ROLE_CLINIC, Report, Series, Study, User

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["report outputs"])

NOT_SIGNED = "The report is not signed yet"
THUMBNAIL_EDGE = 192
THUMBNAILS_PER_SERIES = 12
_ERRORS: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"description": "No such study or signed report visible to you"},
    status.HTTP_409_CONFLICT: {"description": "The report is still a draft"},
}
_SHARE_ERRORS: dict[int | str, dict[str, Any]] = {
    status.HTTP_403_FORBIDDEN: {"description": "The link is not valid"},
    status.HTTP_404_NOT_FOUND: {"description": "No signed report for this link"},
    status.HTTP_410_GONE: {"description": "The link has expired"},
}
NO_STORE = {"Cache-Control": "private, no-store"}
# the share page has no scripts and loads only its own images
SHARE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def get_outputs_settings(request: Request) -> OutputSettings:
    found: OutputSettings | None = getattr(request.app.state, "output_settings", None)
    return found or get_output_settings()


OutputSettingsDep = Annotated[OutputSettings, Depends(get_outputs_settings)]


def _content(
    *, session: Session, study: Study, user: User | None, settings: OutputSettings
) -> tuple[Report, ReportContent]:
    """The study's signed report; 404 (clinic) or 409 (readers) for a draft."""
    report = reports.get_report(session=session, study=study)
    if report is None:
        raise NoReport()
    if user is not None and not reports.report_visible_to(report, user):
        raise NoReport()
    try:
        content = gather(
            session=session,
            study=study,
            report=report,
            hospital=settings.hospital_name,
            display_offset_hours=settings.display_utc_offset_hours,
        )
    except ReportNotSigned as exc:
        if user is None or user.role == ROLE_CLINIC:
            raise NoReport() from exc
        raise HTTPException(status.HTTP_409_CONFLICT, NOT_SIGNED) from exc
    return report, content


def _base_url(request: Request, settings: OutputSettings) -> str:
    return (settings.public_url or str(request.base_url)).rstrip("/")


def share_link(
    *, request: Request, study_uid: str, now: datetime, api: ApiSettings, out: OutputSettings
) -> tuple[str, datetime]:
    """A new share link to ``study_uid`` and when it expires."""
    expires_at = now + timedelta(seconds=out.share_ttl_seconds)
    token = make_share_token(
        study_uid=study_uid, expires_at=expires_at, secret=api.secret_key.get_secret_value()
    )
    return f"{_base_url(request, out)}/api/v1/share/{token}", expires_at


def _opened(
    *,
    session: Session,
    user: User,
    study: Study,
    report: Report,
    via: str,
    client_addr: str,
    now: datetime,
) -> None:
    audit.record(
        session=session,
        actor=user,
        action=f"report_{via}_viewed",
        object_type="report",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        detail={"status": report.status, "via": via},
        now=now,
    )
    receipts.record_read(
        session=session,
        study_uid=study.study_instance_uid,
        reader=user,
        report_status=report.status,
        via=via,
        now=now,
        client_addr=client_addr,
    )


def _filename(content: ReportContent, ext: str) -> str:
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
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    now: NowDep,
    client_addr: ClientAddr,
    api: SettingsDep,
    out: OutputSettingsDep,
) -> Response:
    study = visible_study(session=session, study_uid=study_uid, viewer=user)
    report, content = _content(session=session, study=study, user=user, settings=out)
    link, expires_at = share_link(request=request, study_uid=study_uid, now=now, api=api, out=out)
    pdf = render_pdf(content, share_url=link, share_expires_at=expires_at)
    _opened(
        session=session,
        user=user,
        study=study,
        report=report,
        via="pdf",
        client_addr=client_addr,
        now=now,
    )
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            **NO_STORE,
            "Content-Disposition": f'inline; filename="{_filename(content, "pdf")}"',
        },
    )


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
    now: NowDep,
    client_addr: ClientAddr,
    out: OutputSettingsDep,
) -> Response:
    study = visible_study(session=session, study_uid=study_uid, viewer=user)
    report, content = _content(session=session, study=study, user=user, settings=out)
    pdf_url = f"{_base_url(request, out)}/api/v1/studies/{study_uid}/report.pdf"
    resource = diagnostic_report(content, series=_series(study), pdf_url=pdf_url)
    _opened(
        session=session,
        user=user,
        study=study,
        report=report,
        via="fhir",
        client_addr=client_addr,
        now=now,
    )
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
    now: NowDep,
    client_addr: ClientAddr,
    out: OutputSettingsDep,
    wl_settings: WorklistSettingsDep,
    send: Annotated[bool, Query(description="also C-STORE it to the site's destination")] = False,
) -> dict[str, Any]:
    """(Re)generate the DICOM SR of the current signed report version; idempotent. With
    ``send=true`` it is also sent to the site's configured DICOM destination (the answer
    says whether that worked; the SR stays stored either way)."""
    study = visible_study(session=session, study_uid=study_uid, viewer=user)
    if user.role == ROLE_CLINIC:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Not allowed for your role")
    _, content = _content(session=session, study=study, user=user, settings=out)
    destination_text = out.sr_destinations.get(study.site.code)
    if send and not destination_text:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"No DICOM destination is configured for {study.site.code}"
        )
    stored = store_report_sr(
        content,
        session=session,
        store=store,
        study=study,
        now=now,
        station_name=out.sr_station_name,
        deadlines=wl_settings.deadlines,
    )
    audit.record(
        session=session,
        actor=user,
        action="report_sr_generated",
        object_type="report",
        object_id=study_uid,
        client_addr=client_addr,
        detail={"sop_instance_uid": stored.sop_uid, "created": stored.created},
        now=now,
    )
    response.status_code = status.HTTP_201_CREATED if stored.created else status.HTTP_200_OK
    answer: dict[str, Any] = {
        "study_instance_uid": stored.study_uid,
        "series_instance_uid": stored.series_uid,
        "sop_instance_uid": stored.sop_uid,
        "sop_class_uid": BASIC_TEXT_SR,
        "size": stored.size,
        "created": stored.created,
        "sent": None,
    }
    if send and destination_text:
        answer.update(
            _send(
                session=session,
                store=store,
                stored=stored,
                destination=Destination.parse(destination_text),
                user=user,
                out=out,
                client_addr=client_addr,
                now=now,
            )
        )
    return answer


def _send(
    *,
    session: Session,
    store: ObjectStore,
    stored: StoredSR,
    destination: Destination,
    user: User,
    out: OutputSettings,
    client_addr: str,
    now: datetime,
) -> dict[str, Any]:
    error: str | None = None
    code: int | None = None
    try:
        code = send_sr(
            _read_object(store, stored.object_key),
            destination=destination,
            calling_ae=out.sr_station_name,
            timeout=out.sr_send_timeout_seconds,
        )
    except SRSendFailed as exc:
        error = str(exc)
    audit.record(
        session=session,
        actor=user,
        action="report_sr_sent",
        object_type="report",
        object_id=stored.study_uid,
        client_addr=client_addr,
        outcome="success" if error is None else "failure",
        detail={
            "destination": str(destination),
            "sop_instance_uid": stored.sop_uid,
            "error": error,
        },
        now=now,
    )
    return {
        "sent": error is None,
        "send_status": f"0x{code:04X}" if code is not None else None,
        "send_error": error,
        "destination": str(destination),
    }


@router.post("/studies/{study_uid}/report/share-link", responses=_ERRORS)
def report_share_link(
    study_uid: str,
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    now: NowDep,
    client_addr: ClientAddr,
    api: SettingsDep,
    out: OutputSettingsDep,
) -> dict[str, Any]:
    """A fresh share link (the one the PDF's QR code carries) for a web page to show."""
    study = visible_study(session=session, study_uid=study_uid, viewer=user)
    _content(session=session, study=study, user=user, settings=out)
    link, expires_at = share_link(request=request, study_uid=study_uid, now=now, api=api, out=out)
    audit.record(
        session=session,
        actor=user,
        action="report_share_link_issued",
        object_type="report",
        object_id=study_uid,
        client_addr=client_addr,
        detail={"expires_at": expires_at.isoformat()},
        now=now,
    )
    return {"url": link, "expires_at": expires_at.astimezone(UTC).isoformat()}


@router.get("/studies/{study_uid}/report/receipt", responses=_ERRORS)
def report_receipt(study_uid: str, session: SessionDep, user: ViewerUser) -> dict[str, Any]:
    """When a clinic user first opened the final report (radiologists and admins)."""
    visible_study(session=session, study_uid=study_uid, viewer=user)
    if user.role == ROLE_CLINIC:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Not allowed for your role")
    receipt = receipts.first_read(session=session, study_uid=study_uid)
    if receipt is None:
        return {"first_read_at": None, "first_read_by": None, "site": None, "via": None}
    return {
        "first_read_at": receipt.first_read_at.astimezone(UTC).isoformat(),
        "first_read_by": receipt.first_read_by,
        "site": receipt.site_code or None,
        "via": receipt.via,
    }


# --- share links ---------------------------------------------------------------------------
def _shared_study(
    *, token: str, session: Session, api: ApiSettings, now: datetime
) -> tuple[Study, datetime]:
    try:
        study_uid, expires_at = read_share_token(
            token, secret=api.secret_key.get_secret_value(), now=now
        )
    except ShareTokenExpired as exc:
        raise HTTPException(status.HTTP_410_GONE, str(exc)) from exc
    except ShareTokenInvalid as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from exc
    study = session.scalars(
        select(Study)
        .where(Study.study_instance_uid == study_uid)
        .options(selectinload(Study.series).selectinload(Series.instances))
    ).one_or_none()
    if study is None:
        raise StudyNotFound()
    return study, expires_at


def _image_series(study: Study) -> list[Series]:
    return [
        s
        for s in study.series
        if s.modality not in ("SR", "PR", "KO")
        and any(i.sop_class_uid != BASIC_TEXT_SR for i in s.instances)
    ]


def _spread(items: list[Any], count: int) -> list[Any]:
    """Up to ``count`` items evenly spread over ``items`` (first and last included)."""
    if len(items) <= count:
        return items
    step = (len(items) - 1) / (count - 1)
    return [items[round(n * step)] for n in range(count)]


SHARE_CSS = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei",sans-serif;max-width:56em;
  margin:1em auto;padding:0 1em;color:#222}
pre{white-space:pre-wrap;font:inherit;background:#fafafa;border:1px solid #ddd;padding:1em}
.status{font-weight:bold;font-size:1.2em} .thumbs img{margin:2px;background:#000}
.meta{color:#666;font-size:.85em}
"""


def _share_page(
    content: ReportContent, study: Study, token: str, expires_at: datetime, page_url: str
) -> str:
    zh, en = content.status_words
    zone = f"（UTC{content.display_offset_hours:+d}）"
    base = f"/api/v1/share/{token}"
    series_html = []
    for series in _image_series(study):
        images = "".join(
            f'<a href="{base}/instances/{escape(i.sop_instance_uid)}/rendered">'
            f'<img alt="" loading="lazy" width="{THUMBNAIL_EDGE}" '
            f'src="{base}/instances/{escape(i.sop_instance_uid)}/rendered?size={THUMBNAIL_EDGE}">'
            "</a>"
            for i in _spread(list(series.instances), THUMBNAILS_PER_SERIES)
        )
        title = escape(f"{series.modality} {series.series_description}".strip())
        series_html.append(
            f"<section><h3>{title}（{series.num_instances} 幅）</h3>"
            f'<div class="thumbs">{images}</div></section>'
        )
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>影像诊断报告 {escape(content.status_words[0])}</title>
<style>{SHARE_CSS}</style></head><body>
<h1>{escape(content.hospital)}</h1>
<p class="status">影像诊断报告 【{escape(zh)} {escape(en)}】</p>
<pre>{escape(report_text(content))}</pre>
<p><a href="{base}/report.pdf">下载 PDF 报告</a></p>
<h2>影像 Images</h2>
{"".join(series_html) or "<p>暂无可显示的影像</p>"}
<p class="meta">链接有效期至 {escape(content.local(expires_at))}{escape(zone)}。
{qr_svg(page_url, scale=3)}</p>
</body></html>"""


@router.get("/share/{token}", response_class=HTMLResponse, responses=_SHARE_ERRORS)
def share_page(
    token: str,
    request: Request,
    session: SessionDep,
    api: SettingsDep,
    out: OutputSettingsDep,
    now: NowDep,
    client_addr: ClientAddr,
) -> HTMLResponse:
    study, expires_at = _shared_study(token=token, session=session, api=api, now=now)
    _, content = _content(session=session, study=study, user=None, settings=out)
    audit.record(
        session=session,
        actor=None,
        action="report_share_viewed",
        object_type="report",
        object_id=study.study_instance_uid,
        client_addr=client_addr,
        detail={"status": content.status, "expires_at": expires_at.isoformat()},
        now=now,
    )
    page_url = f"{_base_url(request, out)}/api/v1/share/{token}"
    return HTMLResponse(
        _share_page(content, study, token, expires_at, page_url), headers=SHARE_HEADERS
    )


@router.get(
    "/share/{token}/report.pdf",
    response_class=Response,
    responses={**_SHARE_ERRORS, status.HTTP_200_OK: {"content": {"application/pdf": {}}}},
)
def share_pdf(
    token: str,
    request: Request,
    session: SessionDep,
    api: SettingsDep,
    out: OutputSettingsDep,
    now: NowDep,
) -> Response:
    study, expires_at = _shared_study(token=token, session=session, api=api, now=now)
    _, content = _content(session=session, study=study, user=None, settings=out)
    pdf = render_pdf(
        content,
        share_url=f"{_base_url(request, out)}/api/v1/share/{token}",
        share_expires_at=expires_at,
    )
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            **SHARE_HEADERS,
            "Content-Disposition": f'inline; filename="{_filename(content, "pdf")}"',
        },
    )


def _read_object(store: ObjectStore, key: str) -> bytes:
    with store.open(key) as stream:
        return stream.read()


@router.get(
    "/share/{token}/instances/{sop_uid}/rendered",
    response_class=Response,
    responses={**_SHARE_ERRORS, status.HTTP_200_OK: {"content": {"image/png": {}}}},
)
def share_rendered(
    token: str,
    sop_uid: str,
    session: SessionDep,
    store: StoreDep,
    api: SettingsDep,
    out: OutputSettingsDep,
    now: NowDep,
    size: Annotated[int, Query(ge=32, le=2048)] = 1024,
) -> Response:
    study, _ = _shared_study(token=token, session=session, api=api, now=now)
    _content(session=session, study=study, user=None, settings=out)  # a signed report only
    instance = next(
        (i for s in study.series for i in s.instances if i.sop_instance_uid == sop_uid), None
    )
    if instance is None or instance.sop_class_uid == BASIC_TEXT_SR:
        raise StudyNotFound("No such image in this study")
    try:
        png = render_png(_read_object(store, instance.object_key), max_edge=size)
    except NotRenderable as exc:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "This image cannot be rendered"
        ) from exc
    return Response(png, media_type="image/png", headers=SHARE_HEADERS)


__all__ = ["router", "share_link"]
