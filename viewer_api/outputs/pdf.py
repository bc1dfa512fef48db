"""The printed report: A4, Chinese set in reportlab's built-in CID font (no font files).

Header (hospital, site), patient and study, findings, impression, recommendation, the
critical-result box, addenda, then status, signer, time, the content hash and a QR code to
the share link. A preliminary report carries a large diagonal watermark on every page.
"""

from __future__ import annotations

import re
from datetime import datetime
from io import BytesIO
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from viewer_api.outputs.content import ReportContent
from viewer_api.outputs.qr import QRCode
from worklist.models import REPORT_PRELIMINARY

FONT = "STSong-Light"  # Adobe-GB1 CID font every PDF reader has; covers GB 18030's common set
pdfmetrics.registerFont(UnicodeCIDFont(FONT))
LATIN = "Helvetica"
_ASCII_RUN = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")

_BASE = ParagraphStyle("base", fontName=FONT, fontSize=10.5, leading=15, wordWrap="CJK")
STYLES = {
    "hospital": ParagraphStyle(
        "hospital", parent=_BASE, fontSize=17, leading=22, alignment=TA_CENTER
    ),
    "site": ParagraphStyle("site", parent=_BASE, fontSize=11, alignment=TA_CENTER),
    "title": ParagraphStyle("title", parent=_BASE, fontSize=14, leading=20, alignment=TA_CENTER),
    "status": ParagraphStyle("status", parent=_BASE, fontSize=13, leading=18, alignment=TA_CENTER),
    "heading": ParagraphStyle("heading", parent=_BASE, fontSize=12, leading=18, spaceBefore=6),
    "body": _BASE,
    "small": ParagraphStyle("small", parent=_BASE, fontSize=8, leading=11),
    # a long URL, broken anywhere (CJK wrapping), in a face that has every ASCII glyph
    "link": ParagraphStyle("link", parent=_BASE, fontName="Courier", fontSize=6.5, leading=8),
    "critical": ParagraphStyle("critical", parent=_BASE, textColor=colors.darkred),
}
STATUS_COLOURS = {
    "preliminary": colors.HexColor("#b36b00"),
    "final": colors.HexColor("#1a5e1a"),
    "amended": colors.HexColor("#1f4e99"),
}
METHOD_WORDS = {"phone": "电话", "in_person": "当面", "message": "消息", "other": "其他"}


def _markup(text: str) -> str:
    """Plain text as paragraph markup: escaped, line breaks kept, and runs of ASCII set in
    Helvetica (every PDF reader has it; a reader's stand-in for the CID font may lack Latin
    glyphs)."""
    marked = _ASCII_RUN.sub(lambda m: f'<font name="{LATIN}">{m.group(0)}</font>', escape(text))
    return marked.replace("\n", "<br/>")


def _p(text: str, style: str = "body") -> Paragraph:
    """A paragraph of plain text."""
    if STYLES[style].fontName != FONT:
        return Paragraph(escape(text).replace("\n", "<br/>"), STYLES[style])
    return Paragraph(_markup(text), STYLES[style])


def _grid(rows: list[list[Any]], widths: list[float]) -> Table:
    table = Table(rows, colWidths=widths)
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, -1), (-1, -1), 0.6, colors.grey),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    return table


def _patient_block(c: ReportContent, width: float) -> Table:
    age = c.age_text or "—"
    birth = c.birth_date_text or "—"
    col = width / 3
    rows = [
        [
            _p(f"姓名：{c.patient_name or '—'}"),
            _p(f"性别：{c.sex_word or '—'}"),
            _p(f"年龄：{age}（出生 {birth}）"),
        ],
        [
            _p(f"检查号：{c.accession or '—'}"),
            _p(f"患者ID：{c.patient_id or '—'}"),
            _p(f"检查类型：{c.modality or '—'}"),
        ],
        [
            _p(f"检查日期：{c.study_date_text or '—'}"),
            _p(f"检查项目：{c.study_description or '—'}", "body"),
            _p(f"送检单位：{c.site_name}（{c.site_code}）"),
        ],
    ]
    return _grid(rows, [col, col, col])


def _section(title: str, text: str) -> list[Flowable]:
    return [_p(title, "heading"), _p(text or "（无）")]


def _critical_box(c: ReportContent, width: float) -> Table | None:
    if not c.critical_results:
        return None
    rows: list[list[Any]] = [[_p("危急值通报 Critical result", "heading")]]
    for note in c.critical_results:
        read_back = "已复述确认" if note.read_back_confirmed else "未复述确认"
        rows.append(
            [
                _p(
                    f"{note.finding}\n"
                    f"通知：{note.communicated_to}，{METHOD_WORDS.get(note.method, note.method)}，"
                    f"{c.local(note.communicated_at)}，{read_back}；记录人：{note.recorded_by}",
                    "critical",
                )
            ]
        )
    box = Table(rows, colWidths=[width])
    box.setStyle(
        TableStyle(
            [
                ("BOX", (0, 0), (-1, -1), 1.6, colors.darkred),
                ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#fdecea")),
                ("LEFTPADDING", (0, 0), (-1, -1), 6),
            ]
        )
    )
    return box


