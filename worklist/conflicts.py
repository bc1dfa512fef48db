"""Announced instances held back instead of filed, and an admin's decision on each.

``worklist.ingest`` holds an instance as a conflict when its study UID belongs to another
site (a township reusing a UID must not hide another site's study), its series UID to
another study, its Patient ID or name differs from its study's, or its SOP Instance UID is
already filed in another study. The instance is never
merged into that study and never dropped: its object stays in storage, the conflict row
keeps the announcement, and an admin decides each clash (its held instances of one kind,
sending site, study UID and patient) once: files them as a study of their own
(``separate_study``: new study and series UIDs, derived from the clash) or discards them
(``discard``: the objects stay in storage, unlisted). The study they clashed with is never
touched.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from worklist.errors import ConflictAlreadyResolved, ConflictNotFileable, ConflictNotFound
from worklist.ingest import (
    arrival_from_json,
    arrival_text_fields,
    record_instances,
)
from worklist.models import (
    CONFLICT_SOP_OTHER_STUDY,
    PRIORITY_ROUTINE,
    PRIORITY_STAT,
    RESOLUTION_DISCARD,
    RESOLUTION_SEPARATE_STUDY,
    RESOLUTIONS,
    IngestConflict,
    User,
)
from worklist.settings import DEFAULT_DEADLINES, Deadlines
from worklist.triage import classify, normalise_person_name

logger = logging.getLogger(__name__)

# the namespace of the UIDs a re-filed conflict gets ("2.25." + a UUID as an integer, PS3.5 B.2)
_UID_NAMESPACE = uuid.UUID("6f1d3c5e-2b0a-4c8e-9a51-7d3e0b4f8a21")

OPEN, RESOLVED, ALL = "open", "resolved", "all"


def derived_uid(*parts: str) -> str:
    """A UID of the 2.25 root, the same for the same parts."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, '|'.join(parts)).int}"


def list_conflicts(
    *, session: Session, state: str = OPEN, limit: int = 200
) -> Sequence[IngestConflict]:
    """Newest first; ``state`` is ``open``, ``resolved`` or ``all``."""
    query = select(IngestConflict)
    if state == OPEN:
        query = query.where(IngestConflict.resolved_at.is_(None))
    elif state == RESOLVED:
        query = query.where(IngestConflict.resolved_at.is_not(None))
    query = query.order_by(IngestConflict.held_at.desc(), IngestConflict.id.desc()).limit(limit)
    return session.scalars(query).all()


def conflict_triage(conflict: IngestConflict) -> tuple[str, str | None]:
    """(priority, category) of the held instance's own text and the gateway's urgent flag:
    a held stroke study is on no worklist, so the admin must see that it is urgent."""
    arrival = arrival_from_json(conflict.arrival)
    hint = arrival.urgent_hint or {}
    result = classify(arrival_text_fields(arrival), modality=arrival.modality or None)
    if hint.get("priority") == PRIORITY_STAT:
        category = hint.get("category")
        return PRIORITY_STAT, str(category) if category else result.category
    if result.priority == PRIORITY_STAT:
        return PRIORITY_STAT, result.category
    return PRIORITY_ROUTINE, None


