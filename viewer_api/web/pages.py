"""Routes of the web pages (``/`` and ``/ui/...``) and their static files (``/ui/static``).

Each page is its body (``pages/<name>.html``) inside one shell (``shell.html``: the head,
the page's script ``static/<name>.js`` and, for the signed-in pages, the header of
``header.html``). The shell's strings are filled once per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from html import escape
from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

WEB_DIR = Path(__file__).resolve().parent
PAGES_DIR = WEB_DIR / "pages"
STATIC_DIR = WEB_DIR / "static"


@dataclass(frozen=True, slots=True)
class Page:
    title: str  # the Chinese title, until the script applies the reader's language
    title_key: str  # its key in static/i18n.js
    header: bool  # the shared header (navigation, who is signed in, language, log-out)


PAGES: dict[str, Page] = {
    "login": Page("登录", "login", header=False),
    "worklist": Page("工作列表", "worklist", header=True),
    "reading": Page("阅片", "title_reading", header=True),
    "clinic": Page("本院检查", "clinic", header=True),
    "print": Page("报告", "title_print", header=False),
    "ops": Page("运营统计", "ops", header=True),
}

# pages load only their own scripts, styles and images, and talk only to this server
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}

router = APIRouter(include_in_schema=False)


@cache
def render_page(name: str) -> str:
    """The whole HTML of page ``name``: its body in the shell."""
    page = PAGES[name]
    header = (WEB_DIR / "header.html").read_text(encoding="utf-8") if page.header else ""
    fields = {
        "{title}": escape(page.title),
        "{title_key}": page.title_key,
        "{page}": name,
        "{header}": header.rstrip("\n"),
        "{body}": (PAGES_DIR / f"{name}.html").read_text(encoding="utf-8").rstrip("\n"),
    }
    html = (WEB_DIR / "shell.html").read_text(encoding="utf-8")
    for marker, value in fields.items():
        html = html.replace(marker, value)
    return html


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/login", status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.get("/ui")
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/login", status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.get("/ui/static/{path:path}")
def static_file(path: str) -> FileResponse:
    """A file under ``static/`` (never outside it)."""
    target = (STATIC_DIR / path).resolve()
    if not target.is_relative_to(STATIC_DIR) or not target.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such file")
    media_type = _MEDIA_TYPES.get(target.suffix)
    return FileResponse(target, media_type=media_type, headers=_SECURITY_HEADERS)


@router.get("/ui/{page}")
def page(page: str) -> HTMLResponse:
    if page not in PAGES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such page")
    return HTMLResponse(render_page(page), headers=_SECURITY_HEADERS)


__all__ = ["CONTENT_SECURITY_POLICY", "PAGES", "PAGES_DIR", "STATIC_DIR", "render_page", "router"]
