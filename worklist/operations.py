"""The operations picture now: studies past their deadline or escalated, each radiologist's
workload, and each township gateway's health as it last reported it.

Read time is measured from the audit trail: a reader's ``study_claimed`` event to their
``report_signed`` event on the same study (the claim nearest before the signature).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, joinedload

from worklist.models import (
    ROLE_ADMIN,
    ROLE_GATEWAY,
    ROLE_RADIOLOGIST,
    AuditEvent,
    GatewayStatus,
    Site,
    Study,
    User,
)
from worklist.overdue import UNREPORTED_STATUSES, overdue_filter
from worklist.visibility import TERMINAL_STATUSES

MAX_LATE = 200
# a gateway that has not reported for this long has lost contact
STALE_AFTER = timedelta(seconds=120)
CLAIM = "study_claimed"
# the gateway's status report's clock measurement (county minus gateway, seconds)
CLOCK_OFFSET_KEY = "clock_offset_seconds"
SIGN = "report_signed"


@dataclass(frozen=True, slots=True)
class LateStudy:
    study_instance_uid: str
    site: str
    patient_name: str
    study_description: str
    modality: str
    category: str | None
    priority: str
    status: str
    received_at: datetime
    deadline_at: datetime | None
    overdue: bool
    escalation_level: int
    claimed_by: str | None  # display name


@dataclass(frozen=True, slots=True)
class ReaderLoad:
    username: str
    display_name: str
    claimed_now: int
    read_today: int
    median_read_minutes: float | None


@dataclass(frozen=True, slots=True)
class GatewayHealth:
    gateway: str  # the account
    sites: list[str]
    last_contact: datetime | None
    stale: bool
    pending_urgent: int
    pending_routine: int
    oldest_unsent_age_seconds: float | None
    last_error: str | None
    last_error_attempts: int | None
    # county minus gateway clock, seconds, at its last report (None: not measured)
    clock_offset_seconds: float | None = None


def _name(user: User | None) -> str | None:
    return (user.display_name or user.username) if user is not None else None


def _is_overdue(study: Study, now: datetime) -> bool:
    return (
        study.status in UNREPORTED_STATUSES
        and study.deadline_at is not None
        and study.deadline_at <= now
    )


def _held(study: Study, now: datetime) -> bool:
    return study.claim_expires_at is not None and study.claim_expires_at > now


def late_studies(*, session: Session, now: datetime) -> list[LateStudy]:
    """Open studies past their deadline with no report, or escalated; the latest deadline
    last."""
    rows = session.scalars(
        select(Study)
        .where(
            Study.status.not_in(TERMINAL_STATUSES),
            or_(overdue_filter(now), Study.escalation_level > 0),
        )
        .options(joinedload(Study.site), joinedload(Study.claimed_by))
        .order_by(Study.deadline_at, Study.id)
        .limit(MAX_LATE)
    ).all()
    return [
        LateStudy(
            study_instance_uid=s.study_instance_uid,
            site=s.site.code,
            patient_name=s.patient_name,
            study_description=s.study_description,
            modality=s.modalities,
            category=s.category,
            priority=s.priority,
            status=s.status,
            received_at=s.received_at,
            deadline_at=s.deadline_at,
            overdue=_is_overdue(s, now),
            escalation_level=s.escalation_level or 0,
            claimed_by=_name(s.claimed_by) if _held(s, now) else None,
        )
        for s in rows
    ]


def reader_workload(*, session: Session, now: datetime, day_start: datetime) -> list[ReaderLoad]:
    """Every active radiologist (and admins who read today): studies they hold now, studies
    they signed since ``day_start``, and the median claim-to-signature time of those."""
    readers = session.scalars(
        select(User).where(User.role.in_((ROLE_RADIOLOGIST, ROLE_ADMIN))).order_by(User.username)
    ).all()
    held = dict(
        session.execute(
            select(Study.claimed_by_id, func.count(Study.id))
            .where(
                Study.claimed_by_id.is_not(None),
                Study.claim_expires_at > now,
                Study.status.not_in(TERMINAL_STATUSES),
            )
            .group_by(Study.claimed_by_id)
        ).all()
    )
    events = session.execute(
        select(AuditEvent.user_id, AuditEvent.action, AuditEvent.object_id, AuditEvent.at)
        .where(
            AuditEvent.action.in_((CLAIM, SIGN)),
            AuditEvent.outcome == "success",
            AuditEvent.at >= day_start - timedelta(days=1),
            AuditEvent.user_id.is_not(None),
        )
        .order_by(AuditEvent.at, AuditEvent.id)
    ).all()
    claims: dict[tuple[int, str], datetime] = {}
    reads: dict[int, dict[str, float | None]] = defaultdict(dict)
    for user_id, action, study_uid, at in events:
        if user_id is None:
            continue
        key = (user_id, study_uid)
        if action == CLAIM:
            claims[key] = at
        elif at >= day_start and study_uid not in reads[user_id]:
            claimed = claims.get(key)
            reads[user_id][study_uid] = (at - claimed).total_seconds() / 60 if claimed else None
    out = []
    for user in readers:
        mine = reads.get(user.id, {})
        if user.role == ROLE_ADMIN and not mine and not held.get(user.id):
            continue
        times = [m for m in mine.values() if m is not None]
        out.append(
            ReaderLoad(
                username=user.username,
                display_name=user.display_name or user.username,
                claimed_now=int(held.get(user.id, 0)),
                read_today=len(mine),
                median_read_minutes=round(statistics.median(times), 1) if times else None,
            )
        )
    return out


def record_gateway_status(
    *, session: Session, gateway: User, status: dict[str, Any], now: datetime
) -> GatewayStatus:
    """Keep a gateway's latest report (one row per gateway account)."""
    row = session.get(GatewayStatus, gateway.id)
    if row is None:
        row = GatewayStatus(user_id=gateway.id, reported_at=now, status=dict(status))
        session.add(row)
    else:
        row.reported_at = now
        row.status = dict(status)
    session.flush()
    return row


