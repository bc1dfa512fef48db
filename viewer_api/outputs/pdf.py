"""The report as an A4 PDF, drawn from its ``ReportDocument`` in one embedded CJK font.

Letterhead (hospital, reading centre, title, status), the patient and study block, the
sections, the critical-result calls, the addenda, then the signature with a QR code to the
share link. A preliminary report carries a large diagonal watermark on every page. Every
glyph comes from the one packaged TrueType font (``viewer_api.outputs.fonts``), embedded as a
subset: no font is left for the reader to supply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from viewer_api.outputs.fonts import ReportFont
from viewer_api.outputs.layout import Item, ReportDocument, Section
from viewer_api.outputs.qr import QRCode

STATUS_COLOURS = {
    "preliminary": colors.HexColor("#b36b00"),
    "final": colors.HexColor("#1a5e1a"),
    "amended": colors.HexColor("#1f4e99"),
}
CRITICAL_RED = colors.HexColor("#8b0000")


@dataclass(frozen=True)
class ShareLink:
    """The link a report's QR code carries, and until when it works."""

    url: str
    expires_at: datetime


def _styles(font: str) -> dict[str, ParagraphStyle]:
    base = ParagraphStyle(
        "base", fontName=font, bulletFontName=font, fontSize=10.5, leading=15, wordWrap="CJK"
    )
    return {
        "hospital": ParagraphStyle(
            "hospital", parent=base, fontSize=18, leading=23, alignment=TA_CENTER
        ),
        "centre": ParagraphStyle("centre", parent=base, fontSize=12, alignment=TA_CENTER),
        "title": ParagraphStyle("title", parent=base, fontSize=15, leading=21, alignment=TA_CENTER),
        "status": ParagraphStyle(
            "status", parent=base, fontSize=13, leading=18, alignment=TA_CENTER
        ),
        "heading": ParagraphStyle("heading", parent=base, fontSize=12, leading=18, spaceBefore=6),
        "body": base,
        "small": ParagraphStyle("small", parent=base, fontSize=8, leading=11),
        "link": ParagraphStyle("link", parent=base, fontSize=6.5, leading=8),
        "critical": ParagraphStyle("critical", parent=base, textColor=CRITICAL_RED),
        "critical_heading": ParagraphStyle(
            "critical_heading", parent=base, fontSize=12, leading=18, textColor=CRITICAL_RED
        ),
    }


class _Writer:
    """Paragraphs in the report font, every character one the font has."""

    def __init__(self, font: ReportFont) -> None:
        self.font = font
        self.styles = _styles(font.name)

    def p(self, text: str, style: str = "body", colour: Any = None) -> Paragraph:
        marked = escape(self.font.printable(text)).replace("\n", "<br/>")
        if colour is not None:
            marked = f'<font color="{colour.hexval()}">{marked}</font>'
        return Paragraph(marked, self.styles[style])

    def item(self, doc: ReportDocument, item: Item, style: str = "body") -> Paragraph:
        return self.p(doc.line(item), style)

    def section(self, section: Section, heading_style: str = "heading") -> list[Flowable]:
        body = "critical" if section.key == "critical" else "body"
        heading = self.p(section.heading, heading_style)
        return [heading, *(self.p(t, body) for t in section.paragraphs)]


def _table(rows: list[list[Any]], widths: list[float], font: str, style: list[Any]) -> Table:
    """A table whose cells draw in the report font (reportlab's default is Helvetica, a font
    the PDF would reference without embedding)."""
    table = Table(rows, colWidths=widths)
    table.setStyle(TableStyle([("FONTNAME", (0, 0), (-1, -1), font), *style]))
    return table


def _grid(rows: list[list[Any]], widths: list[float], font: str) -> Table:
    return _table(
        rows,
        widths,
        font,
        [
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LINEBELOW", (0, -1), (-1, -1), 0.6, colors.grey),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
            ("TOPPADDING", (0, 0), (-1, -1), 2),
        ],
    )


