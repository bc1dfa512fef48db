"""``GET /metrics`` on the county API: who may scrape, the request figures (route templates,
never UIDs), and the worklist figures read from a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Message, Receive, Scope, Send

from tests.integration.test_api_world import Study, World, build_world
from viewer_api.metrics import CONTENT_TYPE, HttpMetrics, RequestMetrics
from viewer_api.metrics.http_requests import UNMATCHED
from worklist.db import make_engine, make_sessionmaker, upgrade

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette 1.x warns when it falls back to httpx
    from fastapi.testclient import TestClient

METRICS_TOKEN = "scrape-token-0123456789abcdef"
LOOPBACK = ("127.0.0.1", 40000)
# one sample: name{labels} value
SAMPLE = re.compile(r'[a-z_]+(\{([a-z_]+="[^"\\\n]*",?)*\})? -?[0-9.e+-]+|[a-z_]+\{.*\} \+?Inf')


@pytest.fixture
def sqlite_factory(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    upgrade(url)
    return make_sessionmaker(make_engine(url))


@pytest.fixture
def world(sqlite_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(sqlite_factory, tmp_path)


@pytest.fixture
def token_world(sqlite_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(sqlite_factory, tmp_path, metrics_token=METRICS_TOKEN)


def _loopback(world: World) -> TestClient:
    """A second client on the same app whose requests come from 127.0.0.1."""
    return TestClient(world.client.app, client=LOOPBACK)


def sample(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^teleread_api_{name}{re.escape(labels)} (\S+)$", text, re.M)
    assert m, f"{name}{labels} missing"
    return float(m.group(1))


def scrape(world: World) -> str:
    r = world.get("boss", "/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == CONTENT_TYPE
    return r.text


def test_who_may_scrape_without_a_metrics_token(world: World) -> None:
    r = world.get(None, "/metrics")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert world.get("dr_li", "/metrics").status_code == 403
    assert world.get("nurse_ts01", "/metrics").status_code == 403
    assert world.get("gw_ts01", "/metrics").status_code == 403
    assert world.get("boss", "/metrics").status_code == 200
    bad = world.client.get("/metrics", headers={"Authorization": "Bearer not-a-jwt"})
    assert bad.status_code == 401
    # a loopback address is no credential: a local proxy or any local process has one
    local = _loopback(world)
    assert local.get("/metrics").status_code == 401
    assert local.get("/metrics", headers=world.headers("nurse_ts01")).status_code == 403
    assert local.get("/metrics", headers={"Authorization": "Bearer anything"}).status_code == 401
    assert local.get("/metrics", headers=world.headers("boss")).status_code == 200
    # the endpoint is not part of the API's schema (it is not JSON, and not for clients)
    assert "/metrics" not in world.client.get("/openapi.json").json()["paths"]


def test_who_may_scrape_with_a_metrics_token(token_world: World) -> None:
    w = token_world
    local = _loopback(w)
    assert local.get("/metrics").status_code == 401  # loopback alone is no longer enough
    for client in (local, w.client):
        ok = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert ok.status_code == 200
        wrong = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}x"})
        assert wrong.status_code == 401
    assert w.get("boss", "/metrics").status_code == 200
    assert w.get("dr_li", "/metrics").status_code == 403


def test_request_figures_by_route_template(world: World) -> None:
    study = Study("TS01", "DX", "胸部正位", patient_name="李^四")
    assert world.announce(study).status_code == 200
    for _ in range(3):
        assert world.get("dr_li", f"/api/v1/studies/{study.uid}").status_code == 200
    assert world.get("dr_li", "/api/v1/studies/1.2.3.4").status_code == 404
    assert world.get("dr_li", "/no/such/page").status_code == 404
    big = world.post("gw_ts01", "/api/v1/ingest/instances", content=b"x" * (17 * 1024 * 1024))
    assert big.status_code == 413
    text = scrape(world)

    # UIDs and patient data never appear: only route templates
    assert study.uid not in text and study.series_uid not in text and "李" not in text
    route = "/api/v1/studies/{study_uid}"
    ok = f'{{method="GET",route="{route}",status="2xx"}}'
    assert sample(text, "http_requests_total", ok) == 3
    assert sample(text, "http_requests_total", f'{{method="GET",route="{route}",status="4xx"}}')
    assert sample(text, "http_requests_total", f'{{method="GET",route="{UNMATCHED}",status="4xx"}}')
    ingest = '{method="POST",route="/api/v1/ingest/instances",status="2xx"}'
    assert sample(text, "http_requests_total", ingest) == 1
    # the 413 is answered before routing, by the body-size limit inside this middleware
    too_big = f'{{method="POST",route="{UNMATCHED}",status="4xx"}}'
    assert sample(text, "http_requests_total", too_big) == 1

    # the histogram: cumulative buckets, +Inf equals the count, a plausible sum
    buckets = [
        float(v)
        for v in re.findall(
            rf'^teleread_api_http_request_duration_seconds_bucket\{{le="[^"]+",'
            rf'method="GET",route="{re.escape(route)}",status="2xx"\}} (\S+)$',
            text,
            re.M,
        )
    ]
    assert len(buckets) == 15 and buckets == sorted(buckets) and buckets[-1] == 3
    assert sample(text, "http_request_duration_seconds_count", ok) == 3
    assert 0 < sample(text, "http_request_duration_seconds_sum", ok) < 30

    # the exposition format: HELP and TYPE once per family, every sample line parses
    families = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    assert len(families) == len({name for name, _ in families})
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or SAMPLE.fullmatch(line)
    assert text.endswith("\n")


def test_database_figures_are_cached(world: World) -> None:
    state = world.client.app.state.metrics  # type: ignore[attr-defined]
    state.cache_seconds = 3600.0
    assert sample(scrape(world), "studies_ingested_total") == 0
    world.announce(Study("TS01", "DX", "胸部正位"))
    assert sample(scrape(world), "studies_ingested_total") == 0  # from the cache
    state.cache_seconds = 0.0
    assert sample(scrape(world), "studies_ingested_total") == 1


def test_database_down_still_answers(token_world: World, tmp_path: Path) -> None:
    world = token_world
    app = world.client.app
    broken = make_sessionmaker(make_engine(f"sqlite:///{tmp_path / 'not-migrated.db'}"))
    good = app.state.session_factory  # type: ignore[attr-defined]
    state = app.state.metrics  # type: ignore[attr-defined]
    state.cache_seconds = 0.0
    # the metrics token: no account lookup, the scrape itself must not need the DB
    scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    app.state.session_factory = broken  # type: ignore[attr-defined]
    try:
        r = world.client.get("/metrics", headers=scraper)
    finally:
        app.state.session_factory = good  # type: ignore[attr-defined]
    assert r.status_code == 200
    assert sample(r.text, "database_up") == 0
    assert "worklist_open_studies" not in r.text
    assert sample(world.client.get("/metrics", headers=scraper).text, "database_up") == 1


@pytest.fixture
def db_world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


def test_worklist_figures(db_world: World) -> None:
    """Depth by category and priority, deadline breaches, the oldest waiting urgent study,
    claims, ingest totals and late finalisations, on SQLite and PostgreSQL."""
    w = db_world
    w.client.app.state.metrics.cache_seconds = 0.0  # type: ignore[attr-defined]
    w.client.app.state.metrics.late_cache_seconds = 0.0  # type: ignore[attr-defined]
    stroke = Study("TS01", "CT", "头颅CT平扫 急性脑卒中", patient_name="王^小明")
    dx = Study("TS01", "DX", "胸部正位 体检", count=1)
    other = Study("TS02", "CT", "腹部CT", count=1)
    assert w.announce(stroke).status_code == 200
    w.clock.tick(30)
    assert w.announce(dx).status_code == 200
    assert w.announce(other, gateway="gw_all").status_code == 200

    text = scrape(w)
    assert sample(text, "database_up") == 1
    assert sample(text, "worklist_open_studies", '{category="stroke",priority="stat"}') == 1
    assert sample(text, "worklist_open_studies", '{category="routine",priority="routine"}') == 2
    assert sample(text, "worklist_open_studies", '{category="chest_pain",priority="stat"}') == 0
    assert sample(text, "worklist_past_deadline_studies", '{category="stroke"}') == 0
    assert sample(text, "oldest_unclaimed_urgent_study_age_seconds") == 30
    assert sample(text, "oldest_open_urgent_study_age_seconds") == 30
    assert sample(text, "claims_active") == 0
    assert sample(text, "studies_ingested_total") == 3
    assert sample(text, "instances_ingested_total") == 4
    assert sample(text, "studies_finalised_late_total", '{category="routine"}') == 0
    assert "王" not in text and stroke.uid not in text

    # past the stroke deadline (20 minutes); a reader takes the stroke study
    w.clock.tick(20 * 60)
    assert w.post("dr_li", f"/api/v1/worklist/{stroke.uid}/claim").status_code == 200
    text = scrape(w)
    assert sample(text, "worklist_past_deadline_studies", '{category="stroke"}') == 1
    assert sample(text, "worklist_past_deadline_studies", '{category="routine"}') == 0
    assert sample(text, "oldest_unclaimed_urgent_study_age_seconds") == 0  # it is claimed
    assert sample(text, "oldest_open_urgent_study_age_seconds") == 30 + 20 * 60
    assert sample(text, "claims_active") == 1

    # the routine DR read a day late (its deadline is 24 h): one late finalisation
    w.clock.tick(24 * 3600)
    assert w.post("dr_wang", f"/api/v1/worklist/{dx.uid}/claim").status_code == 200
    url = f"/api/v1/studies/{dx.uid}/report"
    assert w.put("dr_wang", url, json={"findings": "未见异常", "impression": "正常"}).is_success
    assert w.post("dr_wang", f"{url}/sign", json={"status": "final"}).status_code == 200
    text = scrape(w)
    assert sample(text, "studies_finalised_late_total", '{category="routine"}') == 1
    assert sample(text, "studies_finalised_late_total", '{category="stroke"}') == 0
    assert sample(text, "worklist_open_studies", '{category="routine",priority="routine"}') == 1
    assert sample(text, "worklist_past_deadline_studies", '{category="routine"}') == 1  # TS02
    assert sample(text, "claims_active") == 1


def test_an_event_stream_is_timed_to_its_first_byte() -> None:
    """An open stream would otherwise sit in the +Inf bucket for hours."""

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await asyncio.sleep(0.3)  # the stream stays open
        await send({"type": "http.response.body", "body": b"data: x\n\n"})

    async def crash(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("handler bug")

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        pass

    registry = CollectorRegistry()
    metrics = HttpMetrics(registry)
    scope: dict[str, object] = {"type": "http", "method": "GET", "headers": []}
    asyncio.run(RequestMetrics(stream, metrics=metrics)(scope, receive, send))
    with pytest.raises(RuntimeError):
        asyncio.run(RequestMetrics(crash, metrics=metrics)(dict(scope), receive, send))
    text = generate_latest(registry).decode()
    ok = f'{{method="GET",route="{UNMATCHED}",status="2xx"}}'
    assert sample(text, "http_request_duration_seconds_sum", ok) < 0.2
    failed = f'{{method="GET",route="{UNMATCHED}",status="5xx"}}'
    assert sample(text, "http_requests_total", failed) == 1
