"""Operations figures for the county's reports to its health commission: volumes per site
and modality, turnaround (first instance -> final signature) per triage category against
its deadline, and the counts of stroke and chest-pain studies.

Plain grouped ``SELECT``s that run the same on SQLite and PostgreSQL; the turnaround
percentiles are computed here from the per-study durations of the period (the period is
bounded, so the list is too), which avoids dialect-specific date arithmetic.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from worklist.models import (
    CATEGORY_CHEST_PAIN,
    CATEGORY_STROKE,
    REPORT_AMENDED,
    REPORT_FINAL,
    STATUS_CANCELLED,
    CriticalResult,
    Report,
    Site,
    Study,
)
from worklist.settings import DEFAULT_DEADLINES, Deadlines

ROUTINE = "routine"
CATEGORIES = (CATEGORY_STROKE, CATEGORY_CHEST_PAIN, ROUTINE)
MAX_DAYS = 366
# turnaround histogram bucket edges in minutes (the last bucket is open-ended)
BUCKET_EDGES_MINUTES = (0, 10, 20, 30, 45, 60, 120, 240, 480, 1440, 2880)


@dataclass(frozen=True, slots=True)
class Turnaround:
    category: str
    deadline_minutes: float
    count: int
    within_deadline: int
    p50_minutes: float | None
    p90_minutes: float | None
    max_minutes: float | None
    # (lower edge in minutes, count); the last bucket holds everything above its edge
    histogram: list[tuple[int, int]] = field(default_factory=list)
    # every duration in minutes, sorted, capped for the chart (MAX_POINTS)
    minutes: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OperationsStats:
    since: datetime
    until: datetime
    total_studies: int
    volumes: list[dict[str, Any]]  # {"site", "site_name", "modality", "count"}
    turnaround: list[Turnaround]
    urgent: list[dict[str, Any]]  # {"category", "studies", "final", "critical_results"}
    by_day: list[dict[str, Any]]  # {"day", "stroke", "chest_pain", "routine"}

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "total_studies": self.total_studies,
            "volumes": self.volumes,
            "turnaround": [
                {
                    "category": t.category,
                    "deadline_minutes": t.deadline_minutes,
                    "count": t.count,
                    "within_deadline": t.within_deadline,
                    "p50_minutes": t.p50_minutes,
                    "p90_minutes": t.p90_minutes,
                    "max_minutes": t.max_minutes,
                    "histogram": [{"from_minutes": e, "count": c} for e, c in t.histogram],
                    "minutes": t.minutes,
                }
                for t in self.turnaround
            ],
            "urgent": self.urgent,
            "by_day": self.by_day,
        }


MAX_POINTS = 2000


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted ``values`` (None when empty)."""
    if not values:
        return None
    rank = max(1, -(-len(values) * q // 100))  # ceil(n * q / 100)
    return round(values[int(rank) - 1], 1)


def _histogram(values: list[float]) -> list[tuple[int, int]]:
    counts = [0] * len(BUCKET_EDGES_MINUTES)
    for v in values:
        index = 0
        for i, edge in enumerate(BUCKET_EDGES_MINUTES):
            if v >= edge:
                index = i
        counts[index] += 1
    return list(zip(BUCKET_EDGES_MINUTES, counts, strict=True))


def _category(value: str | None) -> str:
    return value if value in (CATEGORY_STROKE, CATEGORY_CHEST_PAIN) else ROUTINE


def _critical_counts(session: Session, scope: list[Any]) -> dict[str, int] | None:
    """Studies with a recorded critical result, per category; None when the database has
    no critical-results table yet (an older schema), inside a savepoint so a PostgreSQL
    transaction survives the failed statement."""
    counts: dict[str, int] = defaultdict(int)
    try:
        with session.begin_nested():
            rows = session.execute(
                select(Study.category, func.count(func.distinct(CriticalResult.study_id)))
                .join(CriticalResult, CriticalResult.study_id == Study.id)
                .join(Site, Study.site_id == Site.id)
                .where(*scope)
                .group_by(Study.category)
            ).all()
    except DBAPIError:
        return None
    for category, count in rows:
        counts[_category(category)] += int(count)
    return counts


def operations_stats(
    *,
    session: Session,
    now: datetime,
    days: int = 30,
    site_code: str | None = None,
    deadlines: Deadlines = DEFAULT_DEADLINES,
) -> OperationsStats:
    """Figures for studies that arrived in the last ``days`` days (1..366) before ``now``,
    optionally for one site. Cancelled studies are left out."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}")
    since = now - timedelta(days=days)
    scope = [Study.received_at >= since, Study.received_at <= now, Study.status != STATUS_CANCELLED]
    if site_code is not None:
        scope.append(Site.code == site_code)

    volume_rows = session.execute(
        select(Site.code, Site.name, Study.modalities, func.count(Study.id))
        .join(Site, Study.site_id == Site.id)
        .where(*scope)
        .group_by(Site.code, Site.name, Study.modalities)
        .order_by(Site.code, Study.modalities)
    ).all()
    volumes: list[dict[str, Any]] = [
        {"site": code, "site_name": name, "modality": modality or "?", "count": int(count)}
        for code, name, modality, count in volume_rows
    ]

    finals = session.execute(
        select(Study.category, Study.received_at, Report.signed_at)
        .join(Report, Report.study_id == Study.id)
        .join(Site, Study.site_id == Site.id)
        .where(*scope, Report.status.in_((REPORT_FINAL, REPORT_AMENDED)))
        .where(Report.signed_at.is_not(None))
    ).all()
    durations: dict[str, list[float]] = defaultdict(list)
    for category, received_at, signed_at in finals:
        if signed_at is None:  # pragma: no cover - filtered in SQL
            continue
        minutes = max(0.0, (signed_at - received_at).total_seconds() / 60)
        durations[_category(category)].append(minutes)
    turnaround = []
    for category in CATEGORIES:
        values = sorted(durations.get(category, []))
        limit = deadlines.for_category(None if category == ROUTINE else category)
        limit_minutes = limit.total_seconds() / 60
        turnaround.append(
            Turnaround(
                category=category,
                deadline_minutes=limit_minutes,
                count=len(values),
                within_deadline=sum(1 for v in values if v <= limit_minutes),
                p50_minutes=_percentile(values, 50),
                p90_minutes=_percentile(values, 90),
                max_minutes=round(values[-1], 1) if values else None,
                histogram=_histogram(values),
                minutes=[round(v, 2) for v in values[:: max(1, len(values) // MAX_POINTS)]],
            )
        )

    category_rows = session.execute(
        select(Study.category, func.count(Study.id))
        .join(Site, Study.site_id == Site.id)
        .where(*scope)
        .group_by(Study.category)
    ).all()
    per_category: dict[str, int] = defaultdict(int)
    for category, count in category_rows:
        per_category[_category(category)] += int(count)
    critical_count = _critical_counts(session, scope)
    final_count = {c: len(v) for c, v in durations.items()}
    urgent = [
        {
            "category": category,
            "studies": per_category.get(category, 0),
            "final": final_count.get(category, 0),
            "critical_results": (
                None if critical_count is None else critical_count.get(category, 0)
            ),
        }
        for category in (CATEGORY_STROKE, CATEGORY_CHEST_PAIN)
    ]

    # per day (UTC) and category; days are bucketed here, not in SQL, for portability
    day_rows = session.execute(
        select(Study.received_at, Study.category)
        .join(Site, Study.site_id == Site.id)
        .where(*scope)
        .order_by(Study.received_at)
    ).all()
    by_day_counts: dict[str, dict[str, int]] = {}
    for received_at, category in day_rows:
        day = received_at.date().isoformat()
        bucket = by_day_counts.setdefault(day, dict.fromkeys(CATEGORIES, 0))
        bucket[_category(category)] += 1
    by_day = [{"day": day, **counts} for day, counts in sorted(by_day_counts.items())]

    return OperationsStats(
        since=since,
        until=now,
        total_studies=sum(v["count"] for v in volumes),
        volumes=volumes,
        turnaround=turnaround,
        urgent=urgent,
        by_day=by_day,
    )


__all__ = ["CATEGORIES", "OperationsStats", "Turnaround", "operations_stats"]
