"""Prometheus text exposition of the gateway's figures, on an optional loopback HTTP port.

The same figures as ``teleread gateway status`` (``gateway.ops.spool_status``): spool bytes,
queue by priority and state, oldest unsent item, whether an upload error is outstanding; and
the spool's monotonic counters (instances received, stored, duplicates, conflicts, refused for
a full spool; uploads, upload failures, announce failures, bytes uploaded, bytes saved by
recompression). Every scrape reads ``outbox.db`` read-only, so the figures add up across
acceptor processes and survive restarts; the counters only reset if the spool is deleted.

    server = start_metrics_server(settings.spool_dir, host="127.0.0.1", port=9108)
    ...
    server.stop()

Plain ``http.server`` in a daemon thread (no extra dependency): ``GET /metrics`` answers
``text/plain; version=0.0.4``; anything else 404.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gateway.ops import spool_status
from gateway.spool import ANNOUNCED, CONFLICT, MISSING, RECEIVED, UPLOADED, Spool

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "teleread_gateway_"
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


def render(status: dict[str, Any]) -> str:
    """The Prometheus text format (0.0.4) of a ``spool_status`` dict."""
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {PREFIX}{name} {help_text}")
        out.append(f"# TYPE {PREFIX}{name} {kind}")
        for labels, value in samples:
            out.append(f"{PREFIX}{name}{labels} {value:g}")

    metric("spool_bytes", "gauge", "bytes held in the spool", [("", status["spool_bytes"])])
    cells = status["queue"].get("by_priority_and_state", {})
    samples = []
    for priority in ("urgent", "routine"):
        for state in (RECEIVED, UPLOADED, ANNOUNCED, CONFLICT, MISSING):
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
    return "\n".join(out) + "\n"


def metrics_text(spool: Spool | Path | str) -> str:
    return render(spool_status(spool))


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
