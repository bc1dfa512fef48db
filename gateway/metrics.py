"""Prometheus text exposition of the gateway's figures, on an optional loopback HTTP port.

The same figures as ``teleread gateway status`` (``gateway.ops.spool_status``): spool bytes,
queue by priority and state, oldest unsent item, whether an upload error is outstanding; and
the spool's monotonic counters (instances received, stored, duplicates, conflicts, refused for
a full spool; uploads, upload failures, announce failures, bytes uploaded, bytes saved by
recompression). Every scrape reads ``outbox.db`` read-only, so the figures add up across
acceptor processes and survive restarts; the counters only reset if the spool is deleted.

For the dashboards: ingest rate is ``rate(teleread_gateway_instances_received_total[5m])``;
spool depth is ``spool_instances`` and ``spool_bytes`` (with ``spool_free_bytes`` left on its
disk); forward lag is ``oldest_unsent_age_seconds`` (how long the oldest waiting instance has
waited) and ``forward_lag_seconds``: quantiles (0.5, 0.95, max) of the time from receipt to
upload and to announcement, over the instances received in the last ``LAG_WINDOW_SECONDS``
that got that far (a gauge over a sliding window, from the outbox's timestamps through its
queue index; a cumulative histogram would need counting in the spool's write path). Upload
trouble is ``upload_failures_total``, ``announce_failures_total`` and
``last_error_outstanding``.

    server = start_metrics_server(settings.spool_dir, host="127.0.0.1", port=9108)
    ...
    server.stop()

Plain ``http.server`` in a daemon thread (no extra dependency): ``GET /metrics`` answers
``text/plain; version=0.0.4``; anything else 404.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gateway.ops import Query, spool_status
from gateway.outbox import (
    ANNOUNCED,
    CONFLICT,
    HELD_STATES,
    INVALID,
    MISSING,
    RECEIVED,
    UPLOADED,
)
from gateway.spool import Spool

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "teleread_gateway_"
# forward lag quantiles cover the instances received in this many seconds
LAG_WINDOW_SECONDS = 900.0
LAG_QUANTILES = (0.5, 0.95, 1.0)
LAG_MAX_ROWS = 50_000  # a bound on one scrape's work, whatever the burst
_PRIORITIES = ((0, "urgent"), (1, "routine"))
_COUNTER_HELP = {
    "instances_received": "C-STORE datasets the spool was asked to keep",
    "instances_stored": "new instances made durable in the spool",
    "instances_duplicate": "re-sent identical instances (no-op)",
    "instances_conflict": "different bytes under a known SOP Instance UID (kept, not uploaded)",
    "instances_refused_spool_full": "instances refused with OUT_OF_RESOURCES (spool full)",
    "uploads": "instances uploaded to the object store and verified",
    "upload_failures": "failed upload attempts",
    "announce_failures": "failed announcement calls to the county API",
    "instances_announced": "instances announced to the county API",
    "bytes_uploaded": "bytes uploaded to the object store",
    "bytes_saved_recompression": "bytes not sent thanks to lossless recompression",
}


def _number(value: float) -> str:
    """Integers exactly (``:g`` would print 1234567 as 1.23457e+06), floats in full."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def render(status: dict[str, Any], lag: dict[str, Any] | None = None) -> str:
    """The Prometheus text format (0.0.4) of a ``spool_status`` dict (and the
    ``forward_lag`` figures, when given)."""
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {PREFIX}{name} {help_text}")
        out.append(f"# TYPE {PREFIX}{name} {kind}")
        for labels, value in samples:
            out.append(f"{PREFIX}{name}{labels} {_number(value)}")

    metric("spool_bytes", "gauge", "bytes held in the spool", [("", status["spool_bytes"])])
    by_state = status["queue"].get("by_state", {})
    metric(
        "spool_instances",
        "gauge",
        "instances whose file the spool holds (received, uploaded, conflict)",
        [("", sum(by_state.get(state, 0) for state in HELD_STATES))],
    )
    free = status.get("spool_free_bytes")
    if free is not None:
        metric("spool_free_bytes", "gauge", "free bytes on the spool's file system", [("", free)])
    cells = status["queue"].get("by_priority_and_state", {})
    samples = []
    for priority in ("urgent", "routine"):
        for state in (RECEIVED, UPLOADED, ANNOUNCED, CONFLICT, MISSING, INVALID):
            count = cells.get(priority, {}).get(state, 0)
            samples.append((f'{{priority="{priority}",state="{state}"}}', count))
    metric("outbox_instances", "gauge", "outbox rows by priority and state", samples)
    metric(
        "pending_instances",
        "gauge",
        "instances not yet announced, by priority",
        [
            (f'{{priority="{p}"}}', n)
            for p, n in sorted(status["queue"]["pending_by_priority"].items())
        ],
    )
    oldest = status.get("oldest_unsent")
    metric(
        "oldest_unsent_age_seconds",
        "gauge",
        "age of the oldest instance not yet announced (0: none)",
        [("", oldest["age_seconds"] if oldest else 0)],
    )
    metric(
        "oldest_urgent_unsent_age_seconds",
        "gauge",
        "age of the oldest urgent instance not yet announced (0: none)",
        [("", status.get("oldest_urgent_unsent_age_seconds") or 0)],
    )
    last = status.get("last_error")
    metric(
        "last_error_outstanding",
        "gauge",
        "1 while a pending instance's last attempt failed",
        [("", 1 if last else 0)],
    )
    metric(
        "problem_instances", "gauge", "conflict and missing rows", [("", len(status["problems"]))]
    )
    for name, value in status.get("counters", {}).items():
        help_text = _COUNTER_HELP.get(name, name)
        metric(f"{name}_total", "counter", help_text, [("", value)])
    if lag is not None:
        window = f"the last {lag['window_seconds']:g} s"
        samples = []
        counts: list[tuple[str, float]] = []
        for priority in ("urgent", "routine"):
            for stage in ("upload", "announce"):
                values = lag["seconds"][priority][stage]
                labels = f'priority="{priority}",stage="{stage}"'
                counts.append((f"{{{labels}}}", len(values)))
                for q in LAG_QUANTILES:
                    value = _quantile(values, q)
                    if value is not None:
                        samples.append((f'{{{labels},quantile="{q:g}"}}', round(value, 3)))
        metric(
            "forward_lag_seconds",
            "gauge",
            f"time from receipt to upload / announcement, quantiles over instances received "
            f"in {window}",
            samples,
        )
        metric(
            "forward_lag_window_instances",
            "gauge",
            f"instances received in {window} that were uploaded / announced",
            counts,
        )
    return "\n".join(out) + "\n"


