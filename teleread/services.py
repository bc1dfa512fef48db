"""Running the parts: the county API (uvicorn in a thread), its housekeeping loop, and the
township gateway. Wiring only: each part's behaviour lives in its own package."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from teleread.embedded import DataDir, database_url

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 5.0
RETENTION_SECONDS = 3600.0  # how often expired audit events, events, deliveries are purged


class Housekeeping(threading.Thread):
    """Every few seconds: studies that went quiet become ready; claims about to run out
    warn their holders, abandoned ones expire;
    late unclaimed studies escalate; events go out to the configured webhooks. Hourly (and
    every pass while a backlog lasts): rows past their retention are purged."""

    def __init__(self, factory: sessionmaker[Session], *, stable_seconds: int) -> None:
        super().__init__(name="worklist-housekeeping", daemon=True)
        self._factory = factory
        self._stable_seconds = stable_seconds
        self._stop_event = threading.Event()

    def run(self) -> None:
        import httpx

        from worklist import escalation, overdue, retention, webhooks
        from worklist.claims import warn_expiring_claims
        from worklist.completion import mark_stable_studies
        from worklist.db import utcnow
        from worklist.repository import expire_claims
        from worklist.settings import get_settings

        wl = get_settings()
        client = httpx.Client(timeout=wl.webhook_timeout_seconds, follow_redirects=False)
        next_purge = 0.0  # time.monotonic(): the first pass purges
        try:
            while not self._stop_event.wait(HOUSEKEEPING_SECONDS):
                try:
                    with self._factory.begin() as session:
                        now = utcnow()
                        mark_stable_studies(
                            session=session, now=now, stable_seconds=self._stable_seconds
                        )
                        warn_expiring_claims(session=session, now=now)
                        expire_claims(session=session, now=now)
                        escalation.scan(session=session, now=now)
                        overdue.scan(session=session, now=now)
                    webhooks.run_once(
                        factory=self._factory,
                        client=client,
                        urls=wl.webhook_urls,
                        secret=wl.webhook_secret,
                        clock=utcnow,
                        max_attempts=wl.webhook_max_attempts,
                    )
                    if time.monotonic() >= next_purge:
                        next_purge = time.monotonic() + RETENTION_SECONDS
                        with self._factory.begin() as session:
                            purged = retention.purge_expired(
                                session=session, now=utcnow(), settings=wl
                            )
                        if purged.more:  # a bounded batch per pass until the backlog is gone
                            next_purge = 0.0
                except Exception:
                    log.exception("housekeeping failed", extra={"action": "housekeeping_failed"})
        finally:
            client.close()

    def stop(self) -> None:
        self._stop_event.set()


class ApiServer:
    """uvicorn serving an app in a background thread, stoppable."""

    def __init__(self, app: FastAPI, *, host: str, port: int) -> None:
        from viewer_api.settings import ApiSettings

        self._app = app
        settings: ApiSettings = app.state.settings
        trusted = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
        # log_config=None: uvicorn's records go through our handlers (JSON, redaction);
        # X-Forwarded-For / -Proto are believed from the trusted proxies only
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            log_config=None,
            proxy_headers=True,
            forwarded_allow_ips=trusted,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="api", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start (is the port in use?)")
            time.sleep(0.05)

    def stop(self) -> None:
        from viewer_api.routes.events import stop_streams

        stop_streams(self._app)  # open event streams would hold uvicorn's shutdown
        self._server.should_exit = True
        self._thread.join(timeout=10)


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop.wait(1.0):
        pass


def build_api(factory: sessionmaker[Session], *, secret_key: str | None = None) -> FastAPI:
    import storage
    from viewer_api.main import create_app
    from viewer_api.settings import ApiSettings

    settings = ApiSettings(secret_key=secret_key) if secret_key else ApiSettings()
    return create_app(session_factory=factory, store=storage.from_settings(), settings=settings)


class SchemaNotReady(RuntimeError):
    """The database is not at this teleread's migration head."""


