"""What ``/metrics`` serves for one app (``ApiMetrics``): its registry, with the request
figures, the turnaround histograms and the worklist's figures, read from the database at
scrape time and cached, as gauges and counters (``WorklistCollector``)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from viewer_api.metrics.http_requests import PREFIX, HttpMetrics
from viewer_api.metrics.turnaround import TurnaroundMetrics
from worklist.metrics_queries import (
    PRIORITIES,
    ROUTINE,
    WorklistFigures,
    finalised_late,
    worklist_figures,
)
from worklist.models import CATEGORY_CHEST_PAIN, CATEGORY_STROKE

logger = logging.getLogger(__name__)

CATEGORIES = (CATEGORY_STROKE, CATEGORY_CHEST_PAIN, ROUTINE)
DEFAULT_CACHE_SECONDS = 5.0
DEFAULT_LATE_CACHE_SECONDS = 300.0


# prometheus-client's multiprocess mode: set (by teleread.api_workers) in every API worker
# process before prometheus_client is imported, a directory private to that set of workers
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class ApiMetrics:
    """What ``/metrics`` serves for one app: one registry holding its request figures
    (``http``), its turnaround histograms (``turnaround``) and the cached database
    figures.

    In an API worker process (``PROMETHEUS_MULTIPROC_DIR`` set) the request and turnaround
    figures are kept in that directory's files, one per process, and a scrape of any worker
    serves ``exposed``: their sums over every worker alive or dead since the API started
    (``MultiProcessCollector``; counters and histograms only, no ``_created`` series), with
    the database figures of the worker scraped."""

    def __init__(
        self,
        *,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        late_cache_seconds: float = DEFAULT_LATE_CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = CollectorRegistry()
        self.http = HttpMetrics(self.registry)
        self.turnaround = TurnaroundMetrics(self.registry)
        multiproc_dir = os.environ.get(MULTIPROC_DIR_ENV)
        if multiproc_dir:
            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed, path=multiproc_dir)
        else:
            self.exposed = self.registry
        self.exposed.register(WorklistCollector(self))
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

    def collect_database(self) -> Iterator[Metric]:
        """The cached figures as metric families (read by ``database_figures`` first)."""
        yield _gauge("database_up", "1 if the last read of the worklist figures succeeded",
                     1 if self._database_up else 0)  # fmt: skip
        yield _gauge(
            "metrics_database_seconds",
            "time the last read of the worklist figures took",
            round(self._refresh_seconds, 6),
        )
        if self._figures is not None:
            yield from worklist_families(self._figures)
        if self._late is not None:
            late = CounterMetricFamily(
                PREFIX + "studies_finalised_late",
                "studies whose report was signed final after their deadline, by category",
                labels=["category"],
            )
            for category, n in _by_category(self._late):
                late.add_metric([category], n)
            yield late


class WorklistCollector:
    """The worklist's figures in the app's registry, as ``ApiMetrics`` cached them."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.collect_database()


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


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


def worklist_families(f: WorklistFigures) -> Iterator[Metric]:
    categories = [*CATEGORIES, *sorted({c for c, _ in f.open_studies} - set(CATEGORIES))]
    open_studies = GaugeMetricFamily(
        PREFIX + "worklist_open_studies",
        "studies on the worklist (not final, amended or cancelled) by category and priority",
        labels=["category", "priority"],
    )
    for c in categories:
        for p in PRIORITIES.values():
            open_studies.add_metric([c, p], f.open_studies.get((c, p), 0))
    yield open_studies
    past = GaugeMetricFamily(
        PREFIX + "worklist_past_deadline_studies",
        "studies on the worklist past their reading deadline, by category",
        labels=["category"],
    )
    for c, n in _by_category(f.open_past_deadline):
        past.add_metric([c], n)
    yield past
    yield _gauge(
        "oldest_unclaimed_urgent_study_age_seconds",
        "age of the oldest urgent study nobody has claimed (0: none waits)",
        round(f.oldest_unclaimed_urgent_age or 0.0, 3),
    )
    yield _gauge(
        "oldest_open_urgent_study_age_seconds",
        "age of the oldest urgent study not yet finalised, claimed or not (0: none)",
        round(f.oldest_open_urgent_age or 0.0, 3),
    )
    yield _gauge(
        "claims_active", "studies on the worklist a reader holds a claim on", f.claims_active
    )
    yield CounterMetricFamily(
        PREFIX + "studies_ingested",
        "studies ever indexed (the highest study id)",
        value=f.studies_indexed,
    )
    yield CounterMetricFamily(
        PREFIX + "instances_ingested",
        "instances ever indexed (the highest instance id)",
        value=f.instances_indexed,
    )
