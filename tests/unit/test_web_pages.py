"""The web pages' routes and files: every page is served with its security headers, every
script and string it names exists, and nothing outside static/ can be fetched."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from viewer_api.web import PAGES, router
from viewer_api.web.pages import PAGES_DIR, STATIC_DIR, WEB_DIR

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

MAX_LINE = 100


def _node() -> str | None:
    return shutil.which("node")


def _app() -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    return app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(_app())


def test_root_redirects_to_login(client: TestClient) -> None:
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui/login"
    assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/login"


@pytest.mark.parametrize("page", PAGES)
def test_each_page_is_served_with_its_script(client: TestClient, page: str) -> None:
    r = client.get(f"/ui/{page}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert f'src="/ui/static/{page}.js"' in r.text
    js = client.get(f"/ui/static/{page}.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert client.get("/ui/static/app.css").headers["content-type"].startswith("text/css")


def test_unknown_pages_and_paths_outside_static_are_404(client: TestClient) -> None:
    assert client.get("/ui/nope").status_code == 404
    assert client.get("/ui/static/nope.js").status_code == 404
    for path in (
        "/ui/static/../pages.py",
        "/ui/static/%2e%2e/pages.py",
        "/ui/static/..%2F__init__.py",
    ):
        assert client.get(path).status_code == 404, path
    assert client.get("/ui/static/").status_code == 404


def test_pages_share_one_shell() -> None:
    """Every page has the one head; the signed-in pages the one header, the others none."""
    client = TestClient(_app())
    for name, page in PAGES.items():
        text = client.get(f"/ui/{name}").text
        assert text.count("<head>") == 1 and text.count('rel="stylesheet"') == 1, name
        assert f'<body class="page-{name}" data-title="{page.title_key}">' in text, name
        assert text.count('id="logout"') == (1 if page.header else 0), name
        assert text.count('id="lang-toggle"') == 1, name
    for html in PAGES_DIR.glob("*.html"):
        assert "<head>" not in html.read_text(encoding="utf-8"), f"{html.name} is a body"


def test_web_files_have_short_lines() -> None:
    files = [*PAGES_DIR.glob("*.html"), *WEB_DIR.glob("*.html"), *STATIC_DIR.iterdir()]
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert len(line) <= MAX_LINE, f"{path.name}:{number} has {len(line)} characters"


def test_pages_load_nothing_from_outside_and_no_inline_code() -> None:
    for html in [*PAGES_DIR.glob("*.html"), *WEB_DIR.glob("*.html")]:
        text = html.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text, html.name
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), f"inline script in {html.name}"
        assert " style=" not in text and " on" + "click=" not in text, html.name
    for js in STATIC_DIR.glob("*.js"):
        text = js.read_text(encoding="utf-8")
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), js.name


def _strings() -> dict[str, list[str]]:
    """i18n.js's table: key -> [Chinese, English], read with node."""
    script = (
        "const s = require('fs').readFileSync(process.argv[1], 'utf8');"
        "const body = s.slice(s.indexOf('{', s.indexOf('const STRINGS')), s.indexOf('\\n};') + 2);"
        "process.stdout.write(JSON.stringify(eval('(' + body + ')')));"
    )
    done = subprocess.run(
        [str(_node()), "-e", script, str(STATIC_DIR / "i18n.js")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    table: dict[str, list[str]] = json.loads(done.stdout)
    return table


@pytest.mark.skipif(_node() is None, reason="node is not installed (reads i18n.js)")
def test_every_string_has_both_languages() -> None:
    strings = _strings()
    assert len(strings) > 100
    for key, pair in strings.items():
        assert len(pair) == 2 and all(isinstance(v, str) and v for v in pair), key


@pytest.mark.skipif(_node() is None, reason="node is not installed (reads i18n.js)")
def test_every_string_the_pages_use_exists() -> None:
    known = set(_strings())
    used: set[str] = {page.title_key for page in PAGES.values()}
    for html in [*PAGES_DIR.glob("*.html"), *WEB_DIR.glob("*.html")]:
        used |= set(re.findall(r'data-i18n="([a-z_0-9]+)"', html.read_text(encoding="utf-8")))
    for js in STATIC_DIR.glob("*.js"):
        used |= set(re.findall(r'\bt\("([a-z_0-9]+)"\)', js.read_text(encoding="utf-8")))
    assert used, "no strings found"
    assert used <= known, sorted(used - known)


def test_module_imports_resolve() -> None:
    for js in STATIC_DIR.glob("*.js"):
        for target in re.findall(r'from "\./([\w.]+)"', js.read_text(encoding="utf-8")):
            assert (STATIC_DIR / target).is_file(), f"{js.name} imports {target}"


@pytest.mark.skipif(_node() is None, reason="node is not installed (JS syntax check)")
def test_scripts_parse() -> None:
    for js in sorted(STATIC_DIR.glob("*.js")):
        done = subprocess.run(
            [str(_node()), "--check", "--input-type=module"],
            input=js.read_text(encoding="utf-8"),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, f"{js.name}: {done.stderr}"


def test_static_files_ship_in_the_package() -> None:
    """pyproject's package-data glob ("web/**/*") covers the nested pages/ and static/."""
    import viewer_api

    root = Path(viewer_api.__file__).parent / "web"
    assert (root / "pages" / "login.html").is_file()
    assert (root / "static" / "viewer.js").is_file()