def wait_for_schema(engine: Engine, *, timeout: float, poll: float = 1.0) -> None:
    """Return once the database is at this code's migration head: an API never migrates on
    its own, it waits for ``teleread db upgrade`` (the compose stack's ``migrate`` job).
    Raises ``SchemaNotReady`` after ``timeout`` seconds, or at once when a newer teleread
    has migrated the database past what this one knows."""
    from alembic.script import ScriptDirectory
    from sqlalchemy.exc import OperationalError

    from worklist.db import alembic_config, head_revision, schema_revision

    head = head_revision()
    known = {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    deadline = time.monotonic() + timeout
    next_note = 0.0
    while True:
        try:
            current: str | None = schema_revision(engine)
            reason = f"the database is at migration {current or '(none)'}; this one needs {head}"
        except OperationalError as exc:  # the database is still starting
            current = None
            reason = f"the database is not reachable yet: {str(exc.orig).strip()[:200]}"
        if current == head:
            return
        if current is not None and current not in known:
            raise SchemaNotReady(
                f"the database is at migration {current}, which this teleread does not know "
                f"(it knows up to {head}): run the same teleread version everywhere"
            )
        now = time.monotonic()
        if now >= deadline:
            raise SchemaNotReady(f"{reason}: run `teleread db upgrade` (same database settings)")
        if now >= next_note:
            next_note = now + 10.0
            log.info(
                "waiting for the database migrations (`teleread db upgrade`)",
                extra={"action": "api_waiting_for_migrations", "revision": current, "head": head},
            )
        time.sleep(poll)


def api_command(args: argparse.Namespace) -> int:
    from worklist.db import make_engine, make_sessionmaker
    from worklist.settings import get_settings as worklist_settings

    data_dir = DataDir.resolve(args.data_dir) if not args.database_url else None
    url = database_url(data_dir, args.database_url)
    engine = make_engine(url)
    try:
        wait_for_schema(engine, timeout=args.migration_wait)
    except SchemaNotReady as exc:
        log.error(str(exc), extra={"action": "api_schema_not_ready"})
        return 1
    factory = make_sessionmaker(engine)
    app = build_api(factory)
    housekeeping = Housekeeping(factory, stable_seconds=worklist_settings().stable_seconds)
    housekeeping.start()
    server = ApiServer(app, host=args.host, port=args.http_port)
    server.start()
    log.info("county API on http://%s:%d/", args.host, args.http_port)
    try:
        wait_for_signal()
    finally:
        server.stop()
        housekeeping.stop()
    return 0


def start_gateway(**overrides: object) -> Callable[[], None]:
    """Start the gateway (SCP + forwarder) with settings from the environment plus overrides;
    return its stop function."""
    import storage
    from gateway.config import GatewaySettings
    from gateway.service import Gateway

    settings = GatewaySettings(**overrides)  # type: ignore[arg-type]
    gateway = Gateway(settings=settings, store=storage.from_settings())
    gateway.start()
    return gateway.stop


def gateway_answers(host: str, port: int, *, timeout: float = 5.0) -> str | None:
    """Does a DICOM listener answer on ``host:port``? None if so (an association accepted, or
    refused as the gateway refuses an AE title it does not know); else why not."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    answered: list[bool] = []
    ae = AE(ae_title="TELEREAD_HEALTH")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.connection_timeout = ae.network_timeout = timeout
    assoc = ae.associate(
        host, port, evt_handlers=[(evt.EVT_ACSE_RECV, lambda event: answered.append(True))]
    )
    if assoc.is_established:
        assoc.release()
    return None if answered else f"no DICOM answer from {host}:{port}"


def gateway_command(args: argparse.Namespace) -> int:
    if args.action == "health":
        from gateway.config import GatewaySettings

        gw = GatewaySettings()
        host = "127.0.0.1" if gw.host in ("0.0.0.0", "::", "") else gw.host
        problem = gateway_answers(host, gw.port)
        print(problem or f"the gateway answers DICOM on {host}:{gw.port}")  # noqa: T201
        return 1 if problem else 0
    if args.action == "status":
        from gateway.config import GatewaySettings
        from gateway.ops import format_status, spool_status

        overrides = {"spool_dir": Path(args.spool_dir)} if args.spool_dir else {}
        status = spool_status(GatewaySettings(**overrides).spool_dir)  # type: ignore[arg-type]
        print(json.dumps(status, indent=2, default=str) if args.json else format_status(status))  # noqa: T201
        return 0
    stop = start_gateway(**({"spool_dir": Path(args.spool_dir)} if args.spool_dir else {}))
    try:
        wait_for_signal()
    finally:
        stop()
    return 0
