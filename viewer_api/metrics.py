"""``GET /metrics``: the county API's figures in the Prometheus text format (version 0.0.4).

Two kinds of figures:

- **Requests**, counted by a pure ASGI middleware (``RequestMetrics``) in this process: a count
  and a latency histogram by method, route *template* (``/api/v1/studies/{study_uid}``, never
  the concrete path: UIDs are patient-linked) and status class (``2xx``...). A request that
  matched no route is labelled ``<unmatched>``. The latency runs to the end of the response;
  for an event stream (``text/event-stream``) only to its start, so open streams do not
  swamp the histogram. Each process keeps its own figures: scrape every API replica and
  uvicorn worker separately, and ``sum()`` them in PromQL.
- **The worklist**, read from the database at scrape time (``worklist.metrics_queries``):
  open studies by category and priority, deadline breaches, the oldest waiting urgent study,
  active claims, studies and instances ingested. Cached ``cache_seconds`` (5 s) per process so
  frequent scrapes do not load the database; the running total of late finalisations (the one
  figure no index answers) ``late_cache_seconds`` (300 s).

Who may scrape: with ``TELEREAD_API_METRICS_TOKEN`` unset, a client on the loopback interface
(and not relayed by a proxy: a request carrying ``Forwarded``, ``X-Forwarded-For`` or
``X-Real-IP`` is not local) or an admin's bearer token. With it set, ``Authorization: Bearer
<token>`` or an admin's bearer token; loopback alone is no longer enough. Otherwise 401 (no or
an invalid credential) or 403 (a valid token of another role).

Written without a client library: the format is a few lines of text, and the middleware is
the part that must be cheap: about 3 microseconds of bookkeeping per request
(``bench/metrics.py``), against the 2-4 ms the hot routes take.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, status
from fastapi.responses import Response
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from viewer_api.errors import InvalidToken
from viewer_api.security import UserCache, account_accepts, decode_access_token
from viewer_api.settings import ApiSettings
from worklist.accounts import get_user
from worklist.metrics_queries import (
    PRIORITIES,
    ROUTINE,
    WorklistFigures,
    finalised_late,
    worklist_figures,
)
from worklist.models import CATEGORY_CHEST_PAIN, CATEGORY_STROKE, ROLE_ADMIN

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PATH = "/metrics"
PREFIX = "teleread_api_"
# seconds; the hot routes answer in a few milliseconds, DICOM retrieves take longer
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
CATEGORIES = (CATEGORY_STROKE, CATEGORY_CHEST_PAIN, ROUTINE)
DEFAULT_CACHE_SECONDS = 5.0
DEFAULT_LATE_CACHE_SECONDS = 300.0
_FORWARDING_HEADERS = frozenset({b"forwarded", b"x-forwarded-for", b"x-real-ip"})
_EVENT_STREAM = b"text/event-stream"
_UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}
_DENIED = "Metrics need a loopback client, the metrics token or an admin's token"


# --- exposition format ---------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return f"{{{inner}}}" if inner else ""


def _number(value: float) -> str:
    """Integers exactly (``:g`` would print 1234567 as 1.23457e+06), floats in full."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Exposition:
    """Accumulates metric families in the text format."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[Iterable[tuple[str, str]], float]],
    ) -> None:
        full = self.prefix + name
        self.lines.append(f"# HELP {full} {help_text}")
        self.lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            self.lines.append(f"{full}{_labels(labels)} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


# --- requests --------------------------------------------------------------------------------


class _Series:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size  # per bucket (not cumulative); the last is +Inf
        self.count = 0
        self.sum = 0.0


class HttpMetrics:
    """Request counts and latency histograms of one process, by (method, route, status)."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = buckets
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._lock = threading.Lock()

    def observe(self, method: str, route: str, status_class: str, seconds: float) -> None:
        key = (method, route, status_class)
        index = bisect_left(self.bounds, seconds)  # the first bound >= seconds ("le")
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(len(self.bounds) + 1)
            series.buckets[index] += 1
            series.count += 1
            series.sum += seconds

    def snapshot(self) -> list[tuple[tuple[str, str, str], list[int], int, float]]:
        with self._lock:
            return [(k, list(s.buckets), s.count, s.sum) for k, s in sorted(self._series.items())]

    def render(self, out: Exposition) -> None:
        snap = self.snapshot()
        out.family(
            "http_requests_total",
            "counter",
            "HTTP requests answered, by method, route template and status class",
            [(_request_labels(key), count) for key, _, count, _ in snap],
        )
        name = out.prefix + "http_request_duration_seconds"
        out.lines.append(
            f"# HELP {name} time to answer a request (an event stream: to its first byte)"
        )
        out.lines.append(f"# TYPE {name} histogram")
        bounds = [*(_number(b) for b in self.bounds), "+Inf"]
        for key, buckets, count, total in snap:
            labels = _request_labels(key)
            cumulative = 0
            for bound, n in zip(bounds, buckets, strict=True):
                cumulative += n
                out.lines.append(f"{name}_bucket{_labels([*labels, ('le', bound)])} {cumulative}")
            out.lines.append(f"{name}_sum{_labels(labels)} {_number(total)}")
            out.lines.append(f"{name}_count{_labels(labels)} {count}")


