"""Request and response bodies. Separate from the ORM models on purpose: a column added to a
model never leaks into a response, and a response never exposes more than listed here."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from storage.keys import is_valid_uid
from worklist.models import Instance, Report, Series, Study

MAX_TEXT = 20_000
MAX_INSTANCES_PER_CALL = 1000


def _uid(value: str) -> str:
    if not is_valid_uid(value):
        raise ValueError("not a DICOM UID")
    return value


# --- auth ---------------------------------------------------------------------------------
class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    role: str
    site: str | None


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


# --- reports ------------------------------------------------------------------------------
class ReportDraftIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    findings: str = Field(default="", max_length=MAX_TEXT)
    impression: str = Field(default="", max_length=MAX_TEXT)
    recommendation: str = Field(default="", max_length=MAX_TEXT)


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["preliminary", "final"]


class ReportOut(BaseModel):
    study_instance_uid: str
    site: str
    status: str
    findings: str
    impression: str
    recommendation: str
    author: str
    signed_by: str | None
    signed_at: datetime | None
    content_sha256: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_report(cls, report: Report) -> ReportOut:
        return cls(
            study_instance_uid=report.study.study_instance_uid,
            site=report.study.site.code,
            status=report.status,
            findings=report.findings,
            impression=report.impression,
            recommendation=report.recommendation,
            author=report.author.username,
            signed_by=report.signed_by.username if report.signed_by is not None else None,
            signed_at=report.signed_at,
            content_sha256=report.content_sha256,
            created_at=report.created_at,
            updated_at=report.updated_at,
        )


# --- gateway ------------------------------------------------------------------------------
class GatewaySite(BaseModel):
    code: str
    name: str
    ae_titles: list[str]


class GatewayConfig(BaseModel):
    sites: list[GatewaySite]


class UrgentHint(BaseModel):
    category: Literal["stroke", "chest_pain"] | None = None
    priority: Literal["stat", "routine"] | None = None
    reasons: list[str] = Field(default_factory=list)


class InstanceIn(BaseModel):
    """One arrived instance, as the gateway announces it (docs/contracts.md)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str = ""
    object_key: str = Field(min_length=1, max_length=255)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    received_at: AwareDatetime
    modality: str = Field(default="", max_length=16)
    patient_name: str = Field(default="", max_length=200)
    patient_id: str = Field(default="", max_length=64)
    patient_sex: str = Field(default="", max_length=16)
    patient_birth_date: str = Field(default="", max_length=8)
    accession_number: str = Field(default="", max_length=64)
    study_date: str = Field(default="", max_length=8)
    study_time: str = Field(default="", max_length=32)
    study_description: str = Field(default="", max_length=200)
    series_number: int | None = None
    series_description: str = Field(default="", max_length=200)
    body_part_examined: str = Field(default="", max_length=64)
    instance_number: int | None = None
    text_fields: dict[str, str] | None = None
    charset_notes: list[str] | None = None
    urgent_hint: UrgentHint | None = None
    dicom_json: dict[str, Any] | None = None

    @field_validator(
        "study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid"
    )
    @classmethod
    def _check_uids(cls, value: str) -> str:
        return _uid(value)

    @field_validator("transfer_syntax_uid")
    @classmethod
    def _check_ts(cls, value: str) -> str:
        return _uid(value) if value else value


class IngestIn(BaseModel):
    site: str = Field(min_length=1, max_length=32)
    calling_ae: str = Field(default="", max_length=16)
    called_ae: str = Field(default="", max_length=16)
    instances: list[InstanceIn] = Field(min_length=1, max_length=MAX_INSTANCES_PER_CALL)


class IngestOut(BaseModel):
    accepted: int
    duplicates: int


class Health(BaseModel):
    status: Literal["ok"] = "ok"
