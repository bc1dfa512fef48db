"""Retention: the only code that deletes from the audit trail, and the pruning of the
event feed and finished webhook deliveries.

Audit events older than ``audit_retention_days`` go (0 keeps them forever), and the purge
itself is recorded as an audit event saying how many went. Events older than
``event_retention_days`` go (the SSE feed only needs recent ones; a client that resumes
from a pruned id simply gets what is left), once no webhook delivery row refers to them.
Webhook deliveries that finished (delivered or given up) more than
``webhook_retention_days`` ago go.

Every delete is bounded (``batch`` rows per statement, ``max_batches`` statements per
call) so a first purge of years of rows never holds a long lock; ``PurgeResult.more``
says whether another call has work left. Rows are chosen by a subquery
(``id IN (SELECT id ... LIMIT n)``), which PostgreSQL and SQLite both run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, aliased

from worklist import audit
from worklist.audit import AuditAction
from worklist.models import (
    DELIVERY_DELIVERED,
    DELIVERY_FAILED,
    AuditEvent,
    Event,
    WebhookDelivery,
)
from worklist.settings import WorklistSettings

logger = logging.getLogger(__name__)

BATCH = 5000
MAX_BATCHES = 20
ACTION_PURGED = AuditAction.AUDIT_PURGED


@dataclass
class PurgeResult:
    audit_events: int = 0
    events: int = 0
    webhook_deliveries: int = 0
    more: bool = False  # a bound was hit: call again

    @property
    def total(self) -> int:
        return self.audit_events + self.events + self.webhook_deliveries


def _delete_batches(
    session: Session, model: Any, where: list[Any], *, batch: int, max_batches: int
) -> tuple[int, bool]:
    """Delete matching rows ``batch`` at a time; (how many, whether rows may be left)."""
    total = 0
    for _ in range(max_batches):
        ids = select(model.id).where(*where).order_by(model.id).limit(batch)
        result: Any = session.execute(
            delete(model).where(model.id.in_(ids)).execution_options(synchronize_session=False)
        )
        deleted = int(result.rowcount or 0)
        total += deleted
        if deleted < batch:
            return total, False
    return total, True


def _cutoff(now: datetime, days: int) -> datetime | None:
    return None if days <= 0 else now - timedelta(days=days)


def purge_expired(
    *,
    session: Session,
    now: datetime,
    settings: WorklistSettings,
    batch: int = BATCH,
    max_batches: int = MAX_BATCHES,
) -> PurgeResult:
    """Delete what is past its retention (in the caller's transaction); record one audit
    event with the counts when anything was deleted."""
    result = PurgeResult()
    audit_cutoff = _cutoff(now, settings.audit_retention_days)
    if audit_cutoff is not None:
        result.audit_events, more = _delete_batches(
            session,
            AuditEvent,
            [AuditEvent.at < audit_cutoff],
            batch=batch,
            max_batches=max_batches,
        )
        result.more |= more

    delivery_cutoff = _cutoff(now, settings.webhook_retention_days)
    if delivery_cutoff is not None:
        # per URL, the delivery of the newest event stays: ``worklist.webhooks.enqueue``
        # resumes after it, so without it old events would be queued again
        newer = aliased(WebhookDelivery)
        newest_for_url = (
            select(func.max(newer.event_id))
            .where(newer.url == WebhookDelivery.url)
            .scalar_subquery()
        )
        result.webhook_deliveries, more = _delete_batches(
            session,
            WebhookDelivery,
            [
                WebhookDelivery.status.in_((DELIVERY_DELIVERED, DELIVERY_FAILED)),
                WebhookDelivery.created_at < delivery_cutoff,
                WebhookDelivery.event_id < newest_for_url,
            ],
            batch=batch,
            max_batches=max_batches,
        )
        result.more |= more

    event_cutoff = _cutoff(now, settings.event_retention_days)
    if event_cutoff is not None:
        # an event with a delivery row left (pending, kept for its own retention, or a
        # URL's high-water mark) stays: deleting it would cascade to that row
        has_delivery = select(WebhookDelivery.id).where(WebhookDelivery.event_id == Event.id)
        result.events, more = _delete_batches(
            session,
            Event,
            [Event.created_at < event_cutoff, ~has_delivery.exists()],
            batch=batch,
            max_batches=max_batches,
        )
        result.more |= more

    if result.total:
        audit.record(
            session=session,
            actor=None,
            action=ACTION_PURGED,
            detail={
                "audit_events": result.audit_events,
                "events": result.events,
                "webhook_deliveries": result.webhook_deliveries,
                "audit_before": audit_cutoff.isoformat() if audit_cutoff else None,
                "audit_retention_days": settings.audit_retention_days,
                "event_retention_days": settings.event_retention_days,
                "webhook_retention_days": settings.webhook_retention_days,
            },
            now=now,
        )
        logger.info(
            "retention purge",
            extra={
                "action": ACTION_PURGED,
                "audit_events": result.audit_events,
                "events": result.events,
                "webhook_deliveries": result.webhook_deliveries,
            },
        )
    return result


__all__ = ["BATCH", "MAX_BATCHES", "PurgeResult", "purge_expired"]
