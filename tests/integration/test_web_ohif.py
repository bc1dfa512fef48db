"""OHIF at /ohif/: installing a build (checked against its pinned checksum, rewritten for
/ohif/, without inline scripts), serving it to signed-in readers (others log in first), and
what a server without it answers."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_api_world import World, build_world
from viewer_api.errors import OhifUnavailable
from viewer_api.web import ohif

INDEX = (
    '<!doctype html><html><head><meta charset="UTF-8">'
    '<script>console.time("scriptToView"),window.PUBLIC_URL="/"</script>'
    '<link rel="manifest" href="/manifest.json"><script src="/app-config.js"></script>'
    '<script>function browserImportFunction(n){return import(n)}window.PUBLIC_URL="/"</script>'
    '<script defer src="/app.bundle.abc.js"></script><link href="/app.bundle.css" '
    'rel="stylesheet"></head><body><div id="root"></div></body></html>'
)
FILES = {
    "package/package.json": b"{}",
    "package/dist/index.html": INDEX.encode(),
    "package/dist/app-config.js": b"window.config = {};",
    "package/dist/app.bundle.abc.js": b'var x; __webpack_require__.p = "/"; x = 1;',
    "package/dist/app.bundle.css": b"@font-face{src:url(/f.woff2)}",
    "package/dist/f.woff2": b"font",
    "package/dist/ort/huge.wasm": b"\0asm",
    "package/dist/../escape.txt": b"no",
}


def _tarball(path: Path) -> tuple[Path, str]:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in FILES.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    digest = hashlib.sha512(path.read_bytes()).digest()
    return path, "sha512-" + base64.b64encode(digest).decode()


@pytest.fixture
def build(tmp_path: Path) -> Path:
    tarball, integrity = _tarball(tmp_path / "app.tgz")
    return ohif.install(tmp_path / "ohif", tarball, integrity=integrity)


def test_install_rewrites_the_build_for_its_path(build: Path, tmp_path: Path) -> None:
    assert ohif.installed(build)
    index = (build / "index.html").read_text()
    assert "<script>" not in index, "no inline script is left"
    assert '<script src="/ohif/teleread-boot.js"></script>' in index
    assert index.index("teleread-boot.js") < index.index("app-config.js"), "order kept"
    assert 'src="/ohif/app.bundle.abc.js"' in index and 'href="/ohif/manifest.json"' in index
    boot = (build / "teleread-boot.js").read_text()
    assert 'window.PUBLIC_URL="/ohif/"' in boot and "browserImportFunction" in boot
    assert '__webpack_require__.p = "/ohif/"' in (build / "app.bundle.abc.js").read_text()
    assert "url(/ohif/f.woff2)" in (build / "app.bundle.css").read_text()
    assert not (build / "ort").exists() and not (tmp_path / "escape.txt").exists()


def test_install_refuses_a_tarball_that_is_not_the_pinned_release(tmp_path: Path) -> None:
    tarball, _ = _tarball(tmp_path / "app.tgz")
    with pytest.raises(OhifUnavailable, match="checksum"):
        ohif.install(tmp_path / "ohif", tarball)
    assert not (tmp_path / "ohif").exists()


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path, build: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path, ohif_dir=build)


def test_ohif_is_served_to_signed_in_readers(world: World) -> None:
    r = world.get(None, "/ohif/viewer?StudyInstanceUIDs=1.2.3", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?next=%2Fohif%2Fviewer%3FStudyInstanceUIDs%3D1.2.3"
    for path in ("/ohif/", "/ohif/viewer?StudyInstanceUIDs=1.2.3", "/ohif/index.html"):
        page = world.get("dr_li", path)
        assert page.status_code == 200 and "teleread-boot.js" in page.text, path
        csp = page.headers["content-security-policy"]
        assert "script-src 'self' 'wasm-unsafe-eval';" in csp and "unsafe-inline'; font" in csp
    config = world.get(None, "/ohif/app-config.js")
    assert config.status_code == 200 and "/dicomweb" in config.text
    assert config.headers["content-type"].startswith("text/javascript")
    bundle = world.get(None, "/ohif/app.bundle.abc.js")
    assert bundle.status_code == 200 and bundle.headers["content-type"].startswith("text/java")
    assert world.get(None, "/ohif/f.woff2").headers["content-type"] == "font/woff2"
    assert world.get(None, "/ohif/missing.js").status_code == 404
    assert world.get(None, "/ohif/../../pyproject.toml").status_code == 404
    assert world.get(None, "/ohif", follow_redirects=False).headers["location"] == "/ohif/"
    assert "ohif" in world.get("dr_li", "/api/v1/auth/session").json()["capabilities"]
    assert "ohif" in world.get("nurse_ts01", "/api/v1/auth/session").json()["capabilities"]
    assert "ohif" not in world.get("gw_ts01", "/api/v1/auth/session").json()["capabilities"]


def test_a_server_without_ohif_says_how_to_install_it(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    for world in build_world(session_factory, tmp_path, ohif_dir=tmp_path / "none"):
        r = world.get("dr_li", "/ohif/")
        assert r.status_code == 404 and "teleread ohif install" in r.text
        assert world.get(None, "/ohif/app-config.js").status_code == 404
        assert "ohif" not in world.get("dr_li", "/api/v1/auth/session").json()["capabilities"]


def test_the_docker_image_installs_the_pinned_version() -> None:
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    assert f"npm pack {ohif.PACKAGE}@{ohif.VERSION}" in dockerfile
    assert f"teleread ohif install --tarball /tmp/ohif-app-{ohif.VERSION}.tgz" in dockerfile
