"""The API's documentation pages, `/docs` (Swagger UI) and `/redoc`, with nothing from the
internet: a county intranet often has none.

FastAPI's own pages load Swagger UI and ReDoc from a CDN; these are FastAPI's documented
self-hosting recipe ("Custom Docs UI Static Assets": ``get_swagger_ui_html`` and
``get_redoc_html`` pointed at local files), the files being the ones the pinned
``fastapi-offline`` package ships (its ``static/`` folder: Swagger UI's bundle and style,
ReDoc's standalone bundle, an icon), served under ``/docs/assets/``. Each page carries a
Content-Security-Policy that admits this server alone, so no part of either (Swagger UI's
validator badge, ReDoc's attribution logo) reaches outside; the one inline script (Swagger
UI's start) is admitted by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"
OPENAPI_URL = "/openapi.json"

ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
# the files the pages name, and their media types: nothing else under the folder is served
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=3600"}
# Swagger UI's online spec validator is an image from swagger.io: off
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}

router = APIRouter(include_in_schema=False)


def _policy(script_src: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": (
            f"default-src 'self'; script-src {script_src}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
            "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _inline_script_hashes(html: str) -> str:
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in scripts
    )


@cache
def _swagger_page(title: str) -> tuple[bytes, dict[str, str]]:
    page = get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title=f"{title} - Swagger UI",
        oauth2_redirect_url=OAUTH2_REDIRECT_URL,
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
    )
    body = bytes(page.body)
    return body, _policy(f"'self' {_inline_script_hashes(body.decode())}")


@cache
def _redoc_page(title: str) -> bytes:
    page = get_redoc_html(
        openapi_url=OPENAPI_URL,
        title=f"{title} - ReDoc",
        redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    )
    return bytes(page.body)


@router.get(DOCS_URL)
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over ``/openapi.json``."""
    body, headers = _swagger_page(request.app.title)
    return HTMLResponse(body, headers=headers)


@router.get(OAUTH2_REDIRECT_URL)
def swagger_ui_redirect() -> HTMLResponse:
    page = get_swagger_ui_oauth2_redirect_html()
    body = bytes(page.body)
    return HTMLResponse(body, headers=_policy(f"'self' {_inline_script_hashes(body.decode())}"))


@router.get(REDOC_URL)
def redoc(request: Request) -> HTMLResponse:
    """ReDoc over ``/openapi.json``."""
    return HTMLResponse(_redoc_page(request.app.title), headers=_policy("'self'"))


@router.get(ASSETS_URL + "/{name}")
def asset(name: str) -> FileResponse:
    """One of ``ASSETS``."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such file")
    return FileResponse(ASSETS_DIR / name, media_type=media_type, headers=ASSET_HEADERS)


__all__ = ["ASSETS", "ASSETS_URL", "DOCS_URL", "REDOC_URL", "router"]