def _quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted ``values`` (None when empty)."""
    if not values:
        return None
    rank = max(1, -(-len(values) * q // 1))  # ceil(n * q)
    return values[min(len(values), int(rank)) - 1]


def forward_lag(
    query: Query, *, now: float | None = None, window: float = LAG_WINDOW_SECONDS
) -> dict[str, Any]:
    """Seconds from receipt to upload and to announcement (sorted lists by priority and
    stage) of the instances received in the last ``window`` seconds, read through the
    outbox's queue index (state, priority_rank, received_ts)."""
    since = (time.time() if now is None else now) - window
    seconds: dict[str, dict[str, list[float]]] = {
        name: {"upload": [], "announce": []} for _, name in _PRIORITIES
    }
    for rank, name in _PRIORITIES:
        rows = query(
            "SELECT received_ts, uploaded_at, announced_at FROM outbox "
            "WHERE state IN (?, ?) AND priority_rank = ? AND received_ts >= ? LIMIT ?",
            (UPLOADED, ANNOUNCED, rank, since, LAG_MAX_ROWS),
        )
        for received, uploaded, announced in rows:
            if uploaded is not None:
                seconds[name]["upload"].append(max(0.0, float(uploaded) - float(received)))
            if announced is not None:
                seconds[name]["announce"].append(max(0.0, float(announced) - float(received)))
    for stages in seconds.values():
        for values in stages.values():
            values.sort()
    return {"window_seconds": window, "seconds": seconds}


def _read_lag(spool: Spool | Path) -> dict[str, Any]:
    if isinstance(spool, Spool):
        return forward_lag(spool.outbox.query)
    db = Path(spool).absolute() / "outbox.db"
    if not db.exists():
        return forward_lag(lambda _sql, _params: [])
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return forward_lag(lambda sql, params: list(conn.execute(sql, params)))
    finally:
        conn.close()


def metrics_text(spool: Spool | Path | str) -> str:
    source = spool if isinstance(spool, Spool) else Path(spool)
    status = spool_status(source)
    root = source.root if isinstance(source, Spool) else source
    try:
        status["spool_free_bytes"] = shutil.disk_usage(root).free
    except OSError:  # the spool directory is not there (yet)
        status["spool_free_bytes"] = None
    return render(status, _read_lag(source))


class _Handler(BaseHTTPRequestHandler):
    spool: Spool | Path

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404, "try /metrics")
            return
        try:
            body = metrics_text(self.spool).encode()
            code = 200
        except Exception as exc:  # a scrape must not take the gateway down
            logger.warning(
                "metrics not rendered", extra={"action": "metrics_failed", "error": repr(exc)}
            )
            body, code = b"# metrics unavailable\n", 503
        self.send_response(code)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class MetricsServer:
    """``/metrics`` on (host, port) in a daemon thread; ``port`` 0 picks a free one."""

    def __init__(self, spool: Spool | Path | str, *, host: str = "127.0.0.1", port: int = 0):
        source = spool if isinstance(spool, Spool) else Path(spool)
        handler = type("MetricsHandler", (_Handler,), {"spool": source})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="gateway-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        logger.info(
            "metrics endpoint listening",
            extra={"action": "metrics_started", "port": self.port},
        )
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def start_metrics_server(
    spool: Spool | Path | str, *, host: str = "127.0.0.1", port: int = 0
) -> MetricsServer:
    """Start serving ``/metrics`` for ``spool`` (a path: read-only, any process)."""
    return MetricsServer(spool, host=host, port=port).start()
