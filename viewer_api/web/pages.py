"""Routes of the web pages (``/`` and ``/ui/...``) and their static files (``/ui/static``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, RedirectResponse

WEB_DIR = Path(__file__).resolve().parent
PAGES_DIR = WEB_DIR / "pages"
STATIC_DIR = WEB_DIR / "static"

# URL name -> HTML file; each page's script is static/<name>.js
PAGES = ("login", "worklist", "reading", "clinic", "print", "ops")

# pages load only their own scripts, styles and images, and talk only to this server
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
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
def page(page: str) -> FileResponse:
    if page not in PAGES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such page")
    return FileResponse(
        PAGES_DIR / f"{page}.html", media_type=_MEDIA_TYPES[".html"], headers=_SECURITY_HEADERS
    )


__all__ = ["PAGES", "PAGES_DIR", "STATIC_DIR", "router"]
