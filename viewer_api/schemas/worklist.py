"""Worklist, study and workflow bodies: rows, study detail, assign / cancel / flag, events."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from viewer_api.validation import MAX_REASON, Input
from worklist.models import Instance, Report, Series, Study


# --- worklist and studies -----------------------------------------------------------------
class Triage(BaseModel):
    priority: str
    category: str | None
    reasons: list[str]
    overridden: bool


class WorklistItem(BaseModel):
    study_instance_uid: str
    site: str
    modality: str
    priority: str
    category: str | None
    triage_reasons: list[str]
    status: str
    num_instances: int
    received_at: datetime
    claimed_by: str | None
    claim_expires_at: datetime | None
    study_description: str
    patient_name: str
    deadline_at: datetime | None

    @classmethod
    def from_study(cls, study: Study) -> WorklistItem:
        return cls(
            study_instance_uid=study.study_instance_uid,
            site=study.site.code,
            modality=study.modalities,
            priority=study.priority,
            category=study.category,
            triage_reasons=list(study.triage_reasons or []),
            status=study.status,
            num_instances=study.num_instances,
            received_at=study.received_at,
            claimed_by=study.claimed_by.username if study.claimed_by is not None else None,
            claim_expires_at=study.claim_expires_at if study.claimed_by_id else None,
            study_description=study.study_description,
            patient_name=study.patient_name,
            deadline_at=study.deadline_at,
        )


class SeriesOut(BaseModel):
    series_instance_uid: str
    series_number: int | None
    modality: str
    series_description: str
    body_part_examined: str
    num_instances: int
    sop_instance_uids: list[str]

    @classmethod
    def from_series(cls, series: Series) -> SeriesOut:
        instances: list[Instance] = series.instances
        return cls(
            series_instance_uid=series.series_instance_uid,
            series_number=series.series_number,
            modality=series.modality,
            series_description=series.series_description,
            body_part_examined=series.body_part_examined,
            num_instances=series.num_instances,
            sop_instance_uids=[i.sop_instance_uid for i in instances],
        )


class StudyDetail(WorklistItem):
    patient_id: str
    patient_sex: str
    patient_birth_date: str
    accession_number: str
    study_date: str
    study_time: str
    calling_ae: str
    triage: Triage
    series: list[SeriesOut]
    report_status: str | None

    @classmethod
    def from_study(cls, study: Study) -> StudyDetail:
        item = WorklistItem.from_study(study)
        report: Report | None = study.report
        return cls(
            **item.model_dump(),
            patient_id=study.patient_id,
            patient_sex=study.patient_sex,
            patient_birth_date=study.patient_birth_date,
            accession_number=study.accession_number,
            study_date=study.study_date,
            study_time=study.study_time,
            calling_ae=study.calling_ae,
            triage=Triage(
                priority=study.priority,
                category=study.category,
                reasons=list(study.triage_reasons or []),
                overridden=study.triage_override_by_id is not None,
            ),
            series=[SeriesOut.from_series(s) for s in study.series],
            report_status=report.status if report is not None else None,
        )


# --- workflow: leases, assign/cancel, flags, events -----------------------------
class WorkflowItem(WorklistItem):
    """A worklist row with its clock: time left to the read deadline, escalation, cancel."""

    time_left_seconds: int | None
    overdue: bool
    escalation_level: int
    cancel_reason: str | None
    cancelled_at: datetime | None

    @classmethod
    def from_study_at(cls, study: Study, now: datetime) -> WorkflowItem:
        base = WorklistItem.from_study(study).model_dump()
        left = (
            int((study.deadline_at - now).total_seconds())
            if study.deadline_at is not None
            else None
        )
        return cls(
            **base,
            time_left_seconds=left,
            overdue=left is not None and left < 0,
            escalation_level=study.escalation_level or 0,
            cancel_reason=study.cancel_reason,
            cancelled_at=study.cancelled_at,
        )


class AssignIn(Input):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)


class ReasonIn(Input):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=MAX_REASON)

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a reason is required")
        return value.strip()


class FlagIn(ReasonIn):
    category: Literal["stroke", "chest_pain"]


class EventOut(BaseModel):
    id: int
    kind: str
    study_uid: str | None
    site_code: str | None
    created_at: datetime
    payload: dict[str, Any]