def _request_labels(key: tuple[str, str, str]) -> list[tuple[str, str]]:
    return [("method", key[0]), ("route", key[1]), ("status", key[2])]


def route_template(scope: Scope) -> str:
    """The matched route's path template (set in the scope by the router), or UNMATCHED."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    if getattr(route, "routes", None) is not None and not hasattr(route, "endpoint"):
        return path.rstrip("/") + "/{path}"  # a mounted sub-application
    return path


class RequestMetrics:
    """Pure ASGI middleware: times each HTTP request into an ``HttpMetrics``."""

    def __init__(self, app: ASGIApp, *, registry: HttpMetrics) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500  # nothing sent: the error handler outside us answers 500
        first_byte: float | None = None

        async def timed_send(message: Message) -> None:
            nonlocal code, first_byte
            if message["type"] == "http.response.start":
                code = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type" and value.startswith(_EVENT_STREAM):
                        first_byte = time.perf_counter()
                        break
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            ended = first_byte if first_byte is not None else time.perf_counter()
            method = scope.get("method", "")
            self.registry.observe(
                method if method in METHODS else "other",
                route_template(scope),
                STATUS_CLASSES.get(code // 100, "other"),
                ended - started,
            )


# --- the worklist, from the database ---------------------------------------------------------


class ApiMetrics:
    """What ``/metrics`` serves for one app: its request figures and the cached database
    figures."""

    def __init__(
        self,
        *,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        late_cache_seconds: float = DEFAULT_LATE_CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = HttpMetrics()
        self.cache_seconds = cache_seconds
        self.late_cache_seconds = late_cache_seconds
        self._monotonic = monotonic
        self._lock = asyncio.Lock()
        self._figures: WorklistFigures | None = None
        self._figures_at = -float("inf")
        self._late: dict[str, int] | None = None
        self._late_at = -float("inf")
        self._database_up = False
        self._refresh_seconds = 0.0

    async def database_figures(
        self, factory: sessionmaker[Session], now: datetime
    ) -> tuple[WorklistFigures | None, dict[str, int] | None, bool]:
        """The worklist figures, from the cache while fresh; re-read otherwise (one scrape
        reads, concurrent ones wait for it)."""
        async with self._lock:
            at = self._monotonic()
            want_figures = at - self._figures_at >= self.cache_seconds
            want_late = at - self._late_at >= self.late_cache_seconds
            if want_figures or want_late:
                started = time.perf_counter()
                try:
                    figures, late = await run_in_threadpool(
                        _read, factory, now, want_figures, want_late
                    )
                except Exception as exc:  # the scrape still answers: database_up 0
                    logger.warning(
                        "metrics: database figures not read",
                        extra={"action": "metrics_database_failed", "error": type(exc).__name__},
                    )
                    self._database_up = False
                    self._figures, self._late = None, None  # no stale figures
                    self._figures_at = at  # and no hammering of a failing database
                else:
                    self._database_up = True
                    if figures is not None:
                        self._figures, self._figures_at = figures, at
                    if late is not None:
                        self._late, self._late_at = late, at
                self._refresh_seconds = time.perf_counter() - started
            return self._figures, self._late, self._database_up

    def render_database(
        self, out: Exposition, figures: WorklistFigures | None, late: dict[str, int] | None
    ) -> None:
        out.family(
            "database_up",
            "gauge",
            "1 if the last read of the worklist figures succeeded",
            [((), 1 if self._database_up else 0)],
        )
        out.family(
            "metrics_database_seconds",
            "gauge",
            "time the last read of the worklist figures took",
            [((), round(self._refresh_seconds, 6))],
        )
        if figures is not None:
            render_worklist(out, figures)
        if late is not None:
            out.family(
                "studies_finalised_late_total",
                "counter",
                "studies whose report was signed final after their deadline, by category",
                [((("category", c),), n) for c, n in _by_category(late)],
            )


def _read(
    factory: sessionmaker[Session], now: datetime, want_figures: bool, want_late: bool
) -> tuple[WorklistFigures | None, dict[str, int] | None]:
    with factory() as session:
        try:
            figures = worklist_figures(session=session, now=now) if want_figures else None
            late = finalised_late(session=session) if want_late else None
        finally:
            session.rollback()
    return figures, late


def _by_category(counts: dict[str, int]) -> list[tuple[str, int]]:
    names = [*CATEGORIES, *sorted(set(counts) - set(CATEGORIES))]
    return [(c, counts.get(c, 0)) for c in names]


def render_worklist(out: Exposition, f: WorklistFigures) -> None:
    categories = [*CATEGORIES, *sorted({c for c, _ in f.open_studies} - set(CATEGORIES))]
    out.family(
        "worklist_open_studies",
        "gauge",
        "studies on the worklist (not final, amended or cancelled) by category and priority",
        [
            ((("category", c), ("priority", p)), f.open_studies.get((c, p), 0))
            for c in categories
            for p in PRIORITIES.values()
        ],
    )
    out.family(
        "worklist_past_deadline_studies",
        "gauge",
        "studies on the worklist past their reading deadline, by category",
        [((("category", c),), n) for c, n in _by_category(f.open_past_deadline)],
    )
    out.family(
        "oldest_unclaimed_urgent_study_age_seconds",
        "gauge",
        "age of the oldest urgent study nobody has claimed (0: none waits)",
        [((), round(f.oldest_unclaimed_urgent_age or 0.0, 3))],
    )
    out.family(
        "oldest_open_urgent_study_age_seconds",
        "gauge",
        "age of the oldest urgent study not yet finalised, claimed or not (0: none)",
        [((), round(f.oldest_open_urgent_age or 0.0, 3))],
    )
    out.family(
        "claims_active",
        "gauge",
        "studies on the worklist a reader holds a claim on",
        [((), f.claims_active)],
    )
    out.family(
        "studies_ingested_total",
        "counter",
        "studies ever indexed (the highest study id)",
        [((), f.studies_indexed)],
    )
    out.family(
        "instances_ingested_total",
        "counter",
        "instances ever indexed (the highest instance id)",
        [((), f.instances_indexed)],
    )


# --- access ------------------------------------------------------------------------------------


def is_local(scope: Scope) -> bool:
    """A loopback client talking to us directly (no proxy's forwarding header)."""
    client = scope.get("client")
    if not client:
        return False
    try:
        ip = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not ip.is_loopback:
        return False
    return not any(name.lower() in _FORWARDING_HEADERS for name, _ in scope.get("headers", ()))


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _metrics_token(settings: ApiSettings) -> str | None:
    secret = getattr(settings, "metrics_token", None)
    raw = secret.get_secret_value() if secret is not None else ""
    return raw or None


async def authorize(request: Request) -> None:
    """Let the scrape through, or raise 401 / 403 (see the module docstring)."""
    settings: ApiSettings = request.app.state.settings
    expected = _metrics_token(settings)
    token = _bearer(request)
    if token is None:
        if expected is None and is_local(request.scope):
            return
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, _DENIED, _UNAUTHENTICATED)
    if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
        return
    if expected is None and is_local(request.scope):
        return  # a local scraper that sends some token anyway
    if not await _is_admin(request, token, settings):
        raise HTTPException(status.HTTP_403_FORBIDDEN, _DENIED)