def gateway_clock_offset(*, session: Session, gateway: User) -> float | None:
    """The gateway's clock against the county's (county minus gateway, seconds) as measured
    at its last status report; None before one that said when it was sent."""
    row = session.get(GatewayStatus, gateway.id)
    if row is None:
        return None
    offset = row.status.get(CLOCK_OFFSET_KEY)
    return float(offset) if isinstance(offset, int | float) else None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def gateway_health(*, session: Session, now: datetime) -> list[GatewayHealth]:
    """Every gateway account with what it last reported (none yet: no contact)."""
    gateways = session.scalars(
        select(User).where(User.role == ROLE_GATEWAY).options(joinedload(User.site))
    ).all()
    every_site = [code for (code,) in session.execute(select(Site.code).order_by(Site.code))]
    reports = {row.user_id: row for row in session.scalars(select(GatewayStatus))}
    out = []
    for gw in sorted(gateways, key=lambda g: (g.site.code if g.site else "", g.username)):
        row = reports.get(gw.id)
        status: dict[str, Any] = dict(row.status) if row is not None else {}
        error = status.get("last_error") or {}
        oldest = status.get("oldest_unsent_age_seconds")
        out.append(
            GatewayHealth(
                gateway=gw.username,
                sites=[gw.site.code] if gw.site is not None else every_site,
                last_contact=row.reported_at if row is not None else None,
                stale=row is None or now - row.reported_at > STALE_AFTER,
                pending_urgent=_int(status.get("pending_urgent")),
                pending_routine=_int(status.get("pending_routine")),
                oldest_unsent_age_seconds=float(oldest)
                if isinstance(oldest, int | float)
                else None,
                last_error=str(error.get("error"))[:500] if error.get("error") else None,
                last_error_attempts=_int(error.get("attempts")) if error else None,
                clock_offset_seconds=(
                    float(status[CLOCK_OFFSET_KEY])
                    if isinstance(status.get(CLOCK_OFFSET_KEY), int | float)
                    else None
                ),
            )
        )
    return out


__all__ = [
    "CLOCK_OFFSET_KEY",
    "GatewayHealth",
    "LateStudy",
    "ReaderLoad",
    "gateway_clock_offset",
    "gateway_health",
    "late_studies",
    "reader_workload",
    "record_gateway_status",
]