def _patient_block(w: _Writer, doc: ReportDocument, width: float) -> Table:
    cells = [w.item(doc, i) for i in doc.patient]
    columns = 3
    rows = [cells[n : n + columns] for n in range(0, len(cells), columns)]
    rows[-1] += [Spacer(0, 0) for _ in range(columns - len(rows[-1]))]
    return _grid(rows, [width / columns] * columns, w.font.name)


def _critical_box(w: _Writer, doc: ReportDocument, width: float) -> Table:
    rows: list[list[Any]] = [[w.section(s, "critical_heading")] for s in doc.critical]
    return _table(
        rows,
        [width],
        w.font.name,
        [
            ("BOX", (0, 0), (-1, -1), 1.6, CRITICAL_RED),
            ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#fdecea")),
            ("LEFTPADDING", (0, 0), (-1, -1), 6),
        ],
    )


def _signature_block(
    w: _Writer, doc: ReportDocument, share: ShareLink | None, offset: int, width: float
) -> Table:
    left: list[Flowable] = [
        w.item(doc, i, "small" if i.key == "checksum" else "body") for i in doc.signature
    ]
    if share is None:
        cells: list[Any] = [left]
        widths = [width]
    else:
        left += [
            w.p(doc.share_caption(share.expires_at, offset), "small"),
            w.p(share.url, "link"),
        ]
        qr_size = 32 * mm
        cells = [left, QRCode(share.url, qr_size)]
        widths = [width - qr_size - 4, qr_size + 4]
    return _table(
        [cells],
        widths,
        w.font.name,
        [("VALIGN", (0, 0), (-1, -1), "TOP"), ("LINEABOVE", (0, 0), (-1, 0), 0.8, colors.black)],
    )


def _on_page(w: _Writer, doc: ReportDocument) -> Any:
    watermark = doc.watermark

    def draw(canvas: Any, template: Any) -> None:
        canvas.saveState()
        if watermark:
            canvas.setFillColor(colors.Color(0.85, 0.1, 0.1, alpha=0.13))
            width, height = A4
            canvas.translate(width / 2, height / 2)
            canvas.rotate(40)
            canvas.setFont(w.font.name, 80 if doc.lang == "zh-CN" else 56)
            canvas.drawCentredString(0, 0, w.font.printable(watermark))
            canvas.restoreState()
            canvas.saveState()
        canvas.setFont(w.font.name, 8)
        canvas.setFillColor(colors.grey)
        canvas.drawString(18 * mm, 10 * mm, w.font.printable(doc.footer))
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, f"{template.page}")
        canvas.restoreState()

    return draw


def render_pdf(
    doc: ReportDocument, *, font: ReportFont, share: ShareLink | None, offset_hours: int = 8
) -> bytes:
    """The report as PDF bytes; ``share`` (if any) is printed with its QR code."""
    w = _Writer(font)
    buffer = BytesIO()
    template = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=15 * mm,
        bottomMargin=18 * mm,
        title=f"{doc.title} {doc.status_label}",
        author=doc.hospital,
        subject=doc.status_label,
        creator="teleread",
        lang=doc.lang,
        # the page's initial font is the report's: no unembedded standard font is referenced
        initialFontName=font.name,
    )
    width = template.width
    colour = STATUS_COLOURS.get(doc.status, colors.black)
    story: list[Flowable] = [
        w.p(doc.hospital, "hospital"),
        w.p(doc.centre, "centre"),
        Spacer(1, 3 * mm),
        w.p(doc.title, "title"),
        w.p(doc.status_label, "status", colour),
        Spacer(1, 2 * mm),
        _patient_block(w, doc, width),
    ]
    for section in doc.sections:
        story += w.section(section)
    if doc.critical:
        story += [Spacer(1, 4 * mm), _critical_box(w, doc, width)]
    for section in doc.addenda:
        story += w.section(section)
    story += [
        Spacer(1, 6 * mm),
        KeepTogether([_signature_block(w, doc, share, offset_hours, width)]),
    ]
    on_page = _on_page(w, doc)
    template.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return buffer.getvalue()


__all__ = ["ShareLink", "render_pdf"]
