"""Turnaround hop by hop over a period: for the studies that came in since a moment, per
urgency category (stroke, chest pain, routine), the percentiles of each stage of their
timelines (``worklist.timeline.STAGES``), how their deadlines went, and the urgent studies
still unanswered past a deadline (with the hop each is waiting after).

The figures come from the same timelines the study page shows (``timelines``, a few queries
per 500 studies), so a study's page and the period's figures cannot disagree.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from worklist.models import (
    CATEGORY_CHEST_PAIN,
    CATEGORY_STROKE,
    PRIORITY_STAT,
    STATUS_CANCELLED,
    Site,
    Study,
)
from worklist.timeline import STAGE_NAMES, Timeline, timelines

ROUTINE = "routine"
CATEGORIES = (CATEGORY_STROKE, CATEGORY_CHEST_PAIN, ROUTINE)
TARGET_STATES = ("met", "missed", "running", "overdue", "unknown")
# a period's studies are read whole: bounded, so a county's year cannot be asked for at once
MAX_STUDIES = 20_000


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0-100) of ``sorted_values``; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(len(sorted_values) * q / 100))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class StageFigures:
    stage: str
    count: int
    p50_seconds: float | None
    p90_seconds: float | None
    p95_seconds: float | None


@dataclass(frozen=True, slots=True)
class CategoryFigures:
    category: str
    studies: int
    stages: list[StageFigures]
    # target name -> state -> count
    targets: dict[str, dict[str, int]]


@dataclass(frozen=True, slots=True)
class OverdueStudy:
    study_instance_uid: str
    site: str
    category: str | None
    status: str
    targets: list[str]  # the targets it is overdue on
    waiting_after: str  # the last hop it reached
    waiting_since: datetime
    listed_at: datetime | None


@dataclass(frozen=True, slots=True)
class PeriodTurnaround:
    since: datetime
    until: datetime
    studies: int
    truncated: bool  # more than MAX_STUDIES came in: the newest were left out
    categories: list[CategoryFigures]
    overdue_urgent: list[OverdueStudy]

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "studies": self.studies,
            "truncated": self.truncated,
            "categories": [
                {
                    "category": c.category,
                    "studies": c.studies,
                    "stages": [
                        {
                            "stage": s.stage,
                            "count": s.count,
                            "p50_seconds": s.p50_seconds,
                            "p90_seconds": s.p90_seconds,
                            "p95_seconds": s.p95_seconds,
                        }
                        for s in c.stages
                    ],
                    "targets": c.targets,
                }
                for c in self.categories
            ],
            "overdue_urgent": [
                {
                    "study_instance_uid": o.study_instance_uid,
                    "site": o.site,
                    "category": o.category,
                    "status": o.status,
                    "targets": o.targets,
                    "waiting_after": o.waiting_after,
                    "waiting_since": o.waiting_since.isoformat(),
                    "listed_at": o.listed_at.isoformat() if o.listed_at else None,
                }
                for o in self.overdue_urgent
            ],
        }


def _category(timeline: Timeline) -> str:
    if timeline.category in (CATEGORY_STROKE, CATEGORY_CHEST_PAIN):
        return timeline.category
    return ROUTINE


def _figures(category: str, group: list[Timeline]) -> CategoryFigures:
    durations: dict[str, list[float]] = defaultdict(list)
    targets: dict[str, dict[str, int]] = {}
    for timeline in group:
        for stage in timeline.stages:
            durations[stage.name].append(stage.seconds)
        for target in timeline.targets:
            counts = targets.setdefault(target.name, dict.fromkeys(TARGET_STATES, 0))
            counts[target.state] += 1
    stages = []
    for name in STAGE_NAMES:
        values = sorted(durations.get(name, []))
        stages.append(
            StageFigures(
                stage=name,
                count=len(values),
                p50_seconds=percentile(values, 50),
                p90_seconds=percentile(values, 90),
                p95_seconds=percentile(values, 95),
            )
        )
    return CategoryFigures(category=category, studies=len(group), stages=stages, targets=targets)


def _overdue(timeline: Timeline) -> OverdueStudy | None:
    late = [t.name for t in timeline.targets if t.state == "overdue"]
    if timeline.priority != PRIORITY_STAT or not late or not timeline.hops:
        return None
    last = timeline.hops[-1]
    listed = timeline.hop("listed")
    return OverdueStudy(
        study_instance_uid=timeline.study_instance_uid,
        site=timeline.site,
        category=timeline.category,
        status=timeline.status,
        targets=late,
        waiting_after=last.name,
        waiting_since=last.at,
        listed_at=listed.at if listed else None,
    )


def period_turnaround(
    *, session: Session, now: datetime, since: datetime, site_code: str | None = None
) -> PeriodTurnaround:
    """Figures for the studies whose first instance came in from ``since`` to ``now``
    (optionally one site's), cancelled ones left out."""
    stmt = (
        select(Study)
        .join(Site, Study.site_id == Site.id)
        .where(
            Study.received_at >= since,
            Study.received_at <= now,
            Study.status != STATUS_CANCELLED,
        )
        .options(joinedload(Study.site))
        .order_by(Study.received_at, Study.id)
        .limit(MAX_STUDIES + 1)
    )
    if site_code is not None:
        stmt = stmt.where(Site.code == site_code)
    studies = list(session.scalars(stmt))
    truncated = len(studies) > MAX_STUDIES
    studies = studies[:MAX_STUDIES]
    found = timelines(session=session, studies=studies, now=now)
    groups: dict[str, list[Timeline]] = defaultdict(list)
    for timeline in found:
        groups[_category(timeline)].append(timeline)
    overdue = [o for t in found if (o := _overdue(t)) is not None]
    overdue.sort(key=lambda o: o.listed_at or o.waiting_since)
    return PeriodTurnaround(
        since=since,
        until=now,
        studies=len(found),
        truncated=truncated,
        categories=[_figures(c, groups.get(c, [])) for c in CATEGORIES],
        overdue_urgent=overdue,
    )


__all__ = [
    "CATEGORIES",
    "MAX_STUDIES",
    "CategoryFigures",
    "OverdueStudy",
    "PeriodTurnaround",
    "StageFigures",
    "percentile",
    "period_turnaround",
]
