"""Request figures of one process: counts and latency histograms by method, route template
and status class, and the pure ASGI middleware (``RequestMetrics``) that records them."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from viewer_api.metrics.exposition import Exposition, format_labels, format_number

# seconds; the hot routes answer in a few milliseconds, DICOM retrieves take longer
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
_EVENT_STREAM = b"text/event-stream"


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
        bounds = [*(format_number(b) for b in self.bounds), "+Inf"]
        for key, buckets, count, total in snap:
            labels = _request_labels(key)
            cumulative = 0
            for bound, n in zip(bounds, buckets, strict=True):
                cumulative += n
                out.lines.append(
                    f"{name}_bucket{format_labels([*labels, ('le', bound)])} {cumulative}"
                )
            out.lines.append(f"{name}_sum{format_labels(labels)} {format_number(total)}")
            out.lines.append(f"{name}_count{format_labels(labels)} {count}")


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