def _addenda(c: ReportContent) -> list[Flowable]:
    if not c.addenda:
        return []
    out: list[Flowable] = [_p("补充报告 Addenda", "heading")]
    for n, note in enumerate(c.addenda, start=1):
        out.append(_p(f"{n}. {note.text}"))
        out.append(
            _p(
                f"原因：{note.reason}；{note.author}，{c.local(note.created_at)}；"
                f"sha256 {note.sha256}",
                "small",
            )
        )
    return out


def _signature_block(
    c: ReportContent, share_url: str | None, share_expires_at: datetime | None, width: float
) -> Table:
    zh, en = c.status_words
    colour = STATUS_COLOURS.get(c.status, colors.black)
    status = Paragraph(
        f'<font color="{colour.hexval()}">{_markup(f"报告状态：{zh} {en}")}</font>',
        STYLES["heading"],
    )
    left = [
        status,
        _p(f"报告医师：{c.signer_name}（{c.signer_username}）"),
        _p(f"签发时间：{c.local(c.signed_at)}（UTC{c.display_offset_hours:+d}）"),
        _p(f"内容校验 sha256：{c.content_sha256}", "small"),
        _p(f"检查实例 UID：{c.study_uid}", "small"),
    ]
    if share_url is None:
        table = Table([[left]], colWidths=[width])
    else:
        left += [
            _p(
                "扫码查看影像与报告"
                + (f"（有效期至 {c.local(share_expires_at)}）：" if share_expires_at else "："),
                "small",
            ),
            _p(share_url, "link"),
        ]
        qr_size = 32 * mm
        table = Table(
            [[left, QRCode(share_url, qr_size)]], colWidths=[width - qr_size - 4, qr_size + 4]
        )
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEABOVE", (0, 0), (-1, 0), 0.8, colors.black),
            ]
        )
    )
    return table


def _watermark(zh: str, en: str) -> Any:
    def draw(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFillColor(colors.Color(0.85, 0.1, 0.1, alpha=0.13))
        width, height = A4
        canvas.translate(width / 2, height / 2)
        canvas.rotate(40)
        canvas.setFont(FONT, 96)
        canvas.drawCentredString(0, 10, zh)
        canvas.setFont(LATIN, 60)
        canvas.drawCentredString(0, -60, en)
        canvas.restoreState()

    return draw


def _footer(c: ReportContent) -> Any:
    def draw(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(FONT, 8)
        canvas.setFillColor(colors.grey)
        canvas.drawString(18 * mm, 10 * mm, f"{c.hospital} · {c.status_words[0]}")
        canvas.setFont(LATIN, 8)
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, f"{doc.page}")
        canvas.restoreState()

    return draw


def render_pdf(
    content: ReportContent, *, share_url: str | None, share_expires_at: datetime | None = None
) -> bytes:
    """The report as PDF bytes; ``share_url`` (if any) goes into the QR code (and is
    printed, with ``share_expires_at``, under it)."""
    buffer = BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=15 * mm,
        bottomMargin=18 * mm,
        title=f"影像诊断报告 {content.accession or content.study_uid}",
        author=content.hospital,
        subject=f"{content.status_words[1]} imaging report",
        creator="teleread",
    )
    width = doc.width
    zh, en = content.status_words
    story: list[Flowable] = [
        _p(content.hospital, "hospital"),
        _p(f"{content.site_name} 远程影像会诊", "site"),
        Spacer(1, 3 * mm),
        _p("影像诊断报告", "title"),
        _p(f"【{zh} {en}】", "status"),
        Spacer(1, 2 * mm),
        _patient_block(content, width),
        *_section("影像所见 Findings", content.findings),
        *_section("诊断意见 Impression", content.impression),
    ]
    if content.recommendation.strip():
        story += _section("建议 Recommendation", content.recommendation)
    box = _critical_box(content, width)
    if box is not None:
        story += [Spacer(1, 4 * mm), box]
    story += _addenda(content)
    story += [
        Spacer(1, 6 * mm),
        KeepTogether([_signature_block(content, share_url, share_expires_at, width)]),
    ]

    footer = _footer(content)
    if content.status == REPORT_PRELIMINARY:
        mark = _watermark(zh, en)

        def on_page(canvas: Any, doc: Any) -> None:
            mark(canvas, doc)
            footer(canvas, doc)

    else:
        on_page = footer
    doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return buffer.getvalue()


__all__ = ["FONT", "render_pdf"]
