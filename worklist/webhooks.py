"""Webhook delivery: every event, POSTed as JSON to each configured URL, signed, retried.

Delivery state lives in ``webhook_deliveries`` (one row per event and URL), so a restart
neither loses nor repeats a delivered event. One ``run_once`` call (from housekeeping):

1. enqueue: rows for events newer than the newest one already queued for each URL (a URL
   seen for the first time gets the events of the last ``BACKFILL``), ``ON CONFLICT DO
   NOTHING`` so two replicas cannot queue an event twice;
2. take due rows: each is leased by pushing ``next_attempt_at`` forward with a conditional
   update, then committed, so no transaction stays open while we wait on a receiver;
3. POST each (no database session held), then record success or schedule a retry with
   exponential backoff; after ``max_attempts`` the row is marked failed.

Headers: ``X-Teleread-Event`` (the kind), ``X-Teleread-Delivery`` (the row id, stable across
retries) and ``X-Teleread-Signature: sha256=<hex HMAC-SHA256 of the raw body>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from worklist.events import as_dict
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


def sign(body: bytes, secret: str) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str | None) -> bool:
    """True when ``header`` is the signature of ``body`` (a receiver's check)."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)


def body_for(event: Event) -> bytes:
    return json.dumps(as_dict(event), separators=(",", ":"), sort_keys=True).encode()


def backoff(attempts: int) -> timedelta:
    """Delay before the next try after ``attempts`` failed ones: 5 s, 10 s, 20 s ... 1 h."""
    delay: timedelta = BASE_DELAY * (2 ** max(0, attempts - 1))
    return min(delay, MAX_DELAY)


def enqueue(*, session: Session, urls: Sequence[str], now: datetime) -> int:
    """Queue deliveries of new events to each URL; how many rows were added."""
    table: Table = WebhookDelivery.__table__  # type: ignore[assignment]
    added = 0
    for url in urls:
        last = session.scalar(
            select(func.max(WebhookDelivery.event_id)).where(WebhookDelivery.url == url)
        )
        stmt = select(Event.id).order_by(Event.id).limit(ENQUEUE_BATCH)
        if last is None:
            stmt = stmt.where(Event.created_at >= now - BACKFILL)
        else:
            stmt = stmt.where(Event.id > last)
        ids = list(session.scalars(stmt))
        if not ids:
            continue
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
        insert: Any = (
            pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        )
        session.execute(
            insert(table).values(rows).on_conflict_do_nothing(index_elements=["event_id", "url"])
        )
        added += len(rows)
    return added


@dataclass(frozen=True, slots=True)
class _Job:
    delivery_id: int
    url: str
    kind: str
    body: bytes
    attempts: int  # including this one


@dataclass
class RunStats:
    queued: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0


def _take_due(session: Session, now: datetime, batch: int) -> list[_Job]:
    due = session.execute(
        select(WebhookDelivery.id, WebhookDelivery.attempts, WebhookDelivery.next_attempt_at)
        .where(
            WebhookDelivery.status == DELIVERY_PENDING,
            WebhookDelivery.next_attempt_at <= now,
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(batch)
    ).all()
    jobs: list[_Job] = []
    for row in due:
        leased = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == row.id,
                WebhookDelivery.status == DELIVERY_PENDING,
                WebhookDelivery.attempts == row.attempts,
            )
            .values(attempts=row.attempts + 1, next_attempt_at=now + LEASE)
            .returning(WebhookDelivery.id)
            .execution_options(synchronize_session=False)
        ).first()
        if leased is None:
            continue  # another replica took it
        delivery = session.get(WebhookDelivery, row.id)
        assert delivery is not None
        event = session.get(Event, delivery.event_id)
        assert event is not None
        jobs.append(_Job(row.id, delivery.url, event.kind, body_for(event), row.attempts + 1))
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


def run_once(
    *,
    factory: sessionmaker[Session],
    client: httpx.Client,
    urls: Sequence[str],
    secret: str,
    clock: Callable[[], datetime],
    max_attempts: int = 10,
    batch: int = BATCH,
) -> RunStats:
    """Queue new events, then try every due delivery once."""
    stats = RunStats()
    if not urls:
        return stats
    with factory.begin() as session:
        stats.queued = enqueue(session=session, urls=urls, now=clock())
        jobs = _take_due(session, clock(), batch)
    results = [(job, _post(client, job, secret)) for job in jobs]
    with factory.begin() as session:
        now = clock()
        for job, error in results:
            values: dict[str, Any]
            if error is None:
                values = {"status": DELIVERY_DELIVERED, "delivered_at": now, "last_error": None}
                stats.delivered += 1
            elif job.attempts >= max_attempts:
                values = {"status": DELIVERY_FAILED, "last_error": error}
                stats.failed += 1
                logger.warning(
                    "webhook delivery gave up",
                    extra={"action": "webhook_failed", "delivery_id": job.delivery_id},
                )
            else:
                values = {"next_attempt_at": now + backoff(job.attempts), "last_error": error}
                stats.retried += 1
                logger.info(
                    "webhook delivery will be retried",
                    extra={
                        "action": "webhook_retry",
                        "delivery_id": job.delivery_id,
                        "attempts": job.attempts,
                    },
                )
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == job.delivery_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
    return stats


__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "RunStats",
    "backoff",
    "body_for",
    "enqueue",
    "run_once",
    "sign",
    "verify",
]
