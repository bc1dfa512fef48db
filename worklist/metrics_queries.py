"""The worklist's figures for monitoring (``viewer_api.metrics`` turns them into Prometheus
gauges): open studies by triage category and priority, deadline breaches, the oldest urgent
study still waiting, active claims, and how many studies and instances were ever indexed.

Each is one aggregate that an index answers, so a scrape stays cheap at a million studies:

- open studies are counted through the partial indexes on "still on the worklist"
  (``OPEN_STUDY_SQL``), whose predicate is written out literally so PostgreSQL's planner can
  match it (a bound ``NOT IN`` parameter list would hide it in a generic plan);
- the oldest waiting urgent study walks ``ix_studies_queue`` (status, priority, received);
- the "ever indexed" totals are the highest primary key (an index's last entry), not a
  ``COUNT(*)`` that scans every row: they never go down when rows are deleted, which is what a
  Prometheus counter wants, but a rolled-back insert leaves a gap in a PostgreSQL sequence,
  so they may run slightly ahead of the rows that exist.

The one figure no index answers is the running total of studies finalised after their
deadline (a join of reports and studies); ``finalised_late`` takes it separately so the
caller can cache it longer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from worklist.models import (
    OPEN_STUDY_SQL,
    REPORT_AMENDED,
    REPORT_FINAL,
    STATUS_READY,
    STATUS_RECEIVING,
    Instance,
    Report,
    Study,
)

# the label of a study without a triage category
ROUTINE = "routine"
PRIORITIES = {0: "stat", 1: "routine"}

# "studies.status NOT IN (...)": the partial indexes' predicate, qualified for joins
_OPEN = text(f"studies.{OPEN_STUDY_SQL}")


def _category(value: str | None) -> str:
    return value or ROUTINE


def _priority(rank: int | None) -> str:
    return PRIORITIES.get(rank if rank is not None else 1, ROUTINE)


@dataclass(frozen=True, slots=True)
class WorklistFigures:
    """A snapshot of the worklist at ``now``."""

    now: datetime
    # (category, priority) -> open studies (not final, amended or cancelled)
    open_studies: dict[tuple[str, str], int] = field(default_factory=dict)
    # category -> open studies past their deadline
    open_past_deadline: dict[str, int] = field(default_factory=dict)
    # seconds since the oldest urgent study nobody has claimed yet arrived (None: none waits)
    oldest_unclaimed_urgent_age: float | None = None
    # the same over every open urgent study, claimed or not
    oldest_open_urgent_age: float | None = None
    # open studies someone holds a claim on
    claims_active: int = 0
    # the highest study and instance ids: everything ever indexed
    studies_indexed: int = 0
    instances_indexed: int = 0


def worklist_figures(*, session: Session, now: datetime) -> WorklistFigures:
    """The cheap figures: each one aggregate over an index."""
    open_studies: dict[tuple[str, str], int] = {}
    for category, rank, count in session.execute(
        select(Study.category, Study.priority_rank, func.count())
        .where(_OPEN)
        .group_by(Study.category, Study.priority_rank)
    ):
        key = (_category(category), _priority(rank))
        open_studies[key] = open_studies.get(key, 0) + int(count)

    past: dict[str, int] = {}
    for category, count in session.execute(
        select(Study.category, func.count())
        .where(_OPEN, Study.deadline_at < now)
        .group_by(Study.category)
    ):
        past[_category(category)] = past.get(_category(category), 0) + int(count)

    oldest_unclaimed = session.scalar(
        select(func.min(Study.received_at)).where(
            Study.status.in_((STATUS_RECEIVING, STATUS_READY)), Study.priority_rank == 0
        )
    )
    oldest_open = session.scalar(
        select(Study.received_at)
        .where(_OPEN, Study.priority_rank == 0)
        .order_by(Study.priority_rank, Study.received_at, Study.id)
        .limit(1)
    )
    claims = session.scalar(
        select(func.count()).select_from(Study).where(_OPEN, Study.claimed_by_id.is_not(None))
    )
    return WorklistFigures(
        now=now,
        open_studies=open_studies,
        open_past_deadline=past,
        oldest_unclaimed_urgent_age=_age(now, oldest_unclaimed),
        oldest_open_urgent_age=_age(now, oldest_open),
        claims_active=int(claims or 0),
        studies_indexed=int(session.scalar(select(func.max(Study.id))) or 0),
        instances_indexed=int(session.scalar(select(func.max(Instance.id))) or 0),
    )


def _age(now: datetime, since: datetime | None) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


def finalised_late(*, session: Session) -> dict[str, int]:
    """Category -> studies whose report was signed final after the study's deadline (all
    time). A join over every signed report: cache it (``viewer_api.metrics`` does)."""
    late: dict[str, int] = {}
    for category, count in session.execute(
        select(Study.category, func.count())
        .select_from(Report)
        .join(Study, Study.id == Report.study_id)
        .where(
            Report.status.in_((REPORT_FINAL, REPORT_AMENDED)),
            Study.deadline_at.is_not(None),
            Report.signed_at > Study.deadline_at,
        )
        .group_by(Study.category)
    ):
        late[_category(category)] = late.get(_category(category), 0) + int(count)
    return late


__all__ = ["PRIORITIES", "ROUTINE", "WorklistFigures", "finalised_late", "worklist_figures"]
