"""The pages a report's share link opens: the report with image thumbnails, its PDF and the
rendered images. No login: the link's token is the credential (``worklist.share_links``:
stored as a hash, revocable, dying with its creator's access and its report's withdrawal).
Every use is audited anonymously as ``report_share_viewed`` with the link's id.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime
from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from viewer_api.auditing import REFUSED, Auditor, AuditWriter
from viewer_api.deps import AnonymousAudit, NowDep, SessionDep, StoreDep, client_addr_of
from viewer_api.outputs.content import ReportContent
from viewer_api.outputs.html import render_html
from viewer_api.outputs.images import render_png
from viewer_api.outputs.layout import Lang, document, format_time
from viewer_api.outputs.pdf import ShareLink as PrintedLink
from viewer_api.outputs.qr import qr_svg
from viewer_api.outputs.sr import BASIC_TEXT_SR
from viewer_api.routes.report_outputs import (
    NO_STORE,
    LangQuery,
    OutputSettingsDep,
    pdf_bytes,
    read_object,
    report_filename,
    share_url,
    signed_content,
)
from viewer_api.web.pages import STATIC_DIR
from worklist import share_links
from worklist.audit import AuditAction, PendingEvent
from worklist.errors import StudyNotFound
from worklist.models import Series, ShareLink, Study

router = APIRouter(prefix="/api/v1", tags=["report outputs"])

THUMBNAIL_EDGE = 192
THUMBNAILS_PER_SERIES = 12
_SHARE_ERRORS: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"description": "No such link, or no signed report for it"},
    status.HTTP_410_GONE: {
        "description": "The link has expired or was revoked, or its report was withdrawn"
    },
}
# the share page has no scripts and loads only its own images
SHARE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _link_study(
    *, token: str, session: Session, request: Request, now: datetime
) -> tuple[Study, ShareLink]:
    """The study a working link opens: ``ShareLinkNotFound`` (404), ``ShareLinkRevoked`` /
    ``ShareLinkWithdrawn`` / ``ShareLinkExpired`` (410; the refused use is audited with the
    link's id, off the request's transaction, which is rolled back)."""
    try:
        link = share_links.open_share_link(session=session, token=token, now=now)
    except share_links.ShareLinkError as exc:
        if exc.link_id is not None:
            _audit_off_path(
                request,
                study_uid=exc.study_uid,
                detail={"share_link_id": exc.link_id, "refused": type(exc).__name__},
                outcome=REFUSED,
                now=now,
            )
        raise
    study = session.scalars(
        select(Study)
        .where(Study.id == link.study_id)
        .options(selectinload(Study.series).selectinload(Series.instances))
    ).one()
    return study, link


def _audit_off_path(
    request: Request,
    *,
    study_uid: str,
    detail: dict[str, Any],
    now: datetime,
    outcome: str = "success",
    once_per: Hashable | None = None,
) -> None:
    writer: AuditWriter = request.app.state.audit_writer
    writer.add(
        PendingEvent.of(
            actor=None,
            action=AuditAction.REPORT_SHARE_VIEWED,
            object_id=study_uid,
            client_addr=client_addr_of(request),
            outcome=outcome,
            detail=detail,
            now=now,
        ),
        once_per=once_per,
    )


def _shared_study(
    *, token: str, session: Session, request: Request, audit: Auditor, via: str
) -> tuple[Study, ShareLink]:
    """The study a working link opens, its use audited (anonymously, with the link's id)."""
    study, link = _link_study(token=token, session=session, request=request, now=audit.now)
    audit(
        AuditAction.REPORT_SHARE_VIEWED,
        object_id=study.study_instance_uid,
        detail={"share_link_id": link.id, "via": via},
    )
    return study, link


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
body{font-family:"WenQuanYi Micro Hei","Noto Sans CJK SC","Microsoft YaHei",sans-serif;
  max-width:56em;margin:1em auto;padding:0 1em;color:#222}
.thumbs img{margin:2px;background:#000} .meta{color:#666;font-size:.85em}
""" + (STATIC_DIR / "report.css").read_text(encoding="utf-8")
# the share page's own words (the report itself is worded by its layout)
SHARE_WORDS = {
    "zh-CN": {
        "pdf": "下载 PDF 报告",
        "images": "影像",
        "none": "暂无可显示的影像",
        "count": "幅",
        "until": "链接有效期至",
    },
    "en": {
        "pdf": "Download the PDF report",
        "images": "Images",
        "none": "No images to show",
        "count": "images",
        "until": "This link works until",
    },
}


def _share_page(
    content: ReportContent,
    study: Study,
    token: str,
    expires_at: datetime,
    lang: Lang,
    page_url: str,
) -> str:
    doc = document(content, lang)
    words = SHARE_WORDS[lang]
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
            f"<section><h3>{title} ({series.num_instances} {words['count']})</h3>"
            f'<div class="thumbs">{images}</div></section>'
        )
    until = format_time(expires_at, lang, content.display_offset_hours)
    return f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{escape(doc.title)} {escape(doc.status_label)}</title>
<style>{SHARE_CSS}</style></head><body>
{render_html(doc)}
<p><a href="{base}/report.pdf?lang={lang}">{escape(words["pdf"])}</a></p>
<h2>{escape(words["images"])}</h2>
{"".join(series_html) or f"<p>{escape(words['none'])}</p>"}
<p class="meta">{escape(words["until"])} {escape(until)}
{qr_svg(page_url, scale=3)}</p>
</body></html>"""


@router.get("/share/{token}", response_class=HTMLResponse, responses=_SHARE_ERRORS)
def share_page(
    token: str,
    request: Request,
    session: SessionDep,
    out: OutputSettingsDep,
    audit: AnonymousAudit,
    lang: LangQuery = "zh-CN",
) -> HTMLResponse:
    study, link = _shared_study(
        token=token, session=session, request=request, audit=audit, via="page"
    )
    _, content = signed_content(session=session, study=study, user=None, settings=out)
    page = _share_page(content, study, token, link.expires_at, lang, share_url(request, out, token))
    return HTMLResponse(page, headers=SHARE_HEADERS)


@router.get(
    "/share/{token}/report.pdf",
    response_class=Response,
    responses={**_SHARE_ERRORS, status.HTTP_200_OK: {"content": {"application/pdf": {}}}},
)
def share_pdf(
    token: str,
    request: Request,
    session: SessionDep,
    out: OutputSettingsDep,
    audit: AnonymousAudit,
    lang: LangQuery = "zh-CN",
) -> Response:
    """The report PDF, carrying this link in its QR code."""
    study, link = _shared_study(
        token=token, session=session, request=request, audit=audit, via="pdf"
    )
    _, content = signed_content(session=session, study=study, user=None, settings=out)
    printed = PrintedLink(url=share_url(request, out, token), expires_at=link.expires_at)
    pdf = pdf_bytes(content, lang=lang, share=printed, out=out)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            **SHARE_HEADERS,
            "Content-Disposition": f'inline; filename="{report_filename(content, "pdf")}"',
        },
    )


@router.get(
    "/share/{token}/instances/{sop_uid}/rendered",
    response_class=Response,
    responses={**_SHARE_ERRORS, status.HTTP_200_OK: {"content": {"image/png": {}}}},
)
def share_rendered(
    token: str,
    sop_uid: str,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    out: OutputSettingsDep,
    now: NowDep,
    size: Annotated[int, Query(ge=32, le=2048)] = 1024,
) -> Response:
    study, link = _link_study(token=token, session=session, request=request, now=now)
    signed_content(session=session, study=study, user=None, settings=out)  # a signed report only
    instance = next(
        (i for s in study.series for i in s.instances if i.sop_instance_uid == sop_uid), None
    )
    if instance is None or instance.sop_class_uid == BASIC_TEXT_SR:
        raise StudyNotFound("No such image in this study")
    # images come by the dozen per page: one row per link per few minutes, off the request
    _audit_off_path(
        request,
        study_uid=study.study_instance_uid,
        detail={"share_link_id": link.id, "via": "images"},
        now=now,
        once_per=("share", link.id),
    )
    png = render_png(read_object(store, instance.object_key), max_edge=size)  # 415
    return Response(png, media_type="image/png", headers=SHARE_HEADERS)


__all__ = ["router"]
