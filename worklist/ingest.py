"""Record instances announced by a gateway: study/series/instance rows, counts, triage.

Safe under concurrency: rows are created with ``INSERT ... ON CONFLICT DO NOTHING`` and
re-selected, the study row is locked (``FOR UPDATE`` on PostgreSQL; SQLite's single writer
lock does the same) before its text and triage are merged, and counts are updated with SQL
expressions. Studies are handled in UID order so two requests cannot deadlock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, case, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from worklist.call_ahead import match_arrival
from worklist.errors import UnknownSite
from worklist.events import KIND_STUDY_URGENT, publish_study_event
from worklist.models import (
    CONFLICT_PATIENT_MISMATCH,
    CONFLICT_SERIES_OTHER_STUDY,
    CONFLICT_SOP_OTHER_STUDY,
    CONFLICT_STUDY_OTHER_SITE,
    OVERWRITE_SAME_SOURCE,
    PRIORITY_ROUTINE,
    PRIORITY_STAT,
    STATUS_READY,
    STATUS_RECEIVING,
    IngestConflict,
    Instance,
    Series,
    Site,
    Study,
)
from worklist.resends import REPLACED, Resend, apply_resends, split_resends
from worklist.settings import DEFAULT_DEADLINES, DEFAULT_MODALITY_UTC_OFFSET, Deadlines
from worklist.timeline import acquisition_time
from worklist.triage import Reason, classify, patients_differ

logger = logging.getLogger(__name__)

TEXT_JOINER = " | "
MAX_TEXT_FIELD = 1024
MAX_REASONS = 20


@dataclass
class InstanceArrival:
    """One instance as the gateway announces it (the ingest JSON's per-instance fields)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    object_key: str
    size: int
    sha256: str
    received_at: datetime
    transfer_syntax_uid: str = ""
    modality: str = ""
    patient_name: str = ""
    patient_id: str = ""
    patient_sex: str = ""
    patient_birth_date: str = ""
    accession_number: str = ""
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""
    series_number: int | None = None
    series_description: str = ""
    body_part_examined: str = ""
    instance_number: int | None = None
    text_fields: dict[str, str] | None = None
    charset_notes: list[str] | None = None
    urgent_hint: dict[str, Any] | None = None
    dicom_json: dict[str, Any] | None = None
    # when the gateway had it in the object store (its clock; None: an older gateway)
    uploaded_at: datetime | None = None


# objects that are no image of the examination (a report as DICOM SR, a key-object note,
# a presentation state): they say nothing about when the images were taken or came in
NON_IMAGE_MODALITIES = frozenset({"SR", "KO", "PR", "DOC"})


@dataclass(frozen=True)
class HeldConflict:
    """An announced instance held back for an admin (``worklist.conflicts``), not filed.
    ``new`` is false when an earlier announcement of the same object already held it."""

    conflict_id: int
    kind: str
    study_instance_uid: str
    sop_instance_uid: str
    new: bool


@dataclass
class IngestOutcome:
    accepted: int = 0
    duplicates: int = 0
    study_uids: list[str] = field(default_factory=list)
    conflicts: list[HeldConflict] = field(default_factory=list)
    # re-sent instances (other bytes under a filed SOP Instance UID): ``worklist.resends``
    resends: list[Resend] = field(default_factory=list)


def _table(model: type[Any]) -> Table:
    return cast(Table, model.__table__)


def _insert(session: Session, table: Table) -> Any:
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return pg_insert(table)
    if name == "sqlite":
        return sqlite_insert(table)
    raise NotImplementedError(f"unsupported database {name!r}")


def merge_text_fields(existing: Mapping[str, Any], new: Mapping[str, str]) -> dict[str, str]:
    """Per keyword, the distinct values seen so far joined with `` | `` (bounded length)."""
    merged = {k: str(v) for k, v in existing.items()}
    for kw, raw in new.items():
        value = " ".join(str(raw).split())
        if not value:
            continue
        current = merged.get(kw, "")
        parts = current.split(TEXT_JOINER) if current else []
        if value in parts:
            continue
        joined = TEXT_JOINER.join([*parts, value])
        if len(joined) <= MAX_TEXT_FIELD:
            merged[kw] = joined
        elif not current:
            merged[kw] = value[:MAX_TEXT_FIELD]
    return merged


def arrival_text_fields(a: InstanceArrival) -> dict[str, str]:
    fields = {
        "StudyDescription": a.study_description,
        "SeriesDescription": a.series_description,
        "BodyPartExamined": a.body_part_examined,
        "Modality": a.modality,
    }
    fields.update(a.text_fields or {})
    return {k: v for k, v in fields.items() if v}


def _hint_stat(arrivals: Sequence[InstanceArrival]) -> tuple[str | None, list[Reason]] | None:
    """The gateway's explicit urgent flag, if any arrival carries one."""
    for a in arrivals:
        hint = a.urgent_hint or {}
        if hint.get("priority") == PRIORITY_STAT:
            sent = hint.get("reasons") or []
            reasons = [Reason.from_json(r) for r in sent] or [Reason("gateway_flag")]
            category = hint.get("category")
            return (str(category) if category else None), reasons
    return None


def _apply_triage(study: Study, arrivals: Sequence[InstanceArrival], deadlines: Deadlines) -> None:
    if study.triage_override_by_id is not None:
        return  # a person decided; automatic triage stays out
    modality = study.modalities.split("\\")[0] if study.modalities else None
    result = classify(dict(study.text_fields), modality=modality)
    category: str | None = result.category
    reasons = list(result.reasons)
    is_stat = result.priority == PRIORITY_STAT
    hint = _hint_stat(arrivals)
    if hint is not None:
        is_stat = True
        category = hint[0] or category
        reasons = hint[1] + [r for r in reasons if r not in hint[1]]
    if study.priority == PRIORITY_STAT:
        # never silently downgraded; the first urgent category keeps its deadline
        category = study.category or category
        before = [Reason.from_json(r) for r in study.triage_reasons or []]
        reasons = before + [r for r in reasons if r not in before]
        is_stat = True
    if is_stat:
        study.priority = PRIORITY_STAT
        study.priority_rank = 0
        study.category = category
        study.triage_reasons = [r.to_json() for r in reasons[:MAX_REASONS]]
    else:
        study.priority = PRIORITY_ROUTINE
        study.priority_rank = 1
        study.category = None
        study.triage_reasons = []


def _triage_and_deadline(
    session: Session,
    study: Study,
    arrivals: Sequence[InstanceArrival],
    deadlines: Deadlines,
    *,
    was_stat: bool,
    site_code: str,
    now: datetime,
) -> None:
    """Triage ``study`` again with ``arrivals`` (new or corrected instances), set its read
    deadline from the outcome, and tell the readers when it has just become urgent."""
    _apply_triage(study, arrivals, deadlines)
    allowed = deadlines.for_category(study.category)
    if study.priority == PRIORITY_STAT and study.category is None:
        allowed = min(deadlines.stroke, deadlines.chest_pain)
    deadline = study.received_at + allowed
    if study.deadline_at != deadline:
        study.deadline_at = deadline
    session.flush()
    if study.priority == PRIORITY_STAT and not was_stat:  # first made urgent: tell readers
        publish_study_event(
            session=session, kind=KIND_STUDY_URGENT, study=study, site_code=site_code, now=now
        )


def _lock_study(session: Session, uid: str) -> Study:
    return session.scalars(
        select(Study)
        .where(Study.study_instance_uid == uid)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def _record_study(
    *,
    session: Session,
    site: Site,
    calling_ae: str,
    uid: str,
    arrivals: Sequence[InstanceArrival],
    deadlines: Deadlines,
    now: datetime,
    clocks: ArrivalClocks,
    policy: str,
) -> tuple[int, int, list[HeldConflict], list[Resend]]:
    first = arrivals[0]
    earliest = min(a.received_at for a in arrivals)
    latest = max(a.received_at for a in arrivals)
    session.execute(
        _insert(session, _table(Study))
        .values(
            study_instance_uid=uid,
            site_id=site.id,
            calling_ae=calling_ae[:16],
            patient_name=first.patient_name[:200],
            patient_id=first.patient_id[:64],
            patient_sex=first.patient_sex[:16],
            patient_birth_date=first.patient_birth_date[:8],
            accession_number=first.accession_number[:64],
            study_date=first.study_date[:8],
            study_time=first.study_time[:32],
            study_description=first.study_description[:200],
            modalities="",
            text_fields={},
            priority=PRIORITY_ROUTINE,
            priority_rank=1,
            category=None,
            triage_reasons=[],
            status=STATUS_RECEIVING,
            num_instances=0,
            received_at=earliest,
            last_instance_at=latest,
        )
        .on_conflict_do_nothing(index_elements=["study_instance_uid"])
    )
    study = _lock_study(session, uid)
    if study.site_id != site.id:
        # never merged into the other site's study, never dropped: held for an admin
        held = [
            _hold(
                session=session,
                site=site,
                calling_ae=calling_ae,
                arrival=a,
                kind=CONFLICT_STUDY_OTHER_SITE,
                study=study,
                now=now,
            )
            for a in arrivals
        ]
        return 0, 0, held, []
    split = split_resends(session=session, study=study, arrivals=arrivals)
    resends: list[Resend] = []
    if split.resent:
        resends = apply_resends(
            session=session,
            study=study,
            site_code=site.code,
            calling_ae=calling_ae,
            resent=split.resent,
            policy=policy,
            now=now,
        )
        replaced = {r.sop_instance_uid for r in resends if r.outcome == REPLACED}
        if replaced:
            fields: dict[str, Any] = dict(study.text_fields)
            for a, _ in split.resent:
                if a.sop_instance_uid in replaced:
                    fields = merge_text_fields(fields, arrival_text_fields(a))
            study.text_fields = fields
            # a correction may make the study urgent: its deadline and the readers follow
            _triage_and_deadline(
                session,
                study,
                [a for a, _ in split.resent],
                deadlines,
                was_stat=study.priority == PRIORITY_STAT,
                site_code=site.code,
                now=now,
            )
    arrivals = split.rest
    held = []
    arrivals = _hold_where(
        session=session,
        site=site,
        calling_ae=calling_ae,
        arrivals=arrivals,
        now=now,
        held=held,
        conflict=lambda a: (
            (CONFLICT_PATIENT_MISMATCH, study) if _patient_differs(study, a) else None
        ),
    )
    if not arrivals:
        return 0, split.known_versions, held, resends
    # a SOP Instance UID already filed in another study (this site's or another's): the
    # instance index would count it a duplicate and drop it; held instead
    found = session.execute(
        select(Instance.sop_instance_uid, Instance.study_id).where(
            Instance.sop_instance_uid.in_(sorted({a.sop_instance_uid for a in arrivals})),
            Instance.study_id != study.id,
        )
    )
    elsewhere: dict[str, int] = dict(found.all())
    if elsewhere:
        owners = {
            s.id: s
            for s in session.scalars(select(Study).where(Study.id.in_(set(elsewhere.values()))))
        }
        arrivals = _hold_where(
            session=session,
            site=site,
            calling_ae=calling_ae,
            arrivals=arrivals,
            now=now,
            held=held,
            conflict=lambda a: (
                (CONFLICT_SOP_OTHER_STUDY, owners[elsewhere[a.sop_instance_uid]])
                if a.sop_instance_uid in elsewhere
                else None
            ),
        )
        if not arrivals:
            if study.num_instances == 0:  # created by this call only to find nothing fits
                session.delete(study)
                session.flush()
            return 0, split.known_versions, held, resends

    # series rows
    by_series: dict[str, InstanceArrival] = {}
    for a in arrivals:
        by_series.setdefault(a.series_instance_uid, a)
    for s_uid in sorted(by_series):
        a = by_series[s_uid]
        session.execute(
            _insert(session, _table(Series))
            .values(
                study_id=study.id,
                series_instance_uid=s_uid,
                modality=a.modality[:16],
                series_number=a.series_number,
                series_description=a.series_description[:200],
                body_part_examined=a.body_part_examined[:64],
                num_instances=0,
            )
            .on_conflict_do_nothing(index_elements=["series_instance_uid"])
        )
    series_ids: dict[str, int] = {}
    foreign_series: set[str] = set()
    for s_id, s_uid, s_study in session.execute(
        select(Series.id, Series.series_instance_uid, Series.study_id).where(
            Series.series_instance_uid.in_(list(by_series))
        )
    ):
        if s_study != study.id:
            foreign_series.add(s_uid)
        series_ids[s_uid] = s_id
    if foreign_series:
        arrivals = _hold_where(
            session=session,
            site=site,
            calling_ae=calling_ae,
            arrivals=arrivals,
            now=now,
            held=held,
            conflict=lambda a: (
                (CONFLICT_SERIES_OTHER_STUDY, study)
                if a.series_instance_uid in foreign_series
                else None
            ),
        )
        if not arrivals:
            if study.num_instances == 0:  # created by this call only to find nothing fits
                session.delete(study)
                session.flush()
            return 0, split.known_versions, held, resends
    earliest = min(a.received_at for a in arrivals)  # of the instances filed
    latest = max(a.received_at for a in arrivals)

    # instance rows: the ones RETURNING gives back are new, the rest are duplicates
    unique: dict[str, InstanceArrival] = {}
    for a in arrivals:
        unique.setdefault(a.sop_instance_uid, a)
    rows = [
        {
            "series_id": series_ids[a.series_instance_uid],
            "study_id": study.id,
            "sop_instance_uid": a.sop_instance_uid,
            "sop_class_uid": a.sop_class_uid,
            "transfer_syntax_uid": a.transfer_syntax_uid,
            "instance_number": a.instance_number,
            "object_key": a.object_key,
            "size": a.size,
            "sha256": a.sha256,
            "received_at": a.received_at,
            "dicom_json": a.dicom_json,
            "calling_ae": calling_ae[:16],
        }
        for a in unique.values()
    ]
    inserted = session.execute(
        _insert(session, _table(Instance))
        .values(rows)
        .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
        .returning(_table(Instance).c.series_id)
    ).all()
    accepted = len(inserted)
    duplicates = len(arrivals) - accepted
    if accepted:
        per_series: dict[int, int] = {}
        for (s_id,) in inserted:
            per_series[s_id] = per_series.get(s_id, 0) + 1
        for s_id, n in sorted(per_series.items()):
            session.execute(
                update(Series)
                .where(Series.id == s_id)
                .values(num_instances=Series.num_instances + n)
                .execution_options(synchronize_session=False)
            )
        session.execute(
            update(Study)
            .where(Study.id == study.id)
            .values(
                num_instances=Study.num_instances + accepted,
                received_at=case((Study.received_at > earliest, earliest), else_=Study.received_at),
                last_instance_at=case(
                    (Study.last_instance_at < latest, latest), else_=Study.last_instance_at
                ),
                # new images: no longer quiet
                status=case((Study.status == STATUS_READY, STATUS_RECEIVING), else_=Study.status),
            )
            .execution_options(synchronize_session=False)
        )
        session.refresh(study)
        _note_times(study, arrivals, clocks)
        _merge_header(study, arrivals, calling_ae)
        new_fields: dict[str, Any] = dict(study.text_fields)
        for a in arrivals:
            new_fields = merge_text_fields(new_fields, arrival_text_fields(a))
        study.text_fields = new_fields
    was_stat = study.priority == PRIORITY_STAT
    if accepted and study.num_instances == accepted:  # the study's first instances
        match_arrival(session=session, study=study, now=now, deadlines=deadlines)
    _triage_and_deadline(
        session, study, arrivals, deadlines, was_stat=was_stat, site_code=site.code, now=now
    )
    logger.info(
        "instances recorded",
        extra={
            "action": "instances_recorded",
            "study_uid": uid,
            "accepted": accepted,
            "duplicates": duplicates,
            "priority": study.priority,
            "category": study.category,
            "held": len(held),
        },
    )
    return accepted, duplicates + split.known_versions, held, resends


@dataclass(frozen=True, slots=True)
class ArrivalClocks:
    """The clocks an announcement's times are read with: the county's ``now``, the
    gateway's clock against it (county minus gateway, seconds; None when the gateway did not
    say when it sent) and the UTC offset of a modality's local time when its headers carry
    none (``TimezoneOffsetFromUTC``)."""

    now: datetime
    gateway_offset_seconds: float | None = None
    modality_utc_offset: timedelta = DEFAULT_MODALITY_UTC_OFFSET


def _earlier(current: datetime | None, new: datetime | None) -> datetime | None:
    if new is None:
        return current
    return new if current is None or new < current else current


def _later(current: datetime | None, new: datetime | None) -> datetime | None:
    if new is None:
        return current
    return new if current is None or new > current else current


def _note_times(study: Study, arrivals: Sequence[InstanceArrival], clocks: ArrivalClocks) -> None:
    """The study's timeline columns (``worklist.timeline``) from newly filed images: when
    they were acquired (headers), uploaded (the gateway's word) and arrived here (now).
    Called with the study row locked, so earliest and latest are read and written safely."""
    images = [a for a in arrivals if a.modality.upper() not in NON_IMAGE_MODALITIES]
    if not images:
        return
    acquired = [
        t
        for a in images
        if (t := acquisition_time(a.dicom_json, default_offset=clocks.modality_utc_offset))
        is not None
    ]
    if acquired:
        study.acquired_at = _earlier(study.acquired_at, min(acquired))
        study.acquired_last_at = _later(study.acquired_last_at, max(acquired))
    uploaded = [a.uploaded_at for a in images if a.uploaded_at is not None]
    if uploaded:
        study.uploaded_first_at = _earlier(study.uploaded_first_at, min(uploaded))
        study.uploaded_last_at = _later(study.uploaded_last_at, max(uploaded))
    study.arrived_at = _earlier(study.arrived_at, clocks.now)
    study.arrived_last_at = _later(study.arrived_last_at, clocks.now)
    if clocks.gateway_offset_seconds is not None:
        study.gateway_clock_offset_seconds = round(clocks.gateway_offset_seconds, 3)


def _patient_differs(study: Study, a: InstanceArrival) -> bool:
    """The arrival names another patient than its study (``worklist.triage.patients_differ``)."""
    return patients_differ(study.patient_id, study.patient_name, a.patient_id, a.patient_name)


def arrival_json(a: InstanceArrival) -> dict[str, Any]:
    """The announcement as JSON, to be filed later (``arrival_from_json``)."""
    data = asdict(a)
    data["received_at"] = a.received_at.isoformat()
    data["uploaded_at"] = a.uploaded_at.isoformat() if a.uploaded_at is not None else None
    return data


def arrival_from_json(data: Mapping[str, Any]) -> InstanceArrival:
    fields = dict(data)
    fields["received_at"] = datetime.fromisoformat(str(fields["received_at"]))
    if fields.get("uploaded_at"):
        fields["uploaded_at"] = datetime.fromisoformat(str(fields["uploaded_at"]))
    return InstanceArrival(**fields)


def _hold_where(
    *,
    session: Session,
    site: Site,
    calling_ae: str,
    arrivals: list[InstanceArrival],
    now: datetime,
    held: list[HeldConflict],
    conflict: Callable[[InstanceArrival], tuple[str, Study] | None],
) -> list[InstanceArrival]:
    """Hold each arrival that ``conflict`` names a clash for (its kind and the study it
    clashes with), adding it to ``held``; the others go on, in order."""
    kept = []
    for a in arrivals:
        clash = conflict(a)
        if clash is None:
            kept.append(a)
            continue
        kind, other = clash
        held.append(
            _hold(
                session=session,
                site=site,
                calling_ae=calling_ae,
                arrival=a,
                kind=kind,
                study=other,
                now=now,
            )
        )
    return kept


def _hold(
    *,
    session: Session,
    site: Site,
    calling_ae: str,
    arrival: InstanceArrival,
    kind: str,
    study: Study,
    now: datetime,
) -> HeldConflict:
    """Record the arrival as a conflict (once per stored object) and say so in the log."""
    table = _table(IngestConflict)
    row = session.execute(
        _insert(session, table)
        .values(
            site_id=site.id,
            calling_ae=calling_ae[:16],
            kind=kind,
            study_instance_uid=arrival.study_instance_uid,
            series_instance_uid=arrival.series_instance_uid,
            sop_instance_uid=arrival.sop_instance_uid,
            object_key=arrival.object_key,
            existing_study_uid=study.study_instance_uid,
            existing_site_id=study.site_id,
            patient_id=arrival.patient_id[:64],
            patient_name=arrival.patient_name[:200],
            existing_patient_id=study.patient_id,
            existing_patient_name=study.patient_name,
            arrival=arrival_json(arrival),
            held_at=now,
        )
        .on_conflict_do_nothing(index_elements=["object_key"])
        .returning(table.c.id)
    ).first()
    new = row is not None
    if row is None:
        conflict_id = session.scalars(
            select(IngestConflict.id).where(IngestConflict.object_key == arrival.object_key)
        ).one()
    else:
        conflict_id = int(row[0])
    logger.warning(
        "instance held as an ingest conflict",
        extra={
            "action": "ingest_conflict_held",
            "kind": kind,
            "conflict_id": conflict_id,
            "new": new,
            "site": site.code,
            "study_uid": arrival.study_instance_uid,
            "series_uid": arrival.series_instance_uid,
            "sop_uid": arrival.sop_instance_uid,
        },
    )
    return HeldConflict(
        conflict_id=conflict_id,
        kind=kind,
        study_instance_uid=arrival.study_instance_uid,
        sop_instance_uid=arrival.sop_instance_uid,
        new=new,
    )


_HEADER = (
    "patient_name",
    "patient_id",
    "patient_sex",
    "patient_birth_date",
    "accession_number",
    "study_date",
    "study_time",
    "study_description",
)
_HEADER_MAX = {"patient_birth_date": 8, "study_date": 8, "patient_sex": 16, "study_time": 32}


def _merge_header(study: Study, arrivals: Sequence[InstanceArrival], calling_ae: str) -> None:
    for name in _HEADER:
        if getattr(study, name):
            continue
        for a in arrivals:
            value = getattr(a, name)
            if value:
                setattr(study, name, value[: _HEADER_MAX.get(name, 64 if "id" in name else 200)])
                break
    if not study.calling_ae and calling_ae:
        study.calling_ae = calling_ae[:16]
    mods = [m for m in study.modalities.split("\\") if m]
    for a in arrivals:
        if a.modality and a.modality not in mods:
            mods.append(a.modality)
    joined = "\\".join(mods)
    if len(joined) <= 64 and joined != study.modalities:
        study.modalities = joined


def record_instances(
    *,
    session: Session,
    site_code: str,
    calling_ae: str,
    instances: Sequence[InstanceArrival],
    now: datetime,
    deadlines: Deadlines = DEFAULT_DEADLINES,
    gateway_offset_seconds: float | None = None,
    modality_utc_offset: timedelta = DEFAULT_MODALITY_UTC_OFFSET,
    overwrite_policy: str = OVERWRITE_SAME_SOURCE,
) -> IngestOutcome:
    """Record announced instances; idempotent by SOP Instance UID and object.

    Other bytes under a SOP Instance UID filed in the same study (a corrected re-send, under
    its own object key) replace the served version or are kept beside it, by
    ``overwrite_policy`` (``worklist.resends``).

    ``gateway_offset_seconds``: the sending gateway's clock against the county's (county
    minus gateway), kept on the study for its timeline; ``modality_utc_offset``: the UTC
    offset of a header's local acquisition time that carries none.

    An instance that cannot be filed where it says (its study UID belongs to another site,
    its series to another study, its patient differs from its study's, or its SOP Instance
    UID is filed in another study) is held as a conflict (``IngestOutcome.conflicts``),
    never merged and never dropped. Raises ``UnknownSite`` (the caller rolls back).
    """
    site = session.scalars(select(Site).where(Site.code == site_code)).one_or_none()
    if site is None:
        raise UnknownSite(f"no site {site_code!r}")
    outcome = IngestOutcome()
    clocks = ArrivalClocks(
        now=now,
        gateway_offset_seconds=gateway_offset_seconds,
        modality_utc_offset=modality_utc_offset,
    )
    by_study: dict[str, list[InstanceArrival]] = {}
    for a in instances:
        if a.study_instance_uid not in by_study:
            outcome.study_uids.append(a.study_instance_uid)
        by_study.setdefault(a.study_instance_uid, []).append(a)
    for uid in sorted(by_study):
        batch = by_study[uid]
        while batch:
            # one arrival per SOP Instance UID at a time: a re-send announced with its first
            # version is filed after it (``worklist.resends``)
            first: dict[str, InstanceArrival] = {}
            later: list[InstanceArrival] = []
            for a in batch:
                if a.sop_instance_uid in first:
                    later.append(a)
                else:
                    first[a.sop_instance_uid] = a
            accepted, duplicates, held, resends = _record_study(
                session=session,
                site=site,
                calling_ae=calling_ae,
                uid=uid,
                arrivals=list(first.values()),
                deadlines=deadlines,
                now=now,
                clocks=clocks,
                policy=overwrite_policy,
            )
            outcome.accepted += accepted
            outcome.duplicates += duplicates
            outcome.conflicts.extend(held)
            outcome.resends.extend(resends)
            batch = later
    return outcome


__all__ = [
    "NON_IMAGE_MODALITIES",
    "ArrivalClocks",
    "HeldConflict",
    "IngestOutcome",
    "InstanceArrival",
    "arrival_from_json",
    "arrival_json",
    "arrival_text_fields",
    "merge_text_fields",
    "record_instances",
]
