"""Probes. ``/healthz`` (liveness): the process answers; no database, no thread, so it
answers within milliseconds under any load. ``/readyz`` (readiness): the database answers
``SELECT 1`` and the object store answers a lookup, each within ``READY_TIMEOUT_SECONDS``;
run in a thread of their own (not the request pool) and shared by concurrent callers for
``READY_CACHE_SECONDS``, so a busy load balancer polling it adds no load of its own."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from storage.base import ObjectStore
from viewer_api.schemas import Health

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

READY_TIMEOUT_SECONDS = 2.0
READY_CACHE_SECONDS = 1.0
# a key no object has: looking it up asks the store to answer without reading anything
PROBE_KEY = "readyz/probe"


@dataclass(frozen=True, slots=True)
class Readiness:
    database: str
    objects: str

    @property
    def ready(self) -> bool:
        return self.database == "ok" and self.objects == "ok"


class ReadinessProbe:
    """Checks the database and the object store in one thread of its own; one check at a
    time, its answer reused for ``READY_CACHE_SECONDS``."""

    def __init__(self, factory: sessionmaker[Session], store: ObjectStore) -> None:
        self._factory = factory
        self._store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readyz")
        self._lock = threading.Lock()
        self._pending: Future[Readiness] | None = None
        self._last: tuple[float, Readiness] | None = None

    def _check(self) -> Readiness:
        try:
            with self._factory() as session:
                session.execute(text("SELECT 1"))
            database = "ok"
        except Exception as exc:
            database = f"unavailable: {type(exc).__name__}"
        try:
            self._store.exists(PROBE_KEY)
            objects = "ok"
        except Exception as exc:
            objects = f"unavailable: {type(exc).__name__}"
        result = Readiness(database, objects)
        with self._lock:
            self._last = (time.monotonic(), result)
            self._pending = None
        return result

    async def check(self) -> Readiness:
        with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < READY_CACHE_SECONDS:
                return self._last[1]
            if self._pending is None:
                self._pending = self._executor.submit(self._check)
            pending = self._pending
        try:
            return await asyncio.wait_for(asyncio.wrap_future(pending), READY_TIMEOUT_SECONDS)
        except TimeoutError:
            return Readiness("unavailable: no answer in time", "unknown")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process answers."""
    return Health()


@router.get(
    "/readyz",
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"description": "A backing service is down"}},
)
async def readyz(request: Request) -> JSONResponse:
    """``{"status": "ok", "database": "ok", "objects": "ok"}``, or 503 naming what failed."""
    probe: ReadinessProbe = request.app.state.readiness
    result = await probe.check()
    body = {
        "status": "ok" if result.ready else "unavailable",
        "database": result.database,
        "objects": result.objects,
    }
    if result.ready:
        return JSONResponse(body)
    logger.warning("not ready", extra={"action": "readyz_failed", **body})
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


__all__ = ["Readiness", "ReadinessProbe", "router"]
