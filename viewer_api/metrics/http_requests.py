"""Request figures of one process: counts and latency histograms by method, route template
and status class, and the pure ASGI middleware (``RequestMetrics``) that records them."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "teleread_api_"

# seconds; the hot routes answer in a few milliseconds, DICOM retrieves take longer
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
_EVENT_STREAM = b"text/event-stream"


class HttpMetrics:
    """Request counts and latency histograms of one process, by (method, route, status),
    in ``registry``."""

    def __init__(self, registry: CollectorRegistry, buckets: tuple[float, ...] = BUCKETS) -> None:
        labels = ("method", "route", "status")
        self.requests = Counter(
            PREFIX + "http_requests",
            "HTTP requests answered, by method, route template and status class",
            labels,
            registry=registry,
        )
        self.duration = Histogram(
            PREFIX + "http_request_duration_seconds",
            "time to answer a request (an event stream: to its first byte)",
            labels,
            buckets=buckets,
            registry=registry,
        )

    def observe(self, method: str, route: str, status_class: str, seconds: float) -> None:
        self.requests.labels(method, route, status_class).inc()
        self.duration.labels(method, route, status_class).observe(seconds)


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

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

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
            self.metrics.observe(
                method if method in METHODS else "other",
                route_template(scope),
                STATUS_CLASSES.get(code // 100, "other"),
                ended - started,
            )
