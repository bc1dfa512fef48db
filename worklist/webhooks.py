"""Webhook delivery: every event, POSTed as JSON to each configured URL, signed, retried.

Delivery state lives in ``webhook_deliveries`` (one row per event and URL), so a restart
neither loses nor repeats a delivered event, and any number of API replicas share the work.
``WebhookDispatcher`` runs one thread per URL; it wakes when events were committed
(``worklist.event_signal.CommitSignal``: this process's commits at once, other replicas'
through PostgreSQL ``NOTIFY``) and at least every ``IDLE_SECONDS`` (for retries that fall
due). Each pass (``deliver_once``):

1. enqueue: rows for the events after the newest one already queued for the URL (event ids
   are in commit order, ``worklist.events``, so none is skipped; a URL seen for the first
   time gets the events of the last ``BACKFILL``), ``ON CONFLICT DO NOTHING`` so two replicas
   cannot queue an event twice;
2. take due rows, urgent events first (``worklist.events.URGENT_KINDS``), then the longest
   due: one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`` leases them by
   pushing ``next_attempt_at`` forward ``LEASE``, so replicas take different rows and no
   transaction stays open while a receiver answers;
3. POST them ``parallel`` at a time (the limit per endpoint), urgent ones first; each answer
   is recorded at once: delivered, or retried after an exponential back-off; after
   ``max_attempts`` the row is marked failed.

Headers: ``X-Teleread-Event`` (the kind), ``X-Teleread-Delivery`` (the row id, stable across
retries) and ``X-Teleread-Signature: sha256=<hex HMAC-SHA256 of the raw body>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Table, case, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from worklist.event_signal import CommitSignal
from worklist.events import URGENT_KINDS, as_dict
from worklist.models import (
    DELIVERY_DELIVERED,
    DELIVERY_FAILED,
    DELIVERY_PENDING,
    Event,
    WebhookDelivery,
)

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Teleread-Signature"
EVENT_HEADER = "X-Teleread-Event"
DELIVERY_HEADER = "X-Teleread-Delivery"
BACKFILL = timedelta(minutes=10)
BASE_DELAY = timedelta(seconds=5)
MAX_DELAY = timedelta(hours=1)
LEASE = timedelta(seconds=60)
BATCH = 50
ENQUEUE_BATCH = 1000
PARALLEL = 4  # deliveries in flight per endpoint
IDLE_SECONDS = 1.0


def sign(body: bytes, secret: str) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str | None) -> bool:
    """True when ``header`` is the signature of ``body`` (a receiver's check)."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)


def body_for(event: Event) -> bytes:
    return json.dumps(as_dict(event), separators=(",", ":"), sort_keys=True).encode()


def backoff(
    attempts: int, *, base: timedelta = BASE_DELAY, cap: timedelta = MAX_DELAY
) -> timedelta:
    """Delay before the next try after ``attempts`` failed ones: 5 s, 10 s, 20 s ... 1 h
    (``base`` doubled each time, at most ``cap``)."""
    delay: timedelta = base * (2 ** min(max(0, attempts - 1), 30))
    return min(delay, cap)


def newest_queued(*, session: Session, url: str) -> int | None:
    """The newest event id queued for ``url`` (None: the URL is new)."""
    return session.scalar(
        select(func.max(WebhookDelivery.event_id)).where(WebhookDelivery.url == url)
    )


def enqueue_after(
    *, session: Session, url: str, after: int | None, now: datetime
) -> tuple[int | None, int]:
    """Queue deliveries to ``url`` of the events after ``after`` (None: those of the last
    ``BACKFILL``), at most ``ENQUEUE_BATCH``: the newest event id queued (``after`` when
    there was none) and how many were."""
    stmt = select(Event.id).order_by(Event.id).limit(ENQUEUE_BATCH)
    if after is None:
        stmt = stmt.where(Event.created_at >= now - BACKFILL)
    else:
        stmt = stmt.where(Event.id > after)
    ids = list(session.scalars(stmt))
    if not ids:
        return after, 0
    table: Table = WebhookDelivery.__table__  # type: ignore[assignment]
    rows = [
        {
            "event_id": i,
            "url": url,
            "status": DELIVERY_PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for i in ids
    ]
    insert: Any = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(table).values(rows).on_conflict_do_nothing(index_elements=["event_id", "url"])
    )
    return ids[-1], len(ids)


def enqueue(*, session: Session, urls: Sequence[str], now: datetime) -> int:
    """Queue deliveries of new events to each URL (after each URL's newest queued); how
    many rows were queued."""
    added = 0
    for url in urls:
        after = newest_queued(session=session, url=url)
        added += enqueue_after(session=session, url=url, after=after, now=now)[1]
    return added


@dataclass(frozen=True, slots=True)
class _Job:
    delivery_id: int
    url: str
    kind: str
    body: bytes
    attempts: int  # including this one
    urgent: bool


@dataclass
class RunStats:
    queued: int = 0
    taken: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0


def _take_due(session: Session, url: str, now: datetime, batch: int) -> list[_Job]:
    """Lease up to ``batch`` due deliveries to ``url``, urgent events first."""
    urgency = case((Event.kind.in_(sorted(URGENT_KINDS)), 0), else_=1)
    due = (
        select(WebhookDelivery.id)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(
            WebhookDelivery.url == url,
            WebhookDelivery.status == DELIVERY_PENDING,
            WebhookDelivery.next_attempt_at <= now,
        )
        .order_by(urgency, WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(batch)
        .with_for_update(skip_locked=True, of=WebhookDelivery)
    )
    leased = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(due.scalar_subquery()))
        .values(attempts=WebhookDelivery.attempts + 1, next_attempt_at=now + LEASE)
        .returning(WebhookDelivery.id, WebhookDelivery.attempts, WebhookDelivery.event_id)
        .execution_options(synchronize_session=False)
    ).all()
    if not leased:
        return []
    by_id = {
        e.id: e for e in session.scalars(select(Event).where(Event.id.in_([r[2] for r in leased])))
    }
    jobs = [
        _Job(
            row[0],
            url,
            by_id[row[2]].kind,
            body_for(by_id[row[2]]),
            row[1],
            by_id[row[2]].kind in URGENT_KINDS,
        )
        for row in leased
    ]
    jobs.sort(key=lambda j: (not j.urgent, j.delivery_id))
    return jobs


