"""Turnaround hop by hop over a period: for the studies that came in since a moment, per
urgency category (stroke, chest pain, routine), the percentiles of each stage of their
timelines (``worklist.timeline.STAGES``), how their deadlines went, and the urgent studies
still unanswered past a deadline (with the hop each is waiting after).

``weekly_turnaround``: the same per site and week, for the headline stages
(``worklist.timeline.HEADLINE_STAGES``) and the share of studies read within their reading
deadline (the urgent ones apart).

The figures come from the same timelines the study page shows (``timelines``, a few queries
per 500 studies), so a study's page and the period's figures cannot disagree.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
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
from worklist.timeline import HEADLINE_STAGES, STAGE_NAMES, Timeline, timelines

ROUTINE = "routine"
CATEGORIES = (CATEGORY_STROKE, CATEGORY_CHEST_PAIN, ROUTINE)
TARGET_STATES = ("met", "missed", "running", "overdue", "unknown")
# a period's studies are read whole: bounded, so a county's year cannot be asked for at once
MAX_STUDIES = 20_000
WEEK = timedelta(days=7)
# the deadline a study is read by: "within" when its first signature came before it
READ_DEADLINE = "read_deadline"


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


def _figures(
    category: str, group: list[Timeline], stage_names: tuple[str, ...] = STAGE_NAMES
) -> CategoryFigures:
    durations: dict[str, list[float]] = defaultdict(list)
    targets: dict[str, dict[str, int]] = {}
    for timeline in group:
        for stage in timeline.stages:
            durations[stage.name].append(stage.seconds)
        for target in timeline.targets:
            counts = targets.setdefault(target.name, dict.fromkeys(TARGET_STATES, 0))
            counts[target.state] += 1
    stages = []
    for name in stage_names:
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


@dataclass(frozen=True, slots=True)
class DeadlineShare:
    """How many studies were read (first signature) within their reading deadline, of those
    whose deadline is decided (read in time, read late, or unread and past it)."""

    within: int
    decided: int

    @property
    def share(self) -> float | None:
        return round(self.within / self.decided, 4) if self.decided else None

    def as_dict(self) -> dict[str, Any]:
        return {"within": self.within, "decided": self.decided, "share": self.share}


@dataclass(frozen=True, slots=True)
class SiteWeek:
    """One site's week: per category the headline stages' percentiles and the reading
    deadline kept; ``urgent`` the urgent (STAT) studies' deadline, whatever their category."""

    site: str
    week_start: datetime
    studies: int
    categories: list[tuple[CategoryFigures, DeadlineShare]]
    urgent: DeadlineShare


@dataclass(frozen=True, slots=True)
class WeeklyTurnaround:
    since: datetime
    until: datetime
    weeks: list[datetime]
    studies: int
    truncated: bool
    rows: list[SiteWeek]  # by site, then week; a site-week without studies left out

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "weeks": [w.isoformat() for w in self.weeks],
            "studies": self.studies,
            "truncated": self.truncated,
            "stages": list(HEADLINE_STAGES),
            "rows": [
                {
                    "site": r.site,
                    "week_start": r.week_start.isoformat(),
                    "studies": r.studies,
                    "urgent": r.urgent.as_dict(),
                    "categories": [
                        {
                            "category": c.category,
                            "studies": c.studies,
                            "deadline": d.as_dict(),
                            "stages": [
                                {
                                    "stage": s.stage,
                                    "count": s.count,
                                    "p50_seconds": s.p50_seconds,
                                    "p90_seconds": s.p90_seconds,
                                }
                                for s in c.stages
                            ],
                        }
                        for c, d in r.categories
                    ],
                }
                for r in self.rows
            ],
        }


def _deadline_share(group: list[Timeline]) -> DeadlineShare:
    states = [t.state for tl in group for t in tl.targets if t.name == READ_DEADLINE]
    decided = [s for s in states if s in ("met", "missed", "overdue")]
    return DeadlineShare(within=decided.count("met"), decided=len(decided))


def _studies_since(
    session: Session, *, since: datetime, now: datetime, site_code: str | None
) -> tuple[list[Study], bool]:
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
    return studies[:MAX_STUDIES], len(studies) > MAX_STUDIES


def weekly_turnaround(
    *, session: Session, now: datetime, since: datetime, site_code: str | None = None
) -> WeeklyTurnaround:
    """Per site and week (weeks of 7 days from ``since``, which the caller puts at a local
    Monday midnight), for the studies whose first instance came in from ``since`` to
    ``now``: per category the headline stages' p50/p90/p95 and the reading deadline kept,
    and the urgent studies' share read within their deadline. The same timelines as the
    period's figures (cancelled studies left out)."""
    studies, truncated = _studies_since(session, since=since, now=now, site_code=site_code)
    found = timelines(session=session, studies=studies, now=now)
    weeks = [since + WEEK * i for i in range(int((now - since) / WEEK) + 1)]
    groups: dict[tuple[str, int], list[Timeline]] = defaultdict(list)
    for study, timeline in zip(studies, found, strict=True):
        index = min(int((study.received_at - since) / WEEK), len(weeks) - 1)
        groups[(timeline.site, index)].append(timeline)
    rows = []
    for (site, index), group in sorted(groups.items()):
        by_category: dict[str, list[Timeline]] = defaultdict(list)
        for timeline in group:
            by_category[_category(timeline)].append(timeline)
        rows.append(
            SiteWeek(
                site=site,
                week_start=weeks[index],
                studies=len(group),
                categories=[
                    (
                        _figures(c, by_category.get(c, []), HEADLINE_STAGES),
                        _deadline_share(by_category.get(c, [])),
                    )
                    for c in CATEGORIES
                ],
                urgent=_deadline_share([t for t in group if t.priority == PRIORITY_STAT]),
            )
        )
    return WeeklyTurnaround(
        since=since, until=now, weeks=weeks, studies=len(found), truncated=truncated, rows=rows
    )


def period_turnaround(
    *, session: Session, now: datetime, since: datetime, site_code: str | None = None
) -> PeriodTurnaround:
    """Figures for the studies whose first instance came in from ``since`` to ``now``
    (optionally one site's), cancelled ones left out."""
    studies, truncated = _studies_since(session, since=since, now=now, site_code=site_code)
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
    "WEEK",
    "CategoryFigures",
    "DeadlineShare",
    "OverdueStudy",
    "PeriodTurnaround",
    "SiteWeek",
    "StageFigures",
    "WeeklyTurnaround",
    "percentile",
    "period_turnaround",
    "weekly_turnaround",
]
