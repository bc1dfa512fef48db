"""Ingest conflicts: announced instances the county held instead of filing them (a study
UID of another site, a series of another study, a patient differing from the study's).
Admins list them and decide each: file it as a separate study, or discard it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from viewer_api.deps import AdminUser, Audit, NowDep, SessionDep, WorklistSettingsDep
from viewer_api.validation import Input
from worklist import conflicts
from worklist.audit import AuditAction
from worklist.models import IngestConflict

router = APIRouter(prefix="/api/v1/ingest-conflicts", tags=["ingest conflicts"])


class ConflictOut(BaseModel):
    id: int
    site: str
    calling_ae: str
    kind: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    object_key: str
    # the held instance's own triage: a held stroke study is on no worklist until decided
    priority: str
    category: str | None
    # the study it clashed with, that study's site, and both sides' patient values
    existing_study_uid: str
    existing_site: str | None
    patient_id: str
    patient_name: str
    existing_patient_id: str
    existing_patient_name: str
    held_at: datetime
    resolution: str | None
    resolved_by: str | None
    resolved_at: datetime | None
    resolved_study_uid: str | None

    @classmethod
    def of(cls, c: IngestConflict) -> ConflictOut:
        priority, category = conflicts.conflict_triage(c)
        return cls(
            priority=priority,
            category=category,
            id=c.id,
            site=c.site.code,
            calling_ae=c.calling_ae,
            kind=c.kind,
            study_instance_uid=c.study_instance_uid,
            series_instance_uid=c.series_instance_uid,
            sop_instance_uid=c.sop_instance_uid,
            object_key=c.object_key,
            existing_study_uid=c.existing_study_uid,
            existing_site=c.existing_site.code if c.existing_site is not None else None,
            patient_id=c.patient_id,
            patient_name=c.patient_name,
            existing_patient_id=c.existing_patient_id,
            existing_patient_name=c.existing_patient_name,
            held_at=c.held_at,
            resolution=c.resolution,
            resolved_by=c.resolved_by.username if c.resolved_by is not None else None,
            resolved_at=c.resolved_at,
            resolved_study_uid=c.resolved_study_uid,
        )


class ResolveIn(Input):
    """``separate_study``: file the instances of the clash under a study UID of their own at
    their sending site; ``discard``: leave them unfiled (their objects stay in storage)."""

    resolution: Literal["separate_study", "discard"]


ConflictId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("", response_model=list[ConflictOut])
def list_ingest_conflicts(
    session: SessionDep,
    admin: AdminUser,
    audit: Audit,
    state: Annotated[Literal["open", "resolved", "all"], Query()] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[ConflictOut]:
    """Newest first; ``open`` (the default) lists the undecided ones."""
    rows = conflicts.list_conflicts(session=session, state=state, limit=limit)
    audit(AuditAction.INGEST_CONFLICTS_VIEWED, detail={"state": state, "count": len(rows)})
    return [ConflictOut.of(c) for c in rows]


@router.post("/{conflict_id}/resolve", response_model=list[ConflictOut])
def resolve_ingest_conflict(
    conflict_id: ConflictId,
    body: ResolveIn,
    session: SessionDep,
    admin: AdminUser,
    audit: Audit,
    now: NowDep,
    wl_settings: WorklistSettingsDep,
) -> list[ConflictOut]:
    """Decide an open conflict and every open one of the same clash (kind, sending site,
    study UID, patient); the decided ones, this one first. 409 ``conflict_resolved`` once
    decided."""
    with audit.refusals(AuditAction.INGEST_CONFLICT_RESOLVED, object_id=str(conflict_id)):
        group = conflicts.resolve_conflict(
            session=session,
            conflict_id=conflict_id,
            resolution=body.resolution,
            by=admin,
            now=now,
            deadlines=wl_settings.deadlines,
        )
    head = group[0]
    audit(
        AuditAction.INGEST_CONFLICT_RESOLVED,
        object_id=head.study_instance_uid,
        detail={
            "conflict_id": head.id,
            "kind": head.kind,
            "resolution": head.resolution,
            "resolved_study_uid": head.resolved_study_uid,
            "count": len(group),
            "sop_instance_uids": [c.sop_instance_uid for c in group][:200],
        },
    )
    return [ConflictOut.of(c) for c in group]