def _post(client: httpx.Client, job: _Job, secret: str) -> str | None:
    """None on a 2xx answer, else what went wrong."""
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(job.body, secret),
        EVENT_HEADER: job.kind,
        DELIVERY_HEADER: str(job.delivery_id),
    }
    try:
        response = client.post(job.url, content=job.body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


def _record(
    factory: sessionmaker[Session],
    job: _Job,
    error: str | None,
    now: datetime,
    max_attempts: int,
    stats: RunStats,
    lock: threading.Lock,
) -> None:
    values: dict[str, Any]
    if error is None:
        values = {"status": DELIVERY_DELIVERED, "delivered_at": now, "last_error": None}
        outcome = "delivered"
    elif job.attempts >= max_attempts:
        values = {"status": DELIVERY_FAILED, "last_error": error}
        outcome = "failed"
        logger.warning(
            "webhook delivery gave up",
            extra={"action": "webhook_failed", "delivery_id": job.delivery_id},
        )
    else:
        values = {"next_attempt_at": now + backoff(job.attempts), "last_error": error}
        outcome = "retried"
        logger.info(
            "webhook delivery will be retried",
            extra={
                "action": "webhook_retry",
                "delivery_id": job.delivery_id,
                "attempts": job.attempts,
            },
        )
    with factory.begin() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == job.delivery_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    with lock:
        setattr(stats, outcome, getattr(stats, outcome) + 1)


def deliver_once(
    *,
    factory: sessionmaker[Session],
    client: httpx.Client,
    pool: ThreadPoolExecutor,
    url: str,
    secret: str,
    clock: Callable[[], datetime],
    max_attempts: int = 10,
    batch: int = BATCH,
    after: int | None = None,
    known: bool = False,
) -> tuple[RunStats, int | None]:
    """One pass for ``url``: queue new events (after ``after`` when ``known``, else after
    the newest queued), then POST every due delivery, ``pool``'s size at a time, each
    recorded as it is answered. The stats and the newest event id queued."""
    stats = RunStats()
    with factory.begin() as session:
        if not known:
            after = newest_queued(session=session, url=url)
        newest, stats.queued = enqueue_after(session=session, url=url, after=after, now=clock())
        jobs = _take_due(session, url, clock(), batch)
    stats.taken = len(jobs)
    lock = threading.Lock()

    def send(job: _Job) -> None:
        error = _post(client, job, secret)
        _record(factory, job, error, clock(), max_attempts, stats, lock)

    for future in [pool.submit(send, job) for job in jobs]:
        future.result()
    return stats, newest


def run_once(
    *,
    factory: sessionmaker[Session],
    client: httpx.Client,
    urls: Sequence[str],
    secret: str,
    clock: Callable[[], datetime],
    max_attempts: int = 10,
    batch: int = BATCH,
    parallel: int = PARALLEL,
) -> RunStats:
    """``deliver_once`` for each URL (what one pass of the dispatcher does)."""
    total = RunStats()
    with ThreadPoolExecutor(parallel, thread_name_prefix="webhook") as pool:
        for url in urls:
            stats, _ = deliver_once(
                factory=factory,
                client=client,
                pool=pool,
                url=url,
                secret=secret,
                clock=clock,
                max_attempts=max_attempts,
                batch=batch,
            )
            for name in ("queued", "taken", "delivered", "retried", "failed"):
                setattr(total, name, getattr(total, name) + getattr(stats, name))
    return total


class WebhookDispatcher:
    """One thread per URL delivering as events are committed (see the module docstring)."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        urls: Sequence[str],
        secret: str,
        clock: Callable[[], datetime],
        timeout: float = 5.0,
        max_attempts: int = 10,
        parallel: int = PARALLEL,
    ) -> None:
        self._factory = factory
        self._urls = list(urls)
        self._secret = secret
        self._clock = clock
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._parallel = parallel
        self._signal = CommitSignal(factory)
        self._stop = threading.Event()
        self._wakes = [threading.Event() for _ in self._urls]
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if not self._urls:
            return
        for wake in self._wakes:
            self._signal.subscribe(wake.set)
        self._signal.start()
        for url, wake in zip(self._urls, self._wakes, strict=True):
            thread = threading.Thread(
                target=self._run, args=(url, wake), name="webhooks", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for wake in self._wakes:
            wake.set()
        self._signal.stop()
        for thread in self._threads:
            thread.join(timeout=self._timeout + 5)

    def _run(self, url: str, wake: threading.Event) -> None:
        after: int | None = None
        known = False
        with (
            httpx.Client(timeout=self._timeout, follow_redirects=False) as client,
            ThreadPoolExecutor(self._parallel, thread_name_prefix="webhook") as pool,
        ):
            while not self._stop.is_set():
                try:
                    stats, after = deliver_once(
                        factory=self._factory,
                        client=client,
                        pool=pool,
                        url=url,
                        secret=self._secret,
                        clock=self._clock,
                        max_attempts=self._max_attempts,
                        after=after,
                        known=known,
                    )
                    known = True
                except Exception:
                    logger.exception("webhook pass failed", extra={"action": "webhook_pass_failed"})
                    known = False
                    stats = RunStats()
                if stats.taken or stats.queued:
                    continue  # more may be waiting
                wake.wait(IDLE_SECONDS)
                wake.clear()


__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "RunStats",
    "WebhookDispatcher",
    "backoff",
    "body_for",
    "deliver_once",
    "enqueue",
    "enqueue_after",
    "newest_queued",
    "run_once",
    "sign",
    "verify",
]
