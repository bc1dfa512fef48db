"""The API's documentation pages work on an intranet with no internet: `/docs` (Swagger UI)
and `/redoc` name only same-origin scripts, styles and icons, each of which loads from a
real county API, and headless Chromium, refused every request that leaves the server,
renders the operations (what else a page asks for, ReDoc's attribution logo, its own
Content-Security-Policy stops inside the browser)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.acceptance.conftest import Pipeline
from tests.acceptance.test_browser_reading_room import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

try:
    from playwright.sync_api import Browser, Request, Route, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

TIMEOUT_MS = 30_000
BROWSER = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright (PyPI) is not installed"),
    pytest.mark.skipif(
        not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)),
        reason=f"chromium not found at {CHROMIUM} (apt-get install -y chromium)",
    ),
]


class _Assets(HTMLParser):
    """Every URL a page loads by itself: script src, link href (styles, icons), img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        name = {"script": "src", "link": "href", "img": "src"}.get(tag)
        if name and found.get(name):
            self.urls.append(str(found[name]))


def page_assets(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    return parser.urls


@pytest.fixture(scope="module")
def api(shared_pipeline: Pipeline) -> str:
    """The county API (the docs need no data: the shared pipeline's, the app `teleread api`
    serves too), its base URL."""
    return shared_pipeline.base_url


@pytest.mark.parametrize(
    ("page", "kinds"),
    [
        ("/docs", {"javascript", "css", "png"}),
        ("/redoc", {"javascript", "png"}),
    ],
)
def test_a_docs_page_names_only_same_origin_assets_and_each_loads(
    api: str, page: str, kinds: set[str]
) -> None:
    with httpx.Client(base_url=api, timeout=30) as client:
        r = client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assets = page_assets(r.text)
        assert assets, f"{page} names no script or style"
        origin = urlsplit(api)
        seen: set[str] = set()
        for url in assets:
            absolute = urlsplit(urljoin(api + page, url))
            assert (absolute.scheme, absolute.netloc) == (origin.scheme, origin.netloc), (
                f"{page} loads {url} from another origin"
            )
            got = client.get(absolute.path)
            assert got.status_code == 200 and got.content, f"{url}: {got.status_code}"
            seen.update(k for k in kinds if k in got.headers["content-type"])
        assert seen == kinds, f"{page} assets: {assets}"
        # the schema the page reads is the server's own as well
        assert client.get("/openapi.json").status_code == 200


@pytest.fixture(scope="module")
def browser(api: str) -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.mark.parametrize(
    ("page", "rendered"),
    [
        # Swagger UI: one block per operation, the log-in's among them
        ("/docs", ".swagger-ui .opblock-summary-path[data-path='/api/v1/auth/token']"),
        # ReDoc: the operations menu, the log-in's among them
        ("/redoc", "[data-item-id*='auth']"),
    ],
)
@BROWSER[0]
@BROWSER[1]
def test_a_docs_page_renders_with_everything_but_the_server_blocked(
    api: str, browser: Browser, page: str, rendered: str
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    blocked: list[str] = []  # outside requests that left the page (refused here)
    failed: list[tuple[str, str | None]] = []
    origin = api + "/"

    def only_the_server(route: Route) -> None:
        if route.request.url.startswith(origin):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    def on_failed(request: Request) -> None:
        failed.append((request.url, request.failure))

    context.route("**/*", only_the_server)
    try:
        tab = context.new_page()
        tab.on("requestfailed", on_failed)
        tab.goto(api + page)
        tab.wait_for_selector(rendered, state="attached", timeout=TIMEOUT_MS)
        tab.screenshot(path=str(ARTIFACTS / f"docs{page.replace('/', '-')}.png"))
    finally:
        context.close()
    assert blocked == [], f"{page} asked for outside addresses: {blocked}"
    # the server's own files all loaded; anything else was stopped by the page's own
    # Content-Security-Policy before it left the browser (ReDoc's attribution logo)
    own = [(url, why) for url, why in failed if url.startswith(origin)]
    assert own == [], f"{page}: the server's files that failed: {own}"
    assert all(why == "csp" for _, why in failed), failed
