"""The audit trail, two ways.

- ``Auditor``: the request's own trail. Who (the caller), from where and when are bound
  once per request (``deps.Audit``), so a route says only what happened:

      audit(AuditAction.REPORT_SIGNED, object_id=study_uid, detail={"status": "final"})

  The row joins the request's transaction: committed with the route's work, or rolled
  back with it. ``refusals`` records a refused request on its own; ``committed`` one
  event in a transaction of its own (the one write of a read-only route). ``audit.view(...)``
  hands a view that changes nothing (a worklist page's poll, a study opened, a
  radiologist's look at a report) to the ``AuditWriter``.
- ``AuditWriter`` (one per app, ``app.state.audit_writer``): views that come by the
  hundred (DICOMweb searches, metadata, images, retrieves) and refused cross-site attempts,
  taken down in microseconds and written by a thread in batches, off the request path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from storage.verified import ObjectCorrupt
from worklist import audit
from worklist.audit import AuditAction, PendingEvent, append_events
from worklist.errors import WorklistError
from worklist.models import User

logger = logging.getLogger(__name__)

REFUSED = "refused"
ERROR = "error"


@dataclass(frozen=True, slots=True)
class Auditor:
    """Records audit events for one request: ``actor`` (None before a log-in, or for a
    share link), ``client_addr`` and ``now`` as the request found them."""

    session: Session
    actor: User | None
    client_addr: str
    now: datetime
    writer: AuditWriter

    def __call__(
        self,
        action: AuditAction,
        *,
        object_id: str = "",
        object_type: str | None = None,
        outcome: str = "success",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """One event, in the request's transaction. ``object_type`` defaults to the
        action's."""
        audit.record(
            session=self.session,
            actor=self.actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            client_addr=self.client_addr,
            outcome=outcome,
            detail=detail,
            now=self.now,
        )

    def view(
        self, action: AuditAction, *, object_id: str = "", detail: dict[str, Any] | None = None
    ) -> None:
        """One event of a read that changes nothing, taken down by the app's
        ``AuditWriter`` and written within its ``interval`` (a second), in a batch with
        the others: the request neither writes nor waits for the database's write lock.
        Every open worklist page polls every few seconds; on SQLite each poll's own commit
        queued the API's threads behind one another's write locks (``bench/load.py``)."""
        self.writer.add(
            PendingEvent.of(
                actor=self.actor,
                action=action,
                object_id=object_id,
                client_addr=self.client_addr,
                detail=detail,
                now=self.now,
            )
        )

    def committed(
        self, action: AuditAction, *, object_id: str = "", detail: dict[str, Any] | None = None
    ) -> None:
        """One event written and committed now, in a transaction of its own: the one write
        of a route that otherwise only reads (``deps.reads_only``), when the record must be
        in the database before the answer (a clinic's read receipt). Its session is one of
        the app's (``AuditWriter.factory``), so what watches their commits sees it."""
        with self.writer.factory.begin() as session:
            replace(self, session=session)(action, object_id=object_id, detail=detail)

    def by(self, actor: User) -> Auditor:
        """The same request's trail with ``actor`` as the one acting (after a log-in)."""
        return replace(self, actor=actor)

    @contextmanager
    def refusals(self, action: AuditAction, *, object_id: str) -> Iterator[None]:
        """Audit a request the worklist refuses (a ``WorklistError``: outcome "refused",
        the error's name and message in the detail), then let the error answer as the app's
        error table says. The request's work is rolled back first (that also releases the
        SQLite write lock a conditional UPDATE took); the refusal alone is committed."""
        try:
            yield
        except WorklistError as exc:
            self.session.rollback()
            self(
                action,
                object_id=object_id,
                outcome=REFUSED,
                detail={"error": type(exc).__name__, "message": str(exc)[:500]},
            )
            self.session.commit()
            raise

    @contextmanager
    def corrupt_objects(self, *, object_id: str, detail: dict[str, Any]) -> Iterator[None]:
        """A stored object that fails its sha256 check (``ObjectCorrupt``) is not served:
        logged as an error, audited (``object_integrity_failed``, outcome "error",
        committed on its own), then answered as the error table says."""
        try:
            yield
        except ObjectCorrupt as exc:
            logger.error(
                "stored object fails its sha256 check; not served",
                extra={"action": AuditAction.OBJECT_INTEGRITY_FAILED, **detail},
            )
            self.session.rollback()
            self(
                AuditAction.OBJECT_INTEGRITY_FAILED,
                object_id=object_id,
                outcome=ERROR,
                detail={"found_by": "retrieve", **detail, "message": str(exc)[:300]},
            )
            self.session.commit()
            raise


