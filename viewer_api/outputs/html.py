"""The report as an HTML fragment (screen and print), drawn from its ``ReportDocument``.

The clinic's print view and the share page show this fragment; its look is
``web/static/report.css`` (print rules included). Every value is escaped; the fragment has
no scripts, inline styles or outside references, so it fits the pages' strict CSP.
"""

from __future__ import annotations

from html import escape

from viewer_api.outputs.layout import Item, ReportDocument, Section


def _item(doc: ReportDocument, item: Item) -> str:
    return (
        f'<div class="rd-item" data-key="{escape(item.key)}">'
        f'<span class="rd-label">{escape(item.label)}</span>'
        f'<span class="rd-colon">{escape(doc.colon)}</span>'
        f'<span class="rd-value">{escape(item.value)}</span></div>'
    )


def _section(section: Section, css: str = "rd-section") -> str:
    paragraphs = "".join(f'<p class="rd-text">{escape(t)}</p>' for t in section.paragraphs)
    return (
        f'<section class="{css}" data-key="{escape(section.key)}">'
        f"<h3>{escape(section.heading)}</h3>{paragraphs}</section>"
    )


def render_html(doc: ReportDocument) -> str:
    """The report as one ``<article class="report-doc">`` element."""
    watermark = f' data-watermark="{escape(doc.watermark)}"' if doc.watermark else ""
    parts = [
        f'<article class="report-doc {escape(doc.status)}" lang="{doc.lang}"{watermark}>',
        '<header class="rd-head">',
        f'<h1 class="rd-hospital">{escape(doc.hospital)}</h1>',
        f'<p class="rd-centre">{escape(doc.centre)}</p>',
        f'<h2 class="rd-title">{escape(doc.title)}</h2>',
        f'<p class="rd-status {escape(doc.status)}">{escape(doc.status_label)}</p>',
        "</header>",
        '<div class="rd-patient">',
        *(_item(doc, i) for i in doc.patient),
        "</div>",
        *(_section(s) for s in doc.sections),
        *(_section(s, "rd-section rd-critical") for s in doc.critical),
        *(_section(s, "rd-section rd-addendum") for s in doc.addenda),
        '<footer class="rd-sign">',
        *(_item(doc, i) for i in doc.signature),
        "</footer>",
        f'<p class="rd-footer">{escape(doc.footer)}</p>',
        "</article>",
    ]
    return "\n".join(parts)


__all__ = ["render_html"]
