"""OHIF, the diagnostic viewer radiologists know, served by teleread itself at ``/ohif/``.

Same origin as the API, so OHIF's DICOMweb requests carry the reader's session cookie: no
proxy, no token in a URL, no CORS. The build is the static ``dist/`` of the npm package
``@ohif/app`` at a pinned version and checksum, installed at set-up time (``./dev``, the
Dockerfile, ``teleread ohif install``), never fetched at run time. Installing rewrites the
build's root paths (``/app.bundle.js``, webpack's public path, the CSS font URLs) for
``/ohif/`` and moves its two inline scripts into a file, so a CSP without
``'unsafe-inline'`` holds. ``app-config.js`` is teleread's own (``ohif-config.js``): its data
source is this server's ``/dicomweb``. Without an installed build ``/ohif/`` answers 404
with how to install it, the pages offer no OHIF button, and the built-in viewer works.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import mimetypes
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from viewer_api.deps import SessionDep, get_current_user
from viewer_api.errors import ApiError, OhifUnavailable
from viewer_api.security import oauth2_scheme

logger = logging.getLogger(__name__)

PACKAGE = "@ohif/app"
VERSION = "3.13.2"
# the registry's dist.integrity of that version (npm view @ohif/app@3.13.2 dist.integrity)
INTEGRITY = (
    "sha512-"
    "WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
)
BASE = "/ohif/"
# written last by ``install``: a directory without it (an interrupted install) is not served
MARKER = ".teleread-ohif"
# the ONNX runtime of OHIF's AI segmentation tools: 136 MB that reading does not use
SKIPPED = ("ort/",)
BOOT_SCRIPT = "teleread-boot.js"
CONFIG_FILE = Path(__file__).resolve().parent / "ohif-config.js"

# OHIF is third-party code, so it gets its own policy: its scripts and workers from this
# server only (WebAssembly codecs need 'wasm-unsafe-eval'), no inline script, no outside
# connections; it may be framed by teleread's own pages
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; "
    "img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; font-src 'self' data:; "
    "connect-src 'self' data: blob:; object-src 'none'; base-uri 'self'; "
    "frame-ancestors 'self'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
}

router = APIRouter(include_in_schema=False)


def default_dir() -> Path:
    """Where ``install`` puts the build and the API looks for it unless told otherwise
    (``TELEREAD_API_OHIF_DIR``): ``viewer_api/web/ohif``."""
    return Path(__file__).resolve().parent / "ohif"


def installed(directory: Path) -> bool:
    """Whether ``directory`` holds a complete install of the pinned version."""
    try:
        return (directory / MARKER).read_text(encoding="utf-8").strip() == VERSION
    except OSError:
        return False


# --- installing ---------------------------------------------------------------------------
def npm_pack(workdir: Path) -> Path:
    """``npm pack @ohif/app@VERSION`` into ``workdir`` (npm's registry settings apply, e.g.
    a mirror in ``.npmrc``); the tarball's path."""
    npm = shutil.which("npm")
    if npm is None:
        raise OhifUnavailable()
    done = subprocess.run(
        [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(workdir)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise OhifUnavailable(f"npm pack {PACKAGE}@{VERSION} failed: {' '.join(tail)}")
    tarballs = sorted(workdir.glob("*.tgz"))
    if len(tarballs) != 1:
        raise OhifUnavailable(f"npm pack left {len(tarballs)} tarballs in {workdir}")
    return tarballs[0]


def check_integrity(tarball: Path, integrity: str = INTEGRITY) -> None:
    """The tarball is the pinned release, byte for byte (``INTEGRITY``)."""
    algorithm, _, expected = integrity.partition("-")
    digest = hashlib.new(algorithm)
    with tarball.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if base64.b64encode(digest.digest()).decode() != expected:
        raise OhifUnavailable(f"{tarball.name} is not {PACKAGE}@{VERSION} (checksum differs)")


def install(dest: Path, tarball: Path | None = None, *, integrity: str = INTEGRITY) -> Path:
    """Install the pinned OHIF build into ``dest`` (replacing what is there) from
    ``tarball`` (a ``npm pack`` of it), else from ``npm pack`` run now; ``dest``. The
    tarball must match ``integrity`` (the pinned release's)."""
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ohif-", dir=dest.parent) as tmp:
        work = Path(tmp)
        source = tarball if tarball is not None else npm_pack(work)
        check_integrity(source, integrity)
        staged = work / "dist"
        _extract_dist(source, staged)
        rewrite_for_base(staged)
        (staged / MARKER).write_text(VERSION + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)
    logger.info("OHIF installed", extra={"action": "ohif_installed", "version": VERSION})
    return dest


def _extract_dist(tarball: Path, staged: Path) -> None:
    """``package/dist/`` of the tarball into ``staged`` (regular files and directories only,
    never outside it), without ``SKIPPED``."""
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive.getmembers():
            path = PurePosixPath(member.name)
            if path.parts[:2] != ("package", "dist") or len(path.parts) < 3:
                continue
            relative = PurePosixPath(*path.parts[2:])
            if ".." in relative.parts or str(relative).startswith(SKIPPED):
                continue
            target = staged.joinpath(*relative.parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                extracted = archive.extractfile(member)
                assert extracted is not None  # a regular file
                with extracted, target.open("wb") as out:
                    shutil.copyfileobj(extracted, out)


_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_PUBLIC_PATH = '__webpack_require__.p = "/";'


def rewrite_for_base(dist: Path) -> None:
    """Make a build made for ``/`` work at ``BASE``: index.html's URLs and its inline
    scripts (moved into ``BOOT_SCRIPT``), webpack's public path in the bundles, and the
    stylesheets' absolute ``url(/...)``."""
    index = dist / "index.html"
    html = index.read_text(encoding="utf-8")
    html = html.replace('src="/', f'src="{BASE}').replace('href="/', f'href="{BASE}')
    found = list(_INLINE_SCRIPT.finditer(html))
    if not found:
        raise OhifUnavailable("the OHIF build's index.html has not the expected form")
    first = found[0].start()
    inline = [m.group(1).replace('PUBLIC_URL="/"', f'PUBLIC_URL="{BASE}"') for m in found]
    boot = f'<script src="{BASE}{BOOT_SCRIPT}"></script>'
    # the first inline script's place takes the boot script, so the order stays the same
    html = _INLINE_SCRIPT.sub(lambda m: boot if m.start() == first else "", html)
    index.write_text(html, encoding="utf-8")
    (dist / BOOT_SCRIPT).write_text(";\n".join(inline) + ";\n", encoding="utf-8")
    for script in dist.rglob("*.js"):
        text = script.read_text(encoding="utf-8", errors="surrogateescape")
        if _PUBLIC_PATH in text:
            text = text.replace(_PUBLIC_PATH, f'__webpack_require__.p = "{BASE}";')
            script.write_text(text, encoding="utf-8", errors="surrogateescape")
    for sheet in dist.rglob("*.css"):
        text = sheet.read_text(encoding="utf-8", errors="surrogateescape")
        if "url(/" in text:
            sheet.write_text(
                text.replace("url(/", f"url({BASE}"), encoding="utf-8", errors="surrogateescape"
            )


# --- serving ------------------------------------------------------------------------------
def ohif_dir(request: Request) -> Path | None:
    """The installed build this app serves, or None."""
    directory: Path | None = request.app.state.ohif_dir
    return directory


_NOT_INSTALLED = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>OHIF</title></head><body><h1>OHIF 未安装 · OHIF is not installed</h1>
<p>本服务器未安装 OHIF 阅片器；内置阅片器可用：<a href="/ui/worklist">工作列表</a>。</p>
<p>This server has no OHIF build. Install it with <code>./dev</code> or
<code>teleread ohif install</code> (needs node and npm, for <code>npm pack</code>);
the built-in viewer works meanwhile: <a href="/ui/worklist">worklist</a>.</p></body></html>
"""


@router.get("/ohif")
def ohif_root() -> RedirectResponse:
    return RedirectResponse(BASE, status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.get("/ohif/app-config.js")
def ohif_config(request: Request) -> Response:
    """teleread's configuration of OHIF (``ohif-config.js``)."""
    if ohif_dir(request) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "OHIF is not installed")
    return FileResponse(
        CONFIG_FILE,
        media_type=_MEDIA_TYPES[".js"],
        headers={**_HEADERS, "Cache-Control": "no-cache"},
    )


@router.get("/ohif/{path:path}")
async def ohif_file(
    path: str,
    request: Request,
    session: SessionDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> Response:
    """A file of the build; any other path is one of OHIF's own pages (its index.html),
    shown to a signed-in user (others log in first and come back here)."""
    directory = ohif_dir(request)
    if directory is None:
        return HTMLResponse(_NOT_INSTALLED, status_code=status.HTTP_404_NOT_FOUND)
    target = (directory / path).resolve()
    if path and target.name != "index.html" and target.is_relative_to(directory):
        if target.is_file():
            media_type = _MEDIA_TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0]
            return FileResponse(
                target,
                media_type=media_type,
                headers={**_HEADERS, "Cache-Control": "public, max-age=86400"},
            )
        if "." in target.name:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "No such file")
    try:
        await get_current_user(request, session, token)
    except ApiError:  # not signed in (or no longer): log in, then come back here
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login = f"/ui/login?next={quote(here, safe='')}"
        return RedirectResponse(login, status_code=status.HTTP_303_SEE_OTHER)
    return FileResponse(
        directory / "index.html",
        media_type=_MEDIA_TYPES[".html"],
        headers={**_HEADERS, "Cache-Control": "no-cache"},
    )


__all__ = [
    "BASE",
    "CONTENT_SECURITY_POLICY",
    "INTEGRITY",
    "MARKER",
    "PACKAGE",
    "VERSION",
    "default_dir",
    "install",
    "installed",
    "rewrite_for_base",
    "router",
]
