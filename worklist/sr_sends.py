"""The signed report's SR on its way to the site's PACS: a durable outbox, retried.

A site's destination is ``Site.sr_destination``, ``AE@host:port`` (``county.yaml``'s
``pacs``, or ``teleread sites set-pacs``); a site without one gets nothing queued.
One ``SRSend`` row per study. Signing a report (preliminary or final), an addendum, a
corrected re-send served after the report, or an explicit request queues it (``queue``):
the row is armed again (``generation`` + 1, attempts from 0, due now) whatever state it
was in, so a restart loses nothing and a burst of changes makes one send of the newest SR.

The sender (``viewer_api.outputs.sr_outbox``, one per API process, any number of replicas)
claims due rows as the webhook dispatcher does (``worklist.webhooks``): one
``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`` pushes ``next_attempt_at``
forward by a lease, so replicas take different rows and no transaction stays open while
the PACS answers; a sender that dies mid-send leaves the row to be taken again when the
lease runs out. An outcome is recorded only for the generation that was sent: a row queued
again meanwhile stays due, and the newer SR goes next.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from worklist.errors import InvalidDestination
from worklist.models import SR_SEND_FAILED, SR_SEND_PENDING, SR_SEND_SENT, SRSend, Study
from worklist.webhooks import backoff

logger = logging.getLogger(__name__)

REASON_SIGNED = "signed_{status}"  # signed_preliminary, signed_final
REASON_AMENDED = "amended"
REASON_STUDY_UPDATED = "study_updated"  # a corrected re-send served after the report
REASON_REQUESTED = "requested"  # asked for by a person (``POST .../report/sr?send=true``)
LEASE = timedelta(seconds=120)  # longer than a send's timeouts
BATCH = 20
MAX_ERROR = 500


_DESTINATION = re.compile(r"^(?P<ae>[ -\[\]-~]{1,16})@(?P<host>[^:@\s]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Destination:
    """A DICOM node to C-STORE to."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``"PACS_TS01@10.1.2.3:104"`` -> a destination; ``InvalidDestination`` if malformed."""
        found = _DESTINATION.match(text.strip())
        if found is None or not 0 < int(found["port"]) < 65536:
            raise InvalidDestination(f"not an AE@host:port destination: {text[:140]!r}")
        ae_title = found["ae"].strip()
        if not ae_title or "\\" in ae_title:
            raise InvalidDestination(f"not a valid AE title: {found['ae']!r}")
        return cls(ae_title=ae_title, host=found["host"], port=int(found["port"]))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SendJob:
    """A claimed row: what to send, and which arming of it this attempt is."""

    send_id: int
    study_id: int
    generation: int
    attempts: int  # including this one


def queue(*, session: Session, study_id: int, reason: str, now: datetime) -> None:
    """Arm the study's send: due now, attempts from 0 (insert or update, one statement)."""
    insert: Any = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    table: Any = SRSend.__table__
    stmt = insert(table).values(
        study_id=study_id,
        status=SR_SEND_PENDING,
        reason=reason[:32],
        generation=1,
        attempts=0,
        next_attempt_at=now,
        queued_at=now,
        destination="",
        sop_instance_uid="",
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["study_id"],
            set_={
                "status": SR_SEND_PENDING,
                "reason": reason[:32],
                "generation": table.c.generation + 1,
                "attempts": 0,
                "next_attempt_at": now,
                "queued_at": now,
            },
        )
    )
    logger.info(
        "report SR send queued",
        extra={"action": "sr_send_queued", "study_id": study_id, "reason": reason},
    )


def queue_for(*, session: Session, study: Study, reason: str, now: datetime) -> bool:
    """``queue`` when the study's site has a destination; False when it has none."""
    if not study.site.sr_destination:
        return False
    queue(session=session, study_id=study.id, reason=reason, now=now)
    return True


def take_due(
    *, session: Session, now: datetime, lease: timedelta = LEASE, batch: int = BATCH
) -> list[SendJob]:
    """Lease up to ``batch`` due sends, the longest due first. A plain read first: when
    nothing is due (nearly always) no write is made, so polling never holds SQLite's lock."""
    is_due = (SRSend.status == SR_SEND_PENDING, SRSend.next_attempt_at <= now)
    if session.scalar(select(SRSend.id).where(*is_due).limit(1)) is None:
        return []
    due = (
        select(SRSend.id)
        .where(*is_due)
        .order_by(SRSend.next_attempt_at, SRSend.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    leased = session.execute(
        update(SRSend)
        .where(SRSend.id.in_(due.scalar_subquery()))
        .values(attempts=SRSend.attempts + 1, next_attempt_at=now + lease, last_attempt_at=now)
        .returning(SRSend.id, SRSend.study_id, SRSend.generation, SRSend.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted((SendJob(*row) for row in leased), key=lambda j: j.send_id)


def record_sent(
    *, session: Session, job: SendJob, now: datetime, destination: str, sop_instance_uid: str
) -> bool:
    """The SR reached ``destination``; False when the row was queued again meanwhile (it
    stays due: the newer SR goes next)."""
    done = session.execute(
        update(SRSend)
        .where(SRSend.id == job.send_id, SRSend.generation == job.generation)
        .values(
            status=SR_SEND_SENT,
            sent_at=now,
            last_error=None,
            destination=destination[:128],
            sop_instance_uid=sop_instance_uid,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(done, "rowcount", 0))


def record_failure(
    *,
    session: Session,
    job: SendJob,
    now: datetime,
    error: str,
    destination: str,
    max_attempts: int,
    base_delay: timedelta,
) -> str:
    """The attempt failed: retried after a back-off, or given up after ``max_attempts``.
    Returns ``"retried"``, ``"failed"`` or ``"requeued"`` (armed again meanwhile)."""
    values: dict[str, Any] = {"last_error": error[:MAX_ERROR], "destination": destination[:128]}
    if job.attempts >= max_attempts:
        values["status"] = SR_SEND_FAILED
        outcome = "failed"
    else:
        values["next_attempt_at"] = now + backoff(job.attempts, base=base_delay)
        outcome = "retried"
    done = session.execute(
        update(SRSend)
        .where(SRSend.id == job.send_id, SRSend.generation == job.generation)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if not getattr(done, "rowcount", 0):
        return "requeued"
    logger.warning(
        "report SR send failed",
        extra={
            "action": f"sr_send_{outcome}",
            "study_id": job.study_id,
            "attempts": job.attempts,
            "destination": destination,
        },
    )
    return outcome


def send_of(*, session: Session, study_id: int) -> SRSend | None:
    """The study's send row, as stored now."""
    return session.scalars(
        select(SRSend).where(SRSend.study_id == study_id).execution_options(populate_existing=True)
    ).one_or_none()


__all__ = [
    "BATCH",
    "LEASE",
    "REASON_AMENDED",
    "REASON_REQUESTED",
    "REASON_SIGNED",
    "REASON_STUDY_UPDATED",
    "Destination",
    "SendJob",
    "queue",
    "queue_for",
    "record_failure",
    "record_sent",
    "send_of",
    "take_due",
]
