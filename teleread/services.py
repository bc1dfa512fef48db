"""Running the parts: the county API (uvicorn in a thread) with the worklist's housekeeping
thread (``worklist.housekeeping``), and the township gateway. Wiring only: each part's
behaviour lives in its own package."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

import storage
from storage.base import ObjectStore
from teleread.api_workers import ApiWorkers, WorkersFailed, worker_env
from teleread.embedded import DataDir, database_url
from teleread.signals import StopSignals

if TYPE_CHECKING:
    from viewer_api.outputs.sr_outbox import SRSender
    from viewer_api.settings import ApiSettings

log = logging.getLogger(__name__)


class ApiServer:
    """uvicorn serving an app in a background thread, stoppable; connections that do not
    finish their request headers in time are closed (``viewer_api.slow_clients``). It
    listens on ``host:port``, or accepts on ``sock``, a listening socket it shares with other
    processes (``teleread.api_workers``)."""

    def __init__(
        self,
        app: FastAPI,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
    ) -> None:
        from viewer_api.slow_clients import protocol_class

        self._app = app
        settings: ApiSettings = app.state.settings
        # log_config=None: uvicorn's records go through our handlers (JSON, redaction);
        # proxy_headers off: the app reads X-Forwarded-For / -Proto itself, from the
        # trusted proxies only (viewer_api.client_address)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            log_config=None,
            http=protocol_class(settings.header_timeout_seconds),
            timeout_keep_alive=5,
            proxy_headers=False,
        )
        self._server = uvicorn.Server(config)
        self.failed = threading.Event()  # never set: a failure here is the process's own
        sockets = [sock] if sock is not None else None
        self._thread = threading.Thread(
            target=self._serve, args=(sockets,), name="api", daemon=True
        )

    def _serve(self, sockets: list[socket.socket] | None) -> None:
        batch_scheduling()
        self._server.run(sockets)

    def start(self, timeout: float = 30.0) -> None:
        freeze_startup_objects()
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


def batch_scheduling() -> None:
    """Put the calling thread, and the threads it starts from now on (uvicorn's event loop,
    the request threads), under Linux's ``SCHED_BATCH``: a woken thread then waits for the
    CPU instead of taking it at once from the thread that woke it.

    Why: the event loop hands each request to a thread and wakes it while holding the GIL.
    On a busy machine the woken thread took the loop thread's CPU at once, only to wait for
    the GIL the descheduled loop thread held: two context switches per hand-over, and the
    process stalled in between. ``bench/load.py`` on PostgreSQL, 200 clients, pairs run in
    turn: 3.8-4.4 against 4.9-5.6 ms of API CPU per request, 297-333 against 229-268
    requests/s (a fourth pair even). Elsewhere (not Linux, or refused) nothing changes."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def freeze_startup_objects() -> None:
    """Move every object alive now (modules, the app, mappers, settings: a few hundred
    thousand) out of the garbage collector's reach for good (``gc.freeze``). Each full
    collection otherwise walks them all while holding the GIL: measured under the load of
    ``bench/load.py``, 0.5 to 1.4 s per collection, a few times a minute, and every request
    and ``/healthz`` waiting for it. Objects made later are collected as before."""
    gc.collect()
    gc.freeze()


def wait_for_signal(
    signals: StopSignals | None = None, *, keep_going: Callable[[], bool] | None = None
) -> None:
    """Block until SIGINT or SIGTERM (``signals``, installed already, or installed now), or
    until ``keep_going()`` says no (``teleread.signals``: no lock in the handler)."""
    (signals or StopSignals().install()).wait(keep_going=keep_going)


def build_api(url: str, store: ObjectStore, *, secret_key: str | None = None) -> FastAPI:
    """The county API over the database at ``url`` and ``store``, its pool sized to the
    API's threads (``ApiSettings.database_connections``) so a request never waits on the pool."""
    from viewer_api.main import create_app
    from viewer_api.settings import ApiSettings
    from worklist.db import make_engine, make_sessionmaker

    settings = ApiSettings(secret_key=secret_key) if secret_key else ApiSettings()
    engine = make_engine(url, pool_size=settings.database_connections, max_overflow=0)
    return create_app(session_factory=make_sessionmaker(engine), store=store, settings=settings)