class AuditWriter:
    """Audit events written off the request path, for the views that come by the hundred
    (DICOMweb searches, metadata, images, retrieves, refused cross-site attempts).

    ``add`` takes an event down (a lock and a list append: microseconds); a thread writes
    what was taken down every ``interval`` seconds, in one transaction with one multi-row
    INSERT. ``once_per`` keeps one event per key per ``repeat_seconds`` (a viewer scrolling
    through a study asks for hundreds of frames: one row per study, user and few minutes).
    If the database refuses, the events wait for the next round (at most ``max_pending``:
    past that the oldest are dropped, with a warning). ``close`` writes what is left; a
    process that dies loses at most the last ``interval`` seconds of these events.
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        interval: float = 1.0,
        repeat_seconds: float = 300.0,
        max_pending: int = 100_000,
    ) -> None:
        self.factory = factory
        self.interval = interval
        self.repeat_seconds = repeat_seconds
        self.max_pending = max_pending
        self.dropped = 0  # events lost to ``max_pending``, all told
        self._pending: list[PendingEvent] = []
        self._last: dict[Hashable, datetime] = {}
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def add(self, event: PendingEvent, *, once_per: Hashable | None = None) -> None:
        """Take ``event`` down, unless ``once_per`` names a key seen in the last
        ``repeat_seconds`` (by the event's time)."""
        with self._lock:
            if once_per is not None:
                last = self._last.get(once_per)
                if last is not None and (event.at - last).total_seconds() < self.repeat_seconds:
                    return
                self._last[once_per] = event.at
            self._pending.append(event)
            if len(self._pending) > self.max_pending:
                del self._pending[0]
                self.dropped += 1
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def flush(self) -> int:
        """Write what was taken down; the number of events written."""
        with self._flushing:
            with self._lock:
                events, self._pending = self._pending, []
                self._forget_old(events[-1].at if events else None)
            if not events:
                return 0
            try:
                with self.factory.begin() as session:
                    append_events(session=session, events=events)
            except Exception:
                with self._lock:  # back in front of the newer ones, for the next round
                    self._pending[:0] = events
                    excess = len(self._pending) - self.max_pending
                    if excess > 0:
                        del self._pending[:excess]
                        self.dropped += excess
                raise
            return len(events)

    def _forget_old(self, now: datetime | None) -> None:
        if now is None or len(self._last) < 1024:
            return
        self._last = {
            key: at
            for key, at in self._last.items()
            if (now - at).total_seconds() < self.repeat_seconds
        }

    def _run(self) -> None:
        reported = 0
        while not self._closed:
            self._wake.wait(self.interval)
            try:
                self.flush()
            except Exception as exc:
                logger.warning(
                    "audit events not written yet: %s",
                    type(exc).__name__,
                    extra={"action": "audit_write_failed", "pending": len(self._pending)},
                )
            if self.dropped > reported:
                logger.error(
                    "audit events dropped",
                    extra={"action": "audit_events_dropped", "dropped": self.dropped - reported},
                )
                reported = self.dropped

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()


__all__ = ["ERROR", "REFUSED", "AuditWriter", "Auditor"]
