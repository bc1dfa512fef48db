"""The worklist's scheduler: one thread that keeps the index moving between requests."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.orm import Session, sessionmaker

from worklist import escalation, overdue, retention, webhooks
from worklist.claims import expire_claims, warn_expiring_claims
from worklist.completion import mark_stable_studies
from worklist.db import utcnow
from worklist.settings import WorklistSettings

logger = logging.getLogger(__name__)

INTERVAL_SECONDS = 5.0
RETENTION_SECONDS = 3600.0  # how often expired audit events, events, deliveries are purged


class Housekeeping(threading.Thread):
    """Every ``interval`` seconds: studies that went quiet become ready; claims about to run
    out warn their holders, abandoned ones expire; late unclaimed studies escalate; the
    clinics hear of studies past their deadline. Hourly (and every pass while a backlog lasts):
    rows past their retention are purged. Alongside, for as long as it runs, events go out
    to the configured webhooks as they are committed (``worklist.webhooks.WebhookDispatcher``).
    One per county API process; ``stop`` ends it after the pass under way."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: WorklistSettings,
        *,
        interval: float = INTERVAL_SECONDS,
    ) -> None:
        super().__init__(name="worklist-housekeeping", daemon=True)
        self.factory = factory
        self.settings = settings
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        wl = self.settings
        dispatcher = webhooks.WebhookDispatcher(
            self.factory,
            urls=wl.webhook_urls,
            secret=wl.webhook_secret,
            clock=utcnow,
            timeout=wl.webhook_timeout_seconds,
            max_attempts=wl.webhook_max_attempts,
            parallel=wl.webhook_parallel,
        )
        dispatcher.start()
        next_purge = 0.0  # time.monotonic(): the first pass purges
        try:
            while not self._stop_event.wait(self.interval):
                try:
                    with self.factory.begin() as session:
                        now = utcnow()
                        mark_stable_studies(
                            session=session, now=now, stable_seconds=wl.stable_seconds
                        )
                        warn_expiring_claims(session=session, now=now)
                        expire_claims(session=session, now=now)
                        escalation.scan(session=session, now=now)
                        overdue.scan(session=session, now=now)
                    if time.monotonic() >= next_purge:
                        next_purge = time.monotonic() + RETENTION_SECONDS
                        with self.factory.begin() as session:
                            purged = retention.purge_expired(
                                session=session, now=utcnow(), settings=wl
                            )
                        if purged.more:  # a bounded batch per pass until the backlog is gone
                            next_purge = 0.0
                except Exception:
                    logger.exception("housekeeping failed", extra={"action": "housekeeping_failed"})
        finally:
            dispatcher.stop()

    def stop(self) -> None:
        self._stop_event.set()


__all__ = ["INTERVAL_SECONDS", "RETENTION_SECONDS", "Housekeeping"]
