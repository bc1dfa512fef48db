"""``teleread verify``: scrub the object store against the index.

Every instance the index records is read back from the store, page by page, and its size
and sha256 compared with what was recorded when the gateway announced it. A missing,
unreadable, short or altered object is a problem: one line each on stdout (UIDs and the
object key, never patient data), one log line, and one audit event
(``object_integrity_failed``, outcome ``error``) so the trail shows it. Exit status 1 when
there is any problem. Reading is sequential and streamed (no object is held in memory);
expect the store's read speed (a few hundred MB/s on a local disk).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.base import ObjectStore
from storage.errors import ObjectNotFound, StorageError
from storage.verified import digest
from worklist import audit
from worklist.db import utcnow
from worklist.models import Instance, Study

logger = logging.getLogger(__name__)

PAGE = 500
ACTION = audit.AuditAction.OBJECT_INTEGRITY_FAILED


@dataclass(frozen=True, slots=True)
class Problem:
    study_uid: str
    sop_uid: str
    key: str
    kind: str  # missing, unreadable, size, sha256
    detail: str = ""

    def line(self) -> str:
        return f"{self.kind.upper():<10} {self.key}  study {self.study_uid}  {self.detail}".rstrip()


@dataclass
class ScrubReport:
    checked: int = 0
    bytes: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)


def _check(store: ObjectStore, key: str, size: int, sha256: str) -> tuple[str, str, int] | None:
    """(kind, detail, bytes read) of what is wrong with one object, or None."""
    try:
        actual, read = digest(store, key)
    except ObjectNotFound:
        return "missing", "", 0
    except (StorageError, OSError) as exc:
        return "unreadable", type(exc).__name__, 0
    if read != size:
        return "size", f"recorded {size} bytes, stored {read}", read
    if actual != sha256:
        return "sha256", f"recorded {sha256[:12]}, stored {actual[:12]}", read
    return None


def scrub(
    *,
    factory: sessionmaker[Session],
    store: ObjectStore,
    on_problem: Callable[[Problem], None] | None = None,
) -> ScrubReport:
    """Check every indexed instance against the store (see the module docstring)."""
    report = ScrubReport()
    started = time.monotonic()
    last = 0
    while True:
        with factory() as session:
            rows = session.execute(
                select(
                    Instance.id,
                    Study.study_instance_uid,
                    Instance.sop_instance_uid,
                    Instance.object_key,
                    Instance.size,
                    Instance.sha256,
                )
                .join(Study, Study.id == Instance.study_id)
                .where(Instance.id > last)
                .order_by(Instance.id)
                .limit(PAGE)
            ).all()
        if not rows:
            break
        found: list[Problem] = []
        for row_id, study_uid, sop_uid, key, size, sha256 in rows:
            last = row_id
            report.checked += 1
            wrong = _check(store, key, size, sha256)
            if wrong is None:
                report.bytes += size
                continue
            kind, detail, read = wrong
            report.bytes += read
            problem = Problem(study_uid, sop_uid, key, kind, detail)
            found.append(problem)
            logger.error(
                "stored object fails its check",
                extra={
                    "action": ACTION,
                    "kind": kind,
                    "study_uid": study_uid,
                    "sop_uid": sop_uid,
                    "key": key,
                },
            )
            if on_problem is not None:
                on_problem(problem)
        if found:
            with factory.begin() as session:
                for problem in found:
                    audit.record(
                        session=session,
                        actor=None,
                        action=ACTION,
                        object_type="instance",
                        object_id=problem.sop_uid,
                        outcome="error",
                        detail={
                            "found_by": "verify",
                            "kind": problem.kind,
                            "study_uid": problem.study_uid,
                            "key": problem.key,
                        },
                        now=utcnow(),
                    )
            report.problems.extend(found)
    report.seconds = time.monotonic() - started
    return report


__all__ = ["ACTION", "Problem", "ScrubReport", "scrub"]
