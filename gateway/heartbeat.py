"""The gateway tells the county how it is: every ``status_report_seconds`` it posts a summary
of its spool (queue depth by priority, the oldest unsent instance's age, the last upload
error) to ``POST /api/v1/gateway/status``, where the county's operations page shows it and
the time it last heard from the township; with it the associations it refused since the
last report (``refusals``), which the county records in its audit trail.

A failed report is logged and tried again at the next beat: forwarding never waits for it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from gateway.county import CountyClient
from gateway.errors import CountyError
from gateway.ops import spool_status
from gateway.spool import Spool

logger = logging.getLogger(__name__)


def summary(status: dict[str, Any]) -> dict[str, Any]:
    """What the county keeps of ``gateway.ops.spool_status``: no UIDs, no file paths."""
    pending = status["queue"]["pending_by_priority"]
    oldest = status.get("oldest_unsent") or {}
    last = status.get("last_error") or {}
    counters = status.get("counters") or {}
    return {
        "pending_urgent": int(pending.get("urgent", 0)),
        "pending_routine": int(pending.get("routine", 0)),
        "oldest_unsent_age_seconds": oldest.get("age_seconds"),
        "oldest_urgent_unsent_age_seconds": status.get("oldest_urgent_unsent_age_seconds"),
        "last_error": (
            {"error": str(last.get("error", ""))[:500], "attempts": int(last.get("attempts") or 0)}
            if last
            else None
        ),
        "spool_bytes": int(status.get("spool_bytes", 0)),
        "upload_failures": int(counters.get("upload_failures", 0)),
    }


class StatusReporter:
    """A daemon thread posting the spool's summary to the county every ``seconds``."""

    def __init__(self, county: CountyClient, spool: Spool, *, seconds: float) -> None:
        self._county = county
        self._spool = spool
        self._seconds = seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def report_once(self) -> bool:
        body = summary(spool_status(self._spool))
        refusals = self._spool.outbox.pending_refusals()
        if refusals:  # an older county does not know the field: only sent when there are some
            body["refusals"] = [{k: v for k, v in r.items() if k != "id"} for r in refusals]
        try:
            self._county.report_status(body)
        except CountyError as exc:
            logger.warning(
                "gateway status not reported",
                extra={"action": "gateway_status_failed", "error": str(exc)[:300]},
            )
            return False
        self._spool.outbox.forget_refusals([int(r["id"]) for r in refusals])
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-status", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.report_once()
            self._stop.wait(self._seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


__all__ = ["StatusReporter", "summary"]
