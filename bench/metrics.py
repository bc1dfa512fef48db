"""What monitoring costs: the county API's ``/metrics`` scrape at scale, and the request
middleware's overhead.

    .venv/bin/python bench/metrics.py                        # 1,000,000 studies, embedded PG
    .venv/bin/python bench/metrics.py --studies 100000
    .venv/bin/python bench/metrics.py --overhead-only         # middleware overhead alone

Scrape: fills PostgreSQL like ``bench/worklist.py`` (40 sites, ~1 % of studies open, ~5 %
urgent) and gives every final/amended study a signed report (some signed after the deadline),
then times ``worklist.metrics_queries.worklist_figures`` (the per-scrape aggregates),
``finalised_late`` (the join, cached five minutes), and a whole ``GET /metrics`` through the
app with its cache off (every scrape reads the database: the worst case) and on.

Overhead: the ``RequestMetrics`` middleware around a trivial ASGI app, called directly
(microseconds of bookkeeping per request); then a real uvicorn serving ``create_app`` on
loopback over SQLite, ``GET /api/v1/worklist`` as a radiologist on one keep-alive connection,
with and without the middleware, in alternating blocks: p50 of each.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psycopg
import uvicorn
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.engine import make_url

from bench.worklist import NOW, fill, postgres
from storage import FilesystemStore
from viewer_api.main import create_app
from viewer_api.metrics import HttpMetrics, RequestMetrics
from viewer_api.security import create_access_token
from viewer_api.settings import ApiSettings
from worklist.accounts import create_site
from worklist.db import make_engine, make_sessionmaker, upgrade, utcnow
from worklist.metrics_queries import finalised_late, worklist_figures
from worklist.models import User

SECRET = "bench-secret-key-0123456789-abcdefghijklmnop"
METRICS_TOKEN = "bench-metrics-token"
REPORTS_SQL = """
INSERT INTO reports (study_id, author_id, status, findings, impression, recommendation,
                     created_at, updated_at, signed_by_id, signed_at, content_sha256)
SELECT s.id, %(author)s, CASE WHEN s.status = 'amended' THEN 'amended' ELSE 'final' END,
       '', '', '', s.received_at, s.received_at, %(author)s,
       s.received_at + (s.deadline_at - s.received_at) * (0.2 + random() * 1.1),
       md5(s.id::text) || md5(s.id::text)
