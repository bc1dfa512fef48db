"""The application factory: every dependency comes in as an argument and lives on
``app.state``; nothing is global."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from storage.base import ObjectStore
from viewer_api import access, dicomweb, errors, metrics, web
from viewer_api.auditing import AuditWriter
from viewer_api.client_address import ClientAddress
from viewer_api.event_streams import StreamHub
from viewer_api.limits import RequestGate, check_url_inputs, document_url_rules
from viewer_api.routes import (
    admin,
    audit,
    auth,
    clinic,
    conflicts,
    critical_results,
    events,
    gateway,
    health,
    operations,
    report_outputs,
    report_shares,
    report_templates,
    reports,
    stats,
    studies,
    users,
    worklist,
)
from viewer_api.security import LoginThrottle, UserCache
from viewer_api.settings import ApiSettings
from viewer_api.web import docs, ohif
from viewer_api.worklist_pages import WorklistPages
from worklist.db import make_read_sessionmaker, utcnow
from worklist.settings import WorklistSettings
from worklist.settings import get_settings as get_worklist_settings
from worklist.study_writes import StudyWrites

logger = logging.getLogger(__name__)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """At start, when worklist pages are kept: the event hub, whose events (any process's)
    drop them; if the database does not answer yet, the first stream starts it and pages
    live out their ``ttl`` meanwhile. At shutdown: end the event streams and the threads
    the app started, and write the views taken down but not yet written."""
    if app.state.settings.worklist_cache_seconds > 0:
        try:
            await anyio.to_thread.run_sync(app.state.event_hub.ensure_started)
        except SQLAlchemyError as exc:
            logger.warning(
                "event hub not started: the database does not answer",
                extra={"action": "event_hub_start_failed", "error": type(exc).__name__},
            )
    yield
    await anyio.to_thread.run_sync(app.state.event_hub.stop)
    app.state.readiness.close()
    await anyio.to_thread.run_sync(app.state.audit_writer.close)


def create_app(
    *,
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    settings: ApiSettings,
    clock: Callable[[], datetime] = utcnow,
    worklist_settings: WorklistSettings | None = None,
) -> FastAPI:
    """The county API over ``session_factory`` (a migrated database) and ``store``.

    ``clock`` gives the current UTC time (tests pass a fixed one); ``worklist_settings``
    (claim lease, stable age, deadlines) defaults to the environment's.
    """
    app = FastAPI(
        title="teleread county API",
        version="1",
        dependencies=[Depends(check_url_inputs)],
        lifespan=_lifespan,
        # /docs and /redoc: viewer_api.web.docs (the same pages, nothing from a CDN)
        docs_url=None,
        redoc_url=None,
    )
    app.state.session_factory = session_factory
    app.state.read_session_factory = make_read_sessionmaker(session_factory.kw["bind"])
    app.state.store = store
    app.state.settings = settings
    app.state.clock = clock
    app.state.user_cache = UserCache(settings.user_cache_seconds)
    app.state.login_throttle = LoginThrottle.from_settings(settings)
    app.state.worklist_settings = worklist_settings or get_worklist_settings()
    app.state.audit_writer = AuditWriter(session_factory)
    app.state.readiness = health.ReadinessProbe(session_factory, store)
    app.state.event_hub = StreamHub(
        session_factory,
        max_per_account=settings.max_streams_per_account,
        max_streams=settings.max_streams,
    )
    app.state.worklist_pages = WorklistPages(settings.worklist_cache_seconds)
    if settings.worklist_cache_seconds > 0:
        StudyWrites.watch()
        app.state.event_hub.on_events(app.state.worklist_pages.notify)
    ohif_dir = (settings.ohif_dir or ohif.default_dir()).resolve()
    app.state.ohif_dir = ohif_dir if ohif.installed(ohif_dir) else None
    if app.state.ohif_dir is None:
        logger.info(
            "OHIF is not installed (%s): /ohif/ answers 404; the built-in viewer works",
            ohif_dir,
            extra={"action": "ohif_missing"},
        )

    errors.install(app)  # every error answers as the one table in viewer_api.errors says

    # a request is matched against the routes in this order (each router passed costs it
    # time on the event loop): the probes first, as they must answer under any load; then
    # DICOMweb, as a viewer scrolling a series asks for one image per slice
    for module in (
        health,
        dicomweb,
        auth,
        worklist,
        admin,
        events,
        studies,
        reports,
        critical_results,
        clinic,
        report_templates,
        report_outputs,
        report_shares,
        audit,
        users,
        stats,
        operations,
        gateway,
        conflicts,
        docs,
        web,
        ohif,
    ):
        app.include_router(module.router)
    access.install(app)  # x-teleread-roles on every operation of the OpenAPI schema
    app.add_middleware(RequestGate, settings=settings)
    if settings.cors_origins:  # off unless a site hosts a viewer (OHIF) on another origin
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Accept", "Content-Type", "X-CSRF-Token"],
            expose_headers=["Content-Type", "Content-Length", "Warning"],
            max_age=600,
        )
    document_url_rules(app)
    # before anything reads the client's address (the audit, the log-in throttle)
    app.add_middleware(ClientAddress, trusted_proxies=settings.trusted_proxies)
    metrics.install(app)  # outermost: times and counts every answer, 413s included
    return app


__all__ = ["create_app"]
