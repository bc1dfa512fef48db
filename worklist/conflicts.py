"""Announced instances held back instead of filed, and an admin's decision on each.

``worklist.ingest`` holds an instance as a conflict when its study UID belongs to another
site (a township reusing a UID must not hide another site's study), its series UID to
another study, or its Patient ID or name differs from its study's. The instance is never
merged into that study and never dropped: its object stays in storage, the conflict row
keeps the announcement, and an admin either files it as a study of its own
(``separate_study``: new study and series UIDs, derived from the conflict so every instance
of the same clash lands in the same new study) or discards it (``discard``: the object stays
in storage, the instance is not listed). The study it clashed with is never touched.
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
    normalise_person_name,
    record_instances,
)
from worklist.models import (
    PRIORITY_ROUTINE,
    PRIORITY_STAT,
    RESOLUTION_DISCARD,
    RESOLUTION_SEPARATE_STUDY,
    RESOLUTIONS,
    IngestConflict,
    User,
)
from worklist.settings import DEFAULT_DEADLINES, Deadlines
from worklist.triage import classify

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


def resolve_conflict(
    *,
    session: Session,
    conflict_id: int,
    resolution: str,
    by: User,
    now: datetime,
    deadlines: Deadlines = DEFAULT_DEADLINES,
) -> IngestConflict:
    """Decide one conflict once: ``separate_study`` files the instance under a study UID of
    its own at its sending site; ``discard`` leaves it unfiled. Raises ``ConflictNotFound``,
    ``ConflictAlreadyResolved``, ``ConflictNotFileable`` (it would clash again, or its SOP
    Instance UID is already filed)."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown resolution {resolution!r}")
    conflict = get_conflict(session=session, conflict_id=conflict_id)
    if conflict.resolved_at is not None:
        raise ConflictAlreadyResolved(f"ingest conflict {conflict_id} is already resolved")
    if resolution == RESOLUTION_SEPARATE_STUDY:
        conflict.resolved_study_uid = _file_separately(
            session=session, conflict=conflict, now=now, deadlines=deadlines
        )
    conflict.resolution = resolution
    conflict.resolved_by_id = by.id
    conflict.resolved_at = now
    session.flush()
    logger.info(
        "ingest conflict resolved",
        extra={
            "action": "ingest_conflict_resolved",
            "conflict_id": conflict.id,
            "resolution": resolution,
            "study_uid": conflict.study_instance_uid,
            "sop_uid": conflict.sop_instance_uid,
            "resolved_study_uid": conflict.resolved_study_uid,
        },
    )
    return conflict


def _file_separately(
    *, session: Session, conflict: IngestConflict, now: datetime, deadlines: Deadlines
) -> str:
    """File the held instance under new study and series UIDs; return the study's."""
    arrival = arrival_from_json(conflict.arrival)
    # the same clash (site, study, patient) always gives the same new study
    key = (
        conflict.kind,
        conflict.site.code,
        arrival.patient_id,
        normalise_person_name(arrival.patient_name),
    )
    study_uid = derived_uid("study", *key, arrival.study_instance_uid)
    series_uid = derived_uid("series", *key, arrival.series_instance_uid)
    arrival.study_instance_uid = study_uid
    arrival.series_instance_uid = series_uid
    if arrival.dicom_json is not None:  # the index's header agrees with where it is filed
        header = dict(arrival.dicom_json)
        for tag, value in (("0020000D", study_uid), ("0020000E", series_uid)):
            if isinstance(header.get(tag), dict):
                header[tag] = {**header[tag], "Value": [value]}
        arrival.dicom_json = header
    outcome = record_instances(
        session=session,
        site_code=conflict.site.code,
        calling_ae=conflict.calling_ae,
        instances=[arrival],
        now=now,
        deadlines=deadlines,
    )
    if outcome.conflicts or outcome.accepted != 1:
        raise ConflictNotFileable(
            f"ingest conflict {conflict.id}: instance {conflict.sop_instance_uid} cannot be "
            "filed as a separate study (it clashes again, or is already filed)"
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
