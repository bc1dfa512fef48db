"""Turnaround histograms: the headline stages of a study's timeline
(``worklist.timeline.HEADLINE_STAGES``: scan -> listed -> claimed -> report -> clinic
opened), each observed once, when the hop that ends it is recorded, by stage, site and
category.

Where a hop is recorded is where it is observed: the session factory's events watch what
a transaction writes (``studies.arrived_at`` set for the first time: listed; a
``study_claimed``, ``report_signed`` or clinic read audit event) and, once it has committed,
read those studies' timelines (``worklist.timeline.timelines``, the same that the study
page and the operations figures show) in a session of their own and observe each headline
stage whose end hop is the one just written. A stage whose end hop came earlier is not
observed again (a second claim, a final after the preliminary, the clinic's next look), nor
is anything when the transaction rolls back. Reading the timelines costs a few queries per
event, after the commit, and a failure there is logged and never fails the request. Reads
are the common case: only a clinic user's read can end a stage, and once a study's clinic
read is known (``_clinic_opened``, the last ``OPENED_KEPT`` studies) its next reads are not
looked at, so a nurse re-opening reports costs no timeline.

Replicas: each API process observes the events it handles, so every stage is observed in
exactly one process and ``sum by (le, stage, site, category)`` over the replicas'
``teleread_api_turnaround_seconds_bucket`` gives the county's distribution
(``histogram_quantile`` over its ``rate``). A process that restarts starts from zero, as
counters do. Two replicas that record the same first hop in the same instant (two nurses'
first reads) may both observe it: the rare double count is the price of not coordinating.

Labels stay bounded: ``stage`` the four names, ``category`` stroke, chest_pain or routine,
``site`` a configured site's code (studies belong to configured sites only).
A stage that ends before it starts (a modality clock ahead of the county's) is observed
as 0.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from cachetools import LRUCache
from prometheus_client import CollectorRegistry, Histogram
from sqlalchemy import event, inspect, select
from sqlalchemy.orm import Session, joinedload, sessionmaker

from viewer_api.metrics.http_requests import PREFIX
from worklist.models import CATEGORY_CHEST_PAIN, CATEGORY_STROKE, ROLE_CLINIC, AuditEvent, Study
from worklist.timeline import (
    CLINIC_READ_ACTIONS,
    HEADLINE_END_ACTIONS,
    HEADLINE_STAGES,
    Timeline,
    timelines,
)

logger = logging.getLogger(__name__)

ROUTINE = "routine"
# seconds: a listing takes seconds, a reading minutes, a clinic's look up to a day
BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 2700, 3600, 7200, 14400, 43200, 86400)
# studies whose clinic read this process knows of: a day's reports of a large county
OPENED_KEPT = 20_000


class TurnaroundMetrics:
    """The turnaround histogram of one process, in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = Histogram(
            PREFIX + "turnaround_seconds",
            "time from a study's hop to the next (stage: scan_to_listed, listed_to_claimed, "
            "claimed_to_report, report_to_clinic_opened), observed when the stage ends",
            ("stage", "site", "category"),
            buckets=BUCKETS,
            registry=registry,
        )
        # session.info key (one per instance: two apps over one factory each observe):
        # study uid -> the times its hops were recorded in the transaction
        self._pending = f"teleread_turnaround_pending_{id(self)}"
        # study uids whose clinic_opened hop is known: a later clinic read ends no stage
        self._clinic_opened: LRUCache[str, bool] = LRUCache(OPENED_KEPT)
        self._lock = threading.Lock()  # LRUCache is not thread-safe; requests run in threads

    def observe(self, timeline: Timeline, recorded: set[datetime]) -> int:
        """Observe each headline stage of ``timeline`` whose end hop was recorded at one of
        ``recorded``; how many were."""
        category = timeline.category
        if category not in (CATEGORY_STROKE, CATEGORY_CHEST_PAIN):
            category = ROUTINE
        observed = 0
        for stage in timeline.stages:
            if stage.name not in HEADLINE_STAGES:
                continue
            end = timeline.hop(stage.end)
            if end is None or end.recorded_at not in recorded:
                continue
            self.seconds.labels(stage.name, timeline.site, category).observe(
                max(0.0, stage.seconds)
            )
            observed += 1
        return observed

    def watch(self, factory: sessionmaker[Session]) -> None:
        """Observe the stages that the transactions of ``factory``'s sessions end."""
        event.listen(factory, "after_flush", self._note_hops)
        event.listen(factory, "after_rollback", self._forget_hops)
        event.listen(factory, "after_commit", lambda s: self._after_commit(s, factory))

    def _note_hops(self, session: Session, flush_context: Any) -> None:
        """After a flush (its objects still in ``new``/``dirty`` with their history): the
        studies listed now and the audit events that may end a headline stage."""
        pending: dict[str, set[datetime]] | None = None
        for obj in (*session.new, *session.dirty):
            when: datetime | None = None
            if isinstance(obj, AuditEvent):
                if (
                    obj.action in HEADLINE_END_ACTIONS
                    and obj.outcome == "success"
                    and obj.object_type in ("study", "report")
                    and not self._read_ends_nothing(obj)
                ):
                    when = obj.at
            elif isinstance(obj, Study):
                history = inspect(obj).attrs.arrived_at.history
                if history.added and history.added[0] is not None and not any(history.deleted):
                    when = history.added[0]
            if when is None:
                continue
            if pending is None:
                pending = session.info.setdefault(self._pending, defaultdict(set))
            uid = obj.object_id if isinstance(obj, AuditEvent) else obj.study_instance_uid
            pending[uid].add(when)

    def _read_ends_nothing(self, event: AuditEvent) -> bool:
        """A read that cannot end a stage: not a clinic user's, or of a study whose clinic
        read is already known."""
        if event.action not in CLINIC_READ_ACTIONS:
            return False
        if event.role != ROLE_CLINIC:
            return True
        with self._lock:
            return event.object_id in self._clinic_opened

    def _forget_hops(self, session: Session) -> None:
        session.info.pop(self._pending, None)

    def _after_commit(self, session: Session, factory: sessionmaker[Session]) -> None:
        pending: dict[str, set[datetime]] | None = session.info.pop(self._pending, None)
        if not pending:
            return
        try:
            with factory() as reader:
                studies = list(
                    reader.scalars(
                        select(Study)
                        .where(Study.study_instance_uid.in_(list(pending)))
                        .options(joinedload(Study.site))
                    )
                )
                found = timelines(session=reader, studies=studies, now=datetime.now(UTC))
                reader.rollback()
            for timeline in found:
                self.observe(timeline, pending[timeline.study_instance_uid])
                if timeline.hop("clinic_opened") is not None:
                    with self._lock:
                        self._clinic_opened[timeline.study_instance_uid] = True
        except Exception as exc:  # a figure lost, never the request
            logger.warning(
                "turnaround: stages not observed",
                extra={"action": "turnaround_metrics_failed", "error": type(exc).__name__},
            )


__all__ = ["BUCKETS", "TurnaroundMetrics"]