async def _is_admin(request: Request, token: str, settings: ApiSettings) -> bool:
    cache: UserCache = request.app.state.user_cache
    cached = cache.get(token)
    if cached is not None:
        return cached.role == ROLE_ADMIN
    try:
        claims = decode_access_token(token, settings=settings)
    except InvalidToken as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, _DENIED, _UNAUTHENTICATED) from exc
    if claims.role != ROLE_ADMIN:
        return False
    factory: sessionmaker[Session] = request.app.state.session_factory

    def load() -> bool:
        with factory() as session:
            user = get_user(session=session, user_id=claims.user_id)
            return user is not None and account_accepts(user, claims)  # role admin: above

    if not await run_in_threadpool(load):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, _DENIED, _UNAUTHENTICATED)
    return True


# --- the route ---------------------------------------------------------------------------------

router = APIRouter(tags=["metrics"])


@router.get(PATH, include_in_schema=False)
async def metrics(request: Request) -> Response:
    await authorize(request)
    state: ApiMetrics = request.app.state.metrics
    clock: Callable[[], datetime] = request.app.state.clock
    figures, late, _ = await state.database_figures(request.app.state.session_factory, clock())
    out = Exposition()
    state.http.render(out)
    state.render_database(out, figures, late)
    return Response(out.text(), media_type=None, headers={"Content-Type": CONTENT_TYPE})


def install(app: FastAPI, **options: Any) -> ApiMetrics:
    """Serve ``GET /metrics`` on ``app`` and time every request (call it after the other
    middleware, so this one is outermost and counts their answers too)."""
    state = ApiMetrics(**options)
    app.state.metrics = state
    app.include_router(router)
    app.add_middleware(RequestMetrics, registry=state.http)
    return state


__all__ = [
    "BUCKETS",
    "CONTENT_TYPE",
    "PATH",
    "UNMATCHED",
    "ApiMetrics",
    "Exposition",
    "HttpMetrics",
    "RequestMetrics",
    "authorize",
    "install",
    "is_local",
    "route_template",
]