FROM studies s WHERE s.status IN ('final', 'amended')
"""


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    """p50 and p95 in milliseconds (after one warm-up call)."""
    fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def add_reports(url: str) -> tuple[int, float]:
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    started = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        author = conn.execute("SELECT min(id) FROM users WHERE role = 'radiologist'").fetchone()
        cur = conn.execute(REPORTS_SQL, {"author": author[0] if author else None})
        count = cur.rowcount
        conn.execute("VACUUM ANALYZE reports")
        conn.execute("VACUUM ANALYZE studies")
    return count, time.perf_counter() - started


def scrape(url: str, runs: int) -> None:
    warnings.simplefilter("ignore")  # starlette's TestClient warns about httpx
    from fastapi.testclient import TestClient

    factory = make_sessionmaker(make_engine(url))
    with factory() as s:
        figures = worklist_figures(session=s, now=NOW)
        open_total = sum(figures.open_studies.values())
        past = sum(figures.open_past_deadline.values())
        s.rollback()
        late = sum(finalised_late(session=s).values())
        s.rollback()
    print(f"  open studies {open_total:,}, past deadline {past:,}, finalised late {late:,}")

    def figures_once() -> None:
        with factory() as s:
            worklist_figures(session=s, now=NOW)
            s.rollback()

    def late_once() -> None:
        with factory() as s:
            finalised_late(session=s)
            s.rollback()

    p50, p95 = timed(figures_once, runs)
    print(f"worklist_figures (every scrape), {runs} runs: p50 {p50:.2f} ms, p95 {p95:.2f} ms")
    p50, p95 = timed(late_once, max(5, runs // 10))
    print(f"finalised_late (every five minutes): p50 {p50:.1f} ms, p95 {p95:.1f} ms")

    store = FilesystemStore(Path(tempfile.mkdtemp(prefix="bench-store-")))
    options: dict[str, float]
    for label, options in (
        ("no cache (every scrape reads)", {"cache_seconds": 0, "late_cache_seconds": 0}),
        ("figures read, late total cached", {"cache_seconds": 0}),
        ("cached (the default 5 s / 300 s)", {}),
    ):
        app = create_app(
            session_factory=factory,
            store=store,
            settings=ApiSettings(secret_key=SECRET, metrics_token=METRICS_TOKEN),
            clock=lambda: NOW,
        )
        for name, value in options.items():
            setattr(app.state.metrics, name, value)
        with TestClient(app, client=("127.0.0.1", 50000)) as client:

            def get(client: TestClient = client) -> None:
                r = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
                assert r.status_code == 200, r.text

            n = max(5, runs // 10) if "no cache" in label else runs
            p50, p95 = timed(get, n)
        print(f"GET /metrics, {label}, {n} runs: p50 {p50:.2f} ms, p95 {p95:.2f} ms")


# --- middleware overhead ---------------------------------------------------------------------


async def _bare(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"y")]})
    await send({"type": "http.response.body", "body": b"ok"})


def micro(n: int) -> tuple[float, float]:
    """Microseconds per call: the bare app, and the app inside RequestMetrics."""

    class Route:
        path = "/api/v1/studies/{study_uid}"
        endpoint = None

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    wrapped = RequestMetrics(_bare, metrics=HttpMetrics(CollectorRegistry()))

    async def run(app: Any) -> float:
        started = time.perf_counter()
        for _ in range(n):
            scope = {"type": "http", "method": "GET", "route": Route, "headers": []}
            await app(scope, receive, send)
        return (time.perf_counter() - started) / n * 1e6

    bare = min(asyncio.run(run(_bare)) for _ in range(3))
    with_metrics = min(asyncio.run(run(wrapped)) for _ in range(3))
    return bare, with_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def end_to_end(requests: int, blocks: int) -> tuple[float, float]:
    """p50 ms of GET /api/v1/worklist over real HTTP without and with the middleware."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    url = f"sqlite:///{tmp / 'w.db'}"
    upgrade(url)
    factory = make_sessionmaker(make_engine(url))
    with factory.begin() as s:
        create_site(session=s, code="TS01", name="Township 1", ae_titles=["CT_TS01"], now=NOW)
        reader = User(username="rad", password_hash="x", role="radiologist", created_at=NOW)
        s.add(reader)
    settings = ApiSettings(secret_key=SECRET)
    with factory() as s:
        user = s.scalars(select(User).where(User.username == "rad")).one()
        token = create_access_token(user=user, settings=settings, now=utcnow())
    store = FilesystemStore(tmp / "objects")
    servers = {}
    for label in ("without", "with"):
        app = create_app(session_factory=factory, store=store, settings=settings)
        if label == "without":
            app.user_middleware = [m for m in app.user_middleware if m.cls is not RequestMetrics]
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        servers[label] = (server, thread, port)
    samples: dict[str, list[float]] = {"without": [], "with": []}
    headers = {"Authorization": f"Bearer {token}"}
    clients = {
        label: httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers)
        for label, (_, _, port) in servers.items()
    }
    try:
        for client in clients.values():  # warm up
            for _ in range(50):
                client.get("/api/v1/worklist").raise_for_status()
        for _ in range(blocks):
            for label, client in clients.items():
                for _ in range(requests // blocks):
                    started = time.perf_counter()
                    client.get("/api/v1/worklist").raise_for_status()
                    samples[label].append((time.perf_counter() - started) * 1000)
    finally:
        for client in clients.values():
            client.close()
        for server, thread, _ in servers.values():
            server.should_exit = True
            thread.join(10)
    return statistics.median(samples["without"]), statistics.median(samples["with"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=100, help="samples per timed call")
    parser.add_argument("--url", help="a running PostgreSQL (default: start an embedded one)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--overhead-only", action="store_true")
    parser.add_argument("--requests", type=int, default=2000, help="end-to-end requests each")
    args = parser.parse_args()

    bare, wrapped = micro(50_000)
    print(
        f"middleware, direct ASGI calls: bare {bare:.2f} us, with RequestMetrics "
        f"{wrapped:.2f} us: +{wrapped - bare:.2f} us per request"
    )
    without, with_ = end_to_end(args.requests, blocks=10)
    print(
        f"GET /api/v1/worklist over loopback HTTP, p50: without {without:.3f} ms, "
        f"with {with_:.3f} ms ({(with_ - without) * 1000:+.0f} us)"
    )
    if args.overhead_only:
        return 0

    with postgres(args.url) as url:
        upgrade(url)
        print(f"filling {args.studies:,} studies ...", flush=True)
        _, copy_seconds = fill(url, args.studies, args.seed)
        reports, report_seconds = add_reports(url)
        print(f"  COPY {copy_seconds:.1f} s; {reports:,} signed reports in {report_seconds:.1f} s")
        scrape(url, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
