"""Prometheus metrics of the gateway, through ``prometheus-client``, on an optional loopback
HTTP port (``TELEREAD_GATEWAY_METRICS_HOST:PORT``, ``GET /metrics``).

The same figures as ``teleread gateway status`` (``gateway.ops.spool_status``): spool bytes,
queue by priority and state, oldest unsent item, whether an upload error is outstanding; the
spool's monotonic counters (instances received, stored, duplicates, re-sent with other bytes,
refused for a full spool; uploads, upload failures, announce failures, bytes uploaded, bytes
saved by recompression); and how the running gateway receives (``teleread_gateway_info``). A custom
collector (``SpoolCollector``) reads ``outbox.db`` read-only at every scrape: the figures add
up across acceptor processes (each writes the same outbox) and survive restarts, with no
per-process registry to merge; the counters only reset if the spool is deleted.

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
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
    "instances_resent": "other bytes under a known SOP Instance UID (forwarded as a new version)",
    "instances_refused_spool_full": "instances refused with OUT_OF_RESOURCES (spool full)",
    "uploads": "instances uploaded to the object store and verified",
    "upload_failures": "failed upload attempts",
    "announce_failures": "failed announcement calls to the county API",
    "instances_announced": "instances announced to the county API",
    "instances_held_by_county": "instances the county held as conflicts (study of another "
    "site, another patient): kept here, not in the worklist",
    "instances_answered_held": "C-STOREs answered the held warning 0xB000 (kept, but not "
    "filed as sent: another version, another site's study UID, held by the county)",
    "associations_refused": "associations refused: a called AE title not the gateway's, an "
    "unknown calling AE title, a device not of its site (address, certificate)",
    "bytes_uploaded": "bytes uploaded to the object store",
    "bytes_saved_recompression": "bytes not sent thanks to lossless recompression",
}


def families(status: dict[str, Any], lag: dict[str, Any] | None = None) -> Iterator[Metric]:
    """The metric families of a ``spool_status`` dict (and the ``forward_lag`` figures, and
    the running gateway's state under ``status["gateway"]``, when there)."""

    def gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(PREFIX + name, help_text, value=value)

    yield gauge("spool_bytes", "bytes held in the spool", status["spool_bytes"])
    by_state = status["queue"].get("by_state", {})
    yield gauge(
        "spool_instances",
        "instances whose file the spool holds (received, uploaded, conflict)",
        sum(by_state.get(state, 0) for state in HELD_STATES),
    )
    free = status.get("spool_free_bytes")
    if free is not None:
        yield gauge("spool_free_bytes", "free bytes on the spool's file system", free)
    cells = status["queue"].get("by_priority_and_state", {})
    outbox = GaugeMetricFamily(
        PREFIX + "outbox_instances",
        "outbox rows by priority and state",
        labels=["priority", "state"],
    )
    for priority in ("urgent", "routine"):
        for state in (RECEIVED, UPLOADED, ANNOUNCED, CONFLICT, MISSING, INVALID):
            outbox.add_metric([priority, state], cells.get(priority, {}).get(state, 0))
    yield outbox
    pending = GaugeMetricFamily(
        PREFIX + "pending_instances",
        "instances not yet announced, by priority",
        labels=["priority"],
    )
    for priority, n in sorted(status["queue"]["pending_by_priority"].items()):
        pending.add_metric([priority], n)
    yield pending
    oldest = status.get("oldest_unsent")
    yield gauge(
        "oldest_unsent_age_seconds",
        "age of the oldest instance not yet announced (0: none)",
        oldest["age_seconds"] if oldest else 0,
    )
    yield gauge(
        "oldest_urgent_unsent_age_seconds",
        "age of the oldest urgent instance not yet announced (0: none)",
        status.get("oldest_urgent_unsent_age_seconds") or 0,
    )
    yield gauge(
        "last_error_outstanding",
        "1 while a pending instance's last attempt failed",
        1 if status.get("last_error") else 0,
    )
    yield gauge("problem_instances", "conflict and missing rows", len(status["problems"]))
    for name, value in status.get("counters", {}).items():
        yield CounterMetricFamily(PREFIX + name, _COUNTER_HELP.get(name, name), value=value)
    gateway = status.get("gateway")
    if gateway and gateway.get("running"):
        path = gateway.get("fast_path") or {}
        info = GaugeMetricFamily(
            PREFIX + "info",
            "how the running gateway receives (always 1)",
            labels=["receiving", "workers", "fast_path", "pynetdicom"],
        )
        info.add_metric(
            [
                str(gateway.get("receiving", "")),
                str(gateway.get("workers", "")),
                str(path.get("mode", "")),
                str(path.get("pynetdicom", "")),
            ],
            1,
        )
        yield info
    if lag is not None:
        yield from _lag_families(lag)


def _lag_families(lag: dict[str, Any]) -> Iterator[Metric]:
    window = f"the last {lag['window_seconds']:g} s"
    quantiles = GaugeMetricFamily(
        PREFIX + "forward_lag_seconds",
        f"time from receipt to upload / announcement, quantiles over instances received in "
        f"{window}",
        labels=["priority", "stage", "quantile"],
    )
    counts = GaugeMetricFamily(
        PREFIX + "forward_lag_window_instances",
        f"instances received in {window} that were uploaded / announced",
        labels=["priority", "stage"],
    )
    for priority in ("urgent", "routine"):
        for stage in ("upload", "announce"):
            values = lag["seconds"][priority][stage]
            counts.add_metric([priority, stage], len(values))
            for q in LAG_QUANTILES:
                value = _quantile(values, q)
                if value is not None:
                    quantiles.add_metric([priority, stage, f"{q:g}"], round(value, 3))
    yield quantiles
    yield counts


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def render(status: dict[str, Any], lag: dict[str, Any] | None = None) -> str:
    """The text exposition of a ``spool_status`` dict (and ``forward_lag`` figures)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families(status, lag))))
    return generate_latest(registry).decode()


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


class SpoolCollector(Collector):
    """The figures of a spool, read from its ``outbox.db`` (read-only, any process) at every
    scrape."""

    def __init__(self, spool: Spool | Path | str) -> None:
        self.source: Spool | Path = spool if isinstance(spool, Spool) else Path(spool)

    def collect(self) -> Iterable[Metric]:
        try:
            status = spool_status(self.source)
            root = self.source.root if isinstance(self.source, Spool) else self.source
            try:
                status["spool_free_bytes"] = shutil.disk_usage(root).free
            except OSError:  # the spool directory is not there (yet)
                status["spool_free_bytes"] = None
            return list(families(status, _read_lag(self.source)))
        except Exception as exc:  # a scrape must not take the gateway down
            logger.warning(
                "metrics not collected", extra={"action": "metrics_failed", "error": repr(exc)}
            )
            return []


def metrics_text(spool: Spool | Path | str) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SpoolCollector(spool))
    return generate_latest(registry).decode()


class MetricsServer:
    """``/metrics`` (prometheus-client's HTTP server) on (host, port) in a daemon thread,
    with its own registry holding the spool's collector; ``port`` 0 picks a free one."""

    def __init__(self, spool: Spool | Path | str, *, host: str = "127.0.0.1", port: int = 0):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SpoolCollector(spool))
        self._host, self._port = host, port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server is not None else self._port

    def start(self) -> MetricsServer:
        self._server, self._thread = start_http_server(
            self._port, addr=self._host, registry=self.registry
        )
        logger.info(
            "metrics endpoint listening",
            extra={"action": "metrics_started", "port": self.port},
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)


def start_metrics_server(
    spool: Spool | Path | str, *, host: str = "127.0.0.1", port: int = 0
) -> MetricsServer:
    """Start serving ``/metrics`` for ``spool`` (a path: read-only, any process)."""
    return MetricsServer(spool, host=host, port=port).start()
