"""The request's audit trail: who (the caller), from where and when are bound once per
request (``deps.Audit``), so a route says only what happened:

    audit(AuditAction.REPORT_SIGNED, object_id=study_uid, detail={"status": "final"})

A row written this way joins the request's transaction: it is committed with the route's
work, or rolled back with it. ``refusals`` records a refused request on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from storage.verified import ObjectCorrupt
from worklist import audit
from worklist.audit import AuditAction
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


__all__ = ["ERROR", "REFUSED", "AuditAction", "Auditor"]
