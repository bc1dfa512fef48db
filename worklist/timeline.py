"""A study's path from the scanner to the clinic, hop by hop, read from what the system
already keeps: no hop is recorded twice.

Hop (clock): where it is read.

- ``call_ahead`` (county): ``call_aheads.created_at``, the clinic announced the patient.
- ``acquired``, ``acquired_last`` (modality): ``studies.acquired_at``, ``acquired_last_at``,
  from the images' headers at ingest.
- ``received_first``, ``received_last`` (gateway): ``studies.received_at``,
  ``last_instance_at``, the first and last C-STORE.
- ``uploaded_first``, ``uploaded_last`` (gateway): ``studies.uploaded_first_at``,
  ``uploaded_last_at``, as the gateway announced them.
- ``listed`` (county): ``studies.arrived_at``, the first instance announced; the worklist
  lists a study from then. ``arrived_last``: ``studies.arrived_last_at``, the last one.
- ``flagged_urgent`` (county): the ``study_urgent`` event (triage, a call-ahead or a
  person's flag), else the ``study_flagged`` audit event.
- ``claimed``, ``opened`` (county): a reader's first ``study_claimed``, first view of the
  study or its images (audit trail).
- ``critical_result_communicated``, ``critical_result_acknowledged`` (county):
  ``critical_results.communicated_at``, ``acknowledged_at`` (the clinic's read-back).
- ``preliminary_signed``, ``final_signed`` (county): the first ``report_signed`` audit event
  of that status (else ``reports.signed_at``).
- ``clinic_notified`` (county): the first ``report_signed`` event, at its first delivered
  webhook, else at its commit (the clinic's event stream has it then).
- ``clinic_opened`` (county): a clinic user's first view of the report (audit trail).

Gateway times are the gateway's clock. Each announcement says when the gateway sent it, so
the county keeps its clock against the gateway's (``studies.gateway_clock_offset_seconds``,
county minus gateway; network delay included); beyond ``CLOCK_TOLERANCE`` the gateway's hops
are shifted onto the county's clock (``at``), their ``recorded_at`` kept as recorded.

``timelines`` builds many studies' timelines with one query per source (the operations
figures use it over a period); ``study_timeline`` is one study's.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worklist.models import (
    CATEGORY_CHEST_PAIN,
    CATEGORY_STROKE,
    REPORT_AMENDED,
    REPORT_FINAL,
    REPORT_PRELIMINARY,
    ROLE_ADMIN,
    ROLE_CLINIC,
    ROLE_RADIOLOGIST,
    AuditEvent,
    CallAhead,
    CriticalResult,
    Event,
    Report,
    Study,
    User,
    WebhookDelivery,
)

CLOCK_MODALITY, CLOCK_GATEWAY, CLOCK_COUNTY = "modality", "gateway", "county"
# a gateway clock this far from the county's is corrected for on the timeline
CLOCK_TOLERANCE = timedelta(seconds=2)
# guideline targets (Chinese stroke centre and chest pain centre standards): a stroke study
# read within 45 minutes of its arrival; a CT angiogram read about 10 minutes after it was
# acquired
STROKE_READ = timedelta(minutes=45)
CTA_READ = timedelta(minutes=10)

# hop names, in the order the pipeline passes them (ties in time keep this order)
HOPS = (
    "call_ahead",
    "acquired",
    "acquired_last",
    "received_first",
    "received_last",
    "uploaded_first",
    "uploaded_last",
    "listed",
    "flagged_urgent",
    "arrived_last",
    "claimed",
    "opened",
    "critical_result_communicated",
    "preliminary_signed",
    "final_signed",
    "clinic_notified",
    "clinic_opened",
    "critical_result_acknowledged",
)
_RANK = {name: i for i, name in enumerate(HOPS)}
SIGNED = ("preliminary_signed", "final_signed")  # the first of them: the report's first answer
# durations the operations figures give percentiles of: (name, from hops, to hops), each end
# the earliest of its hops present
STAGES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("scan_to_listed", ("acquired",), ("listed",)),
    ("gateway_to_listed", ("received_first",), ("listed",)),
    ("last_image_to_county", ("received_last",), ("arrived_last",)),
    ("listed_to_claimed", ("listed",), ("claimed",)),
    ("claimed_to_report", ("claimed",), SIGNED),
    ("report_to_clinic_notified", SIGNED, ("clinic_notified",)),
    ("notified_to_clinic_opened", ("clinic_notified",), ("clinic_opened",)),
    ("report_to_clinic_opened", SIGNED, ("clinic_opened",)),
    ("listed_to_report", ("listed",), SIGNED),
    ("scan_to_report", ("acquired",), SIGNED),
    ("scan_to_clinic_opened", ("acquired",), ("clinic_opened",)),
)
STAGE_NAMES = tuple(name for name, _, _ in STAGES)
# the four a county is judged by, hop to hop from the scan to the clinic: kept per site and
# week on the operations page and as Prometheus histograms ("report": the first signature,
# preliminary for an urgent study, else final)
HEADLINE_STAGES = (
    "scan_to_listed",
    "listed_to_claimed",
    "claimed_to_report",
    "report_to_clinic_opened",
)

READER_ROLES = (ROLE_RADIOLOGIST, ROLE_ADMIN)
_OPENED_ACTIONS = (
    "study_viewed",
    "dicomweb_metadata_viewed",
    "dicomweb_images_viewed",
    "dicomweb_retrieved",
)
CLINIC_READ_ACTIONS = (
    "report_viewed",
    "report_first_read",
    "report_pdf_viewed",
    "report_html_viewed",
    "report_fhir_viewed",
)
_ROW_ACTIONS = ("study_claimed", "report_signed", "study_flagged")
# the audit actions that can record the end hop of a headline stage (claimed, signed, the
# clinic's first read); listed is ``studies.arrived_at``
HEADLINE_END_ACTIONS = ("study_claimed", "report_signed", *CLINIC_READ_ACTIONS)
_CHUNK = 500
# words that make a CT study an angiogram (the CTA target applies)
_CTA = re.compile(r"(?<![A-Z])CTA(?![A-Z])|ANGIO|血管成像|血管造影", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Hop:
    name: str
    at: datetime  # on the county's clock
    recorded_at: datetime  # as its record holds it
    clock: str  # the clock that took it down: modality, gateway, county
    source: str  # where it was read
    by: str | None = None  # the account that did it (claims, signatures, reads)


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    start: str  # hop names
    end: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Target:
    """A deadline the study is held to: ``state`` met / missed (the end hop came), running
    / overdue (not yet, ``elapsed_seconds`` counts to now), unknown (no start hop)."""

    name: str
    start: str
    end: str
    limit_seconds: float
    elapsed_seconds: float | None
    state: str


@dataclass(frozen=True, slots=True)
class Timeline:
    study_instance_uid: str
    site: str
    priority: str
    category: str | None
    status: str
    gateway_clock_offset_seconds: float | None
    gateway_clock_corrected: bool
    hops: list[Hop]  # in time order
    stages: list[Stage] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def hop(self, name: str) -> Hop | None:
        return next((h for h in self.hops if h.name == name), None)

    def first_of(self, names: Iterable[str]) -> Hop | None:
        present = [h for h in self.hops if h.name in set(names)]
        return min(present, key=lambda h: h.at) if present else None


# --- acquisition time from the DICOM header (DICOM JSON, no bulk data) ---------------------
_ACQUISITION_DATETIME = "0008002A"
# (date, time) tags in order of preference: acquisition, content, series
_DATE_TIME_TAGS = (("00080022", "00080032"), ("00080023", "00080033"), ("00080021", "00080031"))
_TIMEZONE_OFFSET = "00080201"
_OFFSET = re.compile(r"^([+-])(\d{2})(\d{2})$")


def _first_value(header: Mapping[str, Any], tag: str) -> str:
    element = header.get(tag)
    if not isinstance(element, Mapping):
        return ""
    values = element.get("Value")
    if not isinstance(values, list) or not values or not isinstance(values[0], str):
        return ""
    return values[0].strip()


def _utc_offset(text: str) -> timezone | None:
    match = _OFFSET.match(text.strip())
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    if delta > timedelta(hours=14):
        return None
    return timezone(-delta if sign == "-" else delta)


def _parse_time(text: str) -> time | None:
    """A DICOM TM (``HHMMSS.FFFFFF``, trailing parts optional; the old ``HH:MM:SS`` too)."""
    text = text.replace(":", "").strip()
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6):
        return None
    hour, minute, second = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    micro = int((fraction + "000000")[:6]) if fraction.isdigit() else 0
    try:
        return time(hour, minute, min(second, 59), micro)
    except ValueError:
        return None


def _parse_date(text: str) -> date | None:
    text = text.replace(".", "").strip()  # the old YYYY.MM.DD
    if not text.isdigit() or len(text) != 8:
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def acquisition_time(
    header: Mapping[str, Any] | None, *, default_offset: timedelta
) -> datetime | None:
    """When an image was acquired, in UTC, from its header as DICOM JSON: Acquisition
    DateTime, else Acquisition Date and Time, else Content Date and Time, else Series Date
    and Time; a local time is read with the header's Timezone Offset From UTC, else
    ``default_offset``. None when the header says nothing usable."""
    if not header:
        return None
    zone = _utc_offset(_first_value(header, _TIMEZONE_OFFSET)) or timezone(default_offset)
    stamp = _first_value(header, _ACQUISITION_DATETIME)
    when: datetime | None = None
    if stamp:
        body, sign, offset = stamp.partition("+") if "+" in stamp else stamp.partition("-")
        day = _parse_date(body[:8])
        clock = _parse_time(body[8:]) if len(body) > 8 else time(0)
        if day is not None and clock is not None:
            own = _utc_offset(sign + offset) if sign else None
            when = datetime.combine(day, clock, tzinfo=own or zone)
    if when is None:
        for date_tag, time_tag in _DATE_TIME_TAGS:
            day = _parse_date(_first_value(header, date_tag))
            clock = _parse_time(_first_value(header, time_tag))
            if day is not None and clock is not None:
                when = datetime.combine(day, clock, tzinfo=zone)
                break
    if when is None or not 1990 <= when.year <= 2200:
        return None
    return when.astimezone(UTC)


# --- building timelines ---------------------------------------------------------------------
@dataclass
class _Found:
    """What the batch queries found for one study: hop name -> (time, source, by)."""

    times: dict[str, tuple[datetime, str, str | None]] = field(default_factory=dict)

    def earliest(self, name: str, at: datetime | None, source: str, by: str | None = None) -> None:
        if at is None:
            return
        current = self.times.get(name)
        if current is None or at < current[0]:
            self.times[name] = (at, source, by)


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


def _from_audit(session: Session, found: dict[str, _Found], uids: Sequence[str]) -> None:
    for chunk in _chunks(uids):
        # views come by the hundred: the first of each action by each account only (the
        # action kept apart, so a reader's look at the report is no "opened")
        actions = session.execute(
            select(
                AuditEvent.object_id,
                AuditEvent.action,
                AuditEvent.role,
                AuditEvent.username,
                func.min(AuditEvent.at),
            )
            .where(
                AuditEvent.object_type.in_(("study", "report")),
                AuditEvent.object_id.in_(chunk),
                AuditEvent.action.in_(_OPENED_ACTIONS + CLINIC_READ_ACTIONS),
                AuditEvent.outcome == "success",
                AuditEvent.role.in_((*READER_ROLES, ROLE_CLINIC)),
            )
            .group_by(AuditEvent.object_id, AuditEvent.action, AuditEvent.role, AuditEvent.username)
        ).all()
        for uid, action, role, username, at in actions:
            if role == ROLE_CLINIC and action in CLINIC_READ_ACTIONS:
                found[uid].earliest("clinic_opened", at, f"audit:{action}", username)
            elif role in READER_ROLES and action in _OPENED_ACTIONS:
                found[uid].earliest("opened", at, f"audit:{action}", username)
        rows = session.execute(
            select(
                AuditEvent.object_id,
                AuditEvent.action,
                AuditEvent.at,
                AuditEvent.username,
                AuditEvent.detail,
            )
            .where(
                AuditEvent.object_type.in_(("study", "report")),
                AuditEvent.object_id.in_(chunk),
                AuditEvent.action.in_(_ROW_ACTIONS),
                AuditEvent.outcome == "success",
            )
            .order_by(AuditEvent.at, AuditEvent.id)
        ).all()
        for uid, action, at, username, detail in rows:
            if action == "study_claimed":
                found[uid].earliest("claimed", at, "audit:study_claimed", username)
            elif action == "study_flagged":
                found[uid].earliest("flagged_urgent", at, "audit:study_flagged", username)
            else:
                status = (detail or {}).get("status")
                if status == REPORT_PRELIMINARY:
                    found[uid].earliest("preliminary_signed", at, "audit:report_signed", username)
                elif status in (REPORT_FINAL, REPORT_AMENDED):
                    found[uid].earliest("final_signed", at, "audit:report_signed", username)


def _from_events(session: Session, found: dict[str, _Found], uids: Sequence[str]) -> None:
    for chunk in _chunks(uids):
        firsts = session.execute(
            select(Event.study_uid, Event.kind, func.min(Event.id))
            .where(
                Event.study_uid.in_(chunk),
                Event.kind.in_(("study_urgent", "report_signed")),
            )
            .group_by(Event.study_uid, Event.kind)
        ).all()
        ids = [event_id for _, _, event_id in firsts]
        if not ids:
            continue
        rows = session.execute(
            select(
                Event.study_uid,
                Event.kind,
                Event.created_at,
                func.min(WebhookDelivery.delivered_at),
            )
            .outerjoin(WebhookDelivery, WebhookDelivery.event_id == Event.id)
            .where(Event.id.in_(ids))
            .group_by(Event.id, Event.study_uid, Event.kind, Event.created_at)
        ).all()
        for uid, kind, created_at, delivered_at in rows:
            if uid is None:
                continue
            if kind == "study_urgent":
                # the event, not a person's audit entry, when both are there
                found[uid].times.pop("flagged_urgent", None)
                found[uid].earliest("flagged_urgent", created_at, "events:study_urgent")
            elif delivered_at is not None:
                found[uid].earliest(
                    "clinic_notified", delivered_at, "webhook_deliveries.delivered_at"
                )
            else:
                found[uid].earliest("clinic_notified", created_at, "events:report_signed")


def _from_rows(session: Session, found: dict[str, _Found], studies: Sequence[Study]) -> None:
    by_id = {s.id: s.study_instance_uid for s in studies}
    ids = list(by_id)
    for chunk in _chunks(ids):
        for study_id, communicated, acknowledged in session.execute(
            select(
                CriticalResult.study_id,
                func.min(CriticalResult.communicated_at),
                func.min(CriticalResult.acknowledged_at),
            )
            .where(CriticalResult.study_id.in_(chunk))
            .group_by(CriticalResult.study_id)
        ):
            f = found[by_id[study_id]]
            f.earliest(
                "critical_result_communicated", communicated, "critical_results.communicated_at"
            )
            f.earliest(
                "critical_result_acknowledged", acknowledged, "critical_results.acknowledged_at"
            )
        for called_for, created_at in session.execute(
            select(CallAhead.study_id, CallAhead.created_at).where(CallAhead.study_id.in_(chunk))
        ):
            if called_for is not None:
                found[by_id[called_for]].earliest(
                    "call_ahead", created_at, "call_aheads.created_at"
                )
        # a signature whose audit entry is gone (retention): the report row's
        for study_id, status, signed_at, username in session.execute(
            select(Report.study_id, Report.status, Report.signed_at, User.username)
            .outerjoin(User, User.id == Report.signed_by_id)
            .where(Report.study_id.in_(chunk), Report.signed_at.is_not(None))
        ):
            f = found[by_id[study_id]]
            name = "preliminary_signed" if status == REPORT_PRELIMINARY else "final_signed"
            if status in (REPORT_PRELIMINARY, REPORT_FINAL, REPORT_AMENDED) and (
                name not in f.times
            ):
                f.earliest(name, signed_at, "reports.signed_at", username)


def _is_cta(study: Study) -> bool:
    if "CT" not in study.modalities.split("\\"):
        return False
    texts = [study.study_description, *(str(v) for v in (study.text_fields or {}).values())]
    return any(_CTA.search(t) for t in texts if t)


def _targets(study: Study, timeline: Timeline, now: datetime) -> list[Target]:
    wanted: list[tuple[str, tuple[str, ...], timedelta]] = []
    if study.deadline_at is not None:
        wanted.append(("read_deadline", ("received_first",), study.deadline_at - study.received_at))
    if study.category == CATEGORY_STROKE:
        wanted.append(("stroke_read_45min", ("listed",), STROKE_READ))
    if study.category in (CATEGORY_STROKE, CATEGORY_CHEST_PAIN) and _is_cta(study):
        wanted.append(("cta_read_10min", ("acquired",), CTA_READ))
    end = timeline.first_of(SIGNED)
    out = []
    for name, starts, limit in wanted:
        start = timeline.first_of(starts)
        limit_s = limit.total_seconds()
        if start is None:
            out.append(Target(name, starts[0], "report_signed", limit_s, None, "unknown"))
            continue
        if end is not None:
            elapsed = (end.at - start.at).total_seconds()
            state = "met" if elapsed <= limit_s else "missed"
        else:
            elapsed = (now - start.at).total_seconds()
            state = "running" if elapsed <= limit_s else "overdue"
        out.append(Target(name, start.name, "report_signed", limit_s, round(elapsed, 3), state))
    return out


def _stages(timeline: Timeline) -> list[Stage]:
    out = []
    for name, starts, ends in STAGES:
        start, end = timeline.first_of(starts), timeline.first_of(ends)
        if start is None or end is None:
            continue
        out.append(Stage(name, start.name, end.name, round((end.at - start.at).total_seconds(), 3)))
    return out


def _build(study: Study, found: _Found, now: datetime) -> Timeline:
    offset = study.gateway_clock_offset_seconds
    correct = offset is not None and abs(offset) > CLOCK_TOLERANCE.total_seconds()
    shift = timedelta(seconds=offset or 0.0) if correct else timedelta(0)
    columns: list[tuple[str, datetime | None, str, str]] = [
        ("acquired", study.acquired_at, CLOCK_MODALITY, "studies.acquired_at"),
        ("acquired_last", study.acquired_last_at, CLOCK_MODALITY, "studies.acquired_last_at"),
        ("received_first", study.received_at, CLOCK_GATEWAY, "studies.received_at"),
        ("received_last", study.last_instance_at, CLOCK_GATEWAY, "studies.last_instance_at"),
        ("uploaded_first", study.uploaded_first_at, CLOCK_GATEWAY, "studies.uploaded_first_at"),
        ("uploaded_last", study.uploaded_last_at, CLOCK_GATEWAY, "studies.uploaded_last_at"),
        ("listed", study.arrived_at, CLOCK_COUNTY, "studies.arrived_at"),
        ("arrived_last", study.arrived_last_at, CLOCK_COUNTY, "studies.arrived_last_at"),
    ]
    hops = [
        Hop(name, at + shift if clock == CLOCK_GATEWAY else at, at, clock, source)
        for name, at, clock, source in columns
        if at is not None
    ]
    hops += [
        Hop(name, at, at, CLOCK_COUNTY, source, by)
        for name, (at, source, by) in found.times.items()
    ]
    hops.sort(key=lambda h: (h.at, _RANK[h.name]))
    timeline = Timeline(
        study_instance_uid=study.study_instance_uid,
        site=study.site.code,
        priority=study.priority,
        category=study.category,
        status=study.status,
        gateway_clock_offset_seconds=offset,
        gateway_clock_corrected=correct,
        hops=hops,
    )
    timeline.stages.extend(_stages(timeline))
    timeline.targets.extend(_targets(study, timeline, now))
    return timeline


def timelines(*, session: Session, studies: Sequence[Study], now: datetime) -> list[Timeline]:
    """The timelines of ``studies`` (in their order), a few queries for all of them."""
    uids = [s.study_instance_uid for s in studies]
    found: dict[str, _Found] = defaultdict(_Found)
    if studies:
        _from_audit(session, found, uids)
        _from_events(session, found, uids)
        _from_rows(session, found, studies)
    return [_build(s, found[s.study_instance_uid], now) for s in studies]


def study_timeline(*, session: Session, study: Study, now: datetime) -> Timeline:
    """One study's timeline (``timelines`` of one)."""
    return timelines(session=session, studies=[study], now=now)[0]


__all__ = [
    "CLINIC_READ_ACTIONS",
    "CLOCK_TOLERANCE",
    "CTA_READ",
    "HEADLINE_END_ACTIONS",
    "HEADLINE_STAGES",
    "HOPS",
    "STAGES",
    "STAGE_NAMES",
    "STROKE_READ",
    "Hop",
    "Stage",
    "Target",
    "Timeline",
    "acquisition_time",
    "study_timeline",
    "timelines",
]