def start_sr_sender(factory: sessionmaker[Session], store: ObjectStore) -> SRSender:
    """The thread that sends signed reports' SRs to the sites' PACS from the queue
    (``viewer_api.outputs.sr_outbox``), over the database and object store: one per
    ``teleread api`` or ``serve``, however many API worker processes it runs."""
    from viewer_api.outputs.settings import get_output_settings
    from viewer_api.outputs.sr_outbox import SRSender
    from worklist.settings import get_settings as worklist_settings

    sender = SRSender(
        factory, store, settings=get_output_settings(), deadlines=worklist_settings().deadlines
    )
    sender.start()
    return sender


def housekeeping_engine(url: str) -> sessionmaker[Session]:
    """The sessions of the threads that run beside the API worker processes (housekeeping,
    the SR sender, the demo accounts): a small pool of their own."""
    from worklist.db import make_engine, make_sessionmaker

    return make_sessionmaker(make_engine(url, pool_size=4, max_overflow=2))


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
    from viewer_api.settings import ApiSettings
    from worklist.housekeeping import Housekeeping
    from worklist.settings import get_settings as worklist_settings

    data_dir = DataDir.resolve(args.data_dir) if not args.database_url else None
    url = database_url(data_dir, args.database_url)
    settings = ApiSettings()  # refuses a missing or default secret key before anything runs
    store = storage.from_settings()
    if settings.workers > 1:
        factory = housekeeping_engine(url)
        app = None
    else:
        app = build_api(url, store)
        factory = app.state.session_factory
    engine: Engine = factory.kw["bind"]
    try:
        wait_for_schema(engine, timeout=args.migration_wait)
    except SchemaNotReady as exc:
        log.error(str(exc), extra={"action": "api_schema_not_ready"})
        return 1
    housekeeping = Housekeeping(factory, worklist_settings())
    housekeeping.start()
    sr_sender = start_sr_sender(factory, store)
    try:
        server = start_api_server(
            app, settings, url=url, host=args.host, port=args.http_port, verbose=args.verbose
        )
    except WorkersFailed as exc:
        log.error(str(exc), extra={"action": "api_not_started"})
        sr_sender.stop()
        housekeeping.stop()
        return 1
    log.info(
        "county API on http://%s:%d/ (%d process%s)",
        args.host,
        args.http_port,
        settings.workers,
        "es" if settings.workers > 1 else "",
    )
    try:
        wait_for_signal(keep_going=lambda: not server.failed.is_set())
    finally:
        server.stop()
        sr_sender.stop()
        housekeeping.stop()
    return 1 if server.failed.is_set() else 0


class RunningApi(Protocol):
    """The API serving: in this process (``ApiServer``) or in worker processes."""

    failed: threading.Event

    def stop(self) -> None: ...


def start_api_server(
    app: FastAPI | None,
    settings: ApiSettings,
    *,
    url: str,
    host: str,
    port: int,
    verbose: bool = False,
    storage_root: str | None = None,
) -> RunningApi:
    """``settings.workers`` API processes (``teleread.api_workers``) on ``host:port``, or
    ``app`` served in this process when that is 1; ``WorkersFailed`` when they do not
    start."""
    if settings.workers <= 1:
        assert app is not None
        server = ApiServer(app, host=host, port=port)
        try:
            server.start()
        except RuntimeError as exc:
            raise WorkersFailed(str(exc)) from exc
        return server
    workers = ApiWorkers(
        settings.workers,
        host=host,
        port=port,
        env=worker_env(
            database_url=url,
            secret_key=settings.secret_key.get_secret_value(),
            storage_root=storage_root,
        ),
        verbose=verbose,
    )
    workers.start()
    return workers


def start_gateway(store: ObjectStore, **overrides: object) -> Callable[[], None]:
    """Start the gateway (SCP + forwarder) over ``store`` with settings from the environment
    plus overrides; return its stop function."""
    from gateway.config import GatewaySettings
    from gateway.service import Gateway

    settings = GatewaySettings(**overrides)  # type: ignore[arg-type]
    gateway = Gateway(settings=settings, store=store)
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
    overrides = {"spool_dir": Path(args.spool_dir)} if args.spool_dir else {}
    stop = start_gateway(storage.from_settings(), **overrides)
    try:
        wait_for_signal()
    finally:
        stop()
    return 0