def get_conflict(*, session: Session, conflict_id: int) -> IngestConflict:
    conflict = session.scalars(
        select(IngestConflict)
        .where(IngestConflict.id == conflict_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if conflict is None:
        raise ConflictNotFound(f"no ingest conflict {conflict_id}")
    return conflict


def _clash(conflict: IngestConflict) -> tuple[str, ...]:
    """What makes held instances one clash: kind, sending site, study UID, patient."""
    return (
        conflict.kind,
        conflict.site.code,
        conflict.study_instance_uid,
        conflict.patient_id,
        normalise_person_name(conflict.patient_name),
    )


def resolve_conflict(
    *,
    session: Session,
    conflict_id: int,
    resolution: str,
    by: User,
    now: datetime,
    deadlines: Deadlines = DEFAULT_DEADLINES,
) -> list[IngestConflict]:
    """Decide a conflict once, and with it every open conflict of the same clash (same kind,
    sending site, study UID and patient: a 300-slice CT is one decision). The decided
    conflicts, ``conflict_id``'s first. ``separate_study`` files the instances under one
    study UID of their own at their sending site; ``discard`` leaves them unfiled. Raises
    ``ConflictNotFound``, ``ConflictAlreadyResolved``, ``ConflictNotFileable`` (it would clash
    again, or a SOP Instance UID is already filed)."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown resolution {resolution!r}")
    conflict = get_conflict(session=session, conflict_id=conflict_id)
    if conflict.resolved_at is not None:
        raise ConflictAlreadyResolved(f"ingest conflict {conflict_id} is already resolved")
    clash = _clash(conflict)
    others = session.scalars(
        select(IngestConflict)
        .where(
            IngestConflict.kind == conflict.kind,
            IngestConflict.site_id == conflict.site_id,
            IngestConflict.study_instance_uid == conflict.study_instance_uid,
            IngestConflict.resolved_at.is_(None),
            IngestConflict.id != conflict.id,
        )
        .order_by(IngestConflict.id)
        .with_for_update()
    ).all()
    group = [conflict, *(c for c in others if _clash(c) == clash)]
    if resolution == RESOLUTION_SEPARATE_STUDY:
        study_uid = _file_separately(session=session, group=group, now=now, deadlines=deadlines)
        for c in group:
            c.resolved_study_uid = study_uid
    for c in group:
        c.resolution = resolution
        c.resolved_by_id = by.id
        c.resolved_at = now
    session.flush()
    logger.info(
        "ingest conflict resolved",
        extra={
            "action": "ingest_conflict_resolved",
            "conflict_id": conflict.id,
            "conflicts": len(group),
            "resolution": resolution,
            "study_uid": conflict.study_instance_uid,
            "resolved_study_uid": conflict.resolved_study_uid,
        },
    )
    return group


def _file_separately(
    *, session: Session, group: list[IngestConflict], now: datetime, deadlines: Deadlines
) -> str:
    """File the held instances of one clash under new study and series UIDs (derived from
    the clash, so the same clash always gives the same study); return the study's."""
    head = group[0]
    key = _clash(head)
    study_uid = derived_uid("study", *key)
    arrivals = []
    for c in group:
        arrival = arrival_from_json(c.arrival)
        series_uid = derived_uid("series", *key, arrival.series_instance_uid)
        arrival.study_instance_uid = study_uid
        arrival.series_instance_uid = series_uid
        uids = [("0020000D", study_uid), ("0020000E", series_uid)]
        if head.kind == CONFLICT_SOP_OTHER_STUDY:  # its own UID is taken: one of its own too
            arrival.sop_instance_uid = derived_uid("sop", *key, arrival.sop_instance_uid)
            uids.append(("00080018", arrival.sop_instance_uid))
        if arrival.dicom_json is not None:  # the index's header agrees with where it is filed
            header = dict(arrival.dicom_json)
            for tag, value in uids:
                if isinstance(header.get(tag), dict):
                    header[tag] = {**header[tag], "Value": [value]}
            arrival.dicom_json = header
        arrivals.append(arrival)
    outcome = record_instances(
        session=session,
        site_code=head.site.code,
        calling_ae=head.calling_ae,
        instances=arrivals,
        now=now,
        deadlines=deadlines,
    )
    if outcome.conflicts or outcome.accepted != len(group):
        raise ConflictNotFileable(
            f"ingest conflict {head.id}: {len(group) - outcome.accepted} of its "
            f"{len(group)} instances cannot be filed as a separate study (they clash again, "
            "or are already filed)"
        )
    return study_uid


__all__ = [
    "ALL",
    "OPEN",
    "RESOLUTION_DISCARD",
    "RESOLUTION_SEPARATE_STUDY",
    "RESOLVED",
    "conflict_triage",
    "derived_uid",
    "get_conflict",
    "list_conflicts",
    "resolve_conflict",
]
