"""Request and response bodies. Separate from the ORM models on purpose: a column added to a
model never leaks into a response, and a response never exposes more than listed here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from storage.keys import is_valid_uid
from worklist.models import (
    AuditEvent,
    CriticalResult,
    Instance,
    Report,
    ReportAddendum,
    Series,
    Study,
)

MAX_TEXT = 20_000
MAX_INSTANCES_PER_CALL = 1000
MAX_REASON = 2000
# the database's integers: PostgreSQL INTEGER is 32-bit, BIGINT 64-bit (SQLite refuses more)
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1
# paging: an offset past this many rows is no page anyone reads
MAX_OFFSET = MAX_INT32


def _uid(value: str) -> str:
    if not is_valid_uid(value):
        raise ValueError("not a DICOM UID")
    return value


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (PostgreSQL refuses NUL, every driver refuses
    lone surrogates), or None."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no unpaired surrogates)"
    return None


def check_storable(value: Any) -> None:
    """Raise ``ValueError`` for text (strings, and the keys and values of nested lists and
    objects) that no database can store, or a number JSON cannot carry. Iterative: a body
    nested thousands deep does not overflow the stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                raise ValueError(f"text {problem}")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError("numbers must be finite")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


class Input(BaseModel):
    """Base of every request body: all text must be storable (no NUL, valid Unicode)."""

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        check_storable(value)
        return value


Int32 = Annotated[int, Field(ge=-MAX_INT32 - 1, le=MAX_INT32)]
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def check_instant(value: datetime) -> datetime:
    """An aware time between 1900 and 2200 (UTC): a time near year 1 or 9999 with an offset
    does not even convert to UTC (``OverflowError``), and none of those is a real one."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range") from None
    if not EARLIEST <= utc < LATEST:
        raise ValueError("time must be between 1900 and 2200")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(check_instant)]


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
class ReportDraftIn(Input):
    model_config = ConfigDict(extra="forbid")

    findings: str = Field(default="", max_length=MAX_TEXT)
    impression: str = Field(default="", max_length=MAX_TEXT)
    recommendation: str = Field(default="", max_length=MAX_TEXT)


class SignIn(Input):
    model_config = ConfigDict(extra="forbid")

    status: Literal["preliminary", "final"]
    # a stroke / chest-pain report signed final without a recorded critical result needs one
    no_critical_result_reason: str | None = Field(default=None, max_length=MAX_REASON)


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
    # later corrections (the signed content above never changes) and critical results
    addenda: list[AddendumOut] = Field(default_factory=list)
    critical_results: list[CriticalResultOut] = Field(default_factory=list)
    critical_result_expected: bool = False
    no_critical_result_reason: str | None = None

    @classmethod
    def from_report(
        cls,
        report: Report,
        *,
        addenda: Sequence[ReportAddendum] = (),
        critical_results: Sequence[CriticalResult] = (),
        critical_result_expected: bool = False,
    ) -> ReportOut:
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
            addenda=[AddendumOut.from_addendum(a) for a in addenda],
            critical_results=[CriticalResultOut.from_result(c) for c in critical_results],
            critical_result_expected=critical_result_expected,
            no_critical_result_reason=report.no_critical_result_reason,
        )


# --- gateway ------------------------------------------------------------------------------
class GatewaySite(BaseModel):
    code: str
    name: str
    ae_titles: list[str]


class GatewayConfig(BaseModel):
    sites: list[GatewaySite]


class UrgentHint(Input):
    category: Literal["stroke", "chest_pain"] | None = None
    priority: Literal["stat", "routine"] | None = None
    reasons: list[str] = Field(default_factory=list)


class InstanceIn(Input):
    """One arrived instance, as the gateway announces it (docs/contracts.md)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str = ""
    object_key: str = Field(min_length=1, max_length=255)
    size: int = Field(ge=0, le=MAX_INT64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    received_at: Instant
    modality: str = Field(default="", max_length=16)
    patient_name: str = Field(default="", max_length=200)
    patient_id: str = Field(default="", max_length=64)
    patient_sex: str = Field(default="", max_length=16)
    patient_birth_date: str = Field(default="", max_length=8)
    accession_number: str = Field(default="", max_length=64)
    study_date: str = Field(default="", max_length=8)
    study_time: str = Field(default="", max_length=32)
    study_description: str = Field(default="", max_length=200)
    series_number: Int32 | None = None
    series_description: str = Field(default="", max_length=200)
    body_part_examined: str = Field(default="", max_length=64)
    instance_number: Int32 | None = None
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


class IngestIn(Input):
    site: str = Field(min_length=1, max_length=32)
    calling_ae: str = Field(default="", max_length=16)
    called_ae: str = Field(default="", max_length=16)
    instances: list[InstanceIn] = Field(min_length=1, max_length=MAX_INSTANCES_PER_CALL)


class IngestOut(BaseModel):
    accepted: int
    duplicates: int


class Health(BaseModel):
    status: Literal["ok"] = "ok"


# --- report addenda, critical results, templates, audit (issue 5) -------------------------
class AddendumIn(Input):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_TEXT)
    reason: str = Field(min_length=1, max_length=MAX_REASON)


class AddendumOut(BaseModel):
    author: str
    created_at: datetime
    text: str
    reason: str
    content_sha256: str

    @classmethod
    def from_addendum(cls, addendum: ReportAddendum) -> AddendumOut:
        return cls(
            author=addendum.author.username,
            created_at=addendum.created_at,
            text=addendum.text,
            reason=addendum.reason,
            content_sha256=addendum.content_sha256,
        )


class CriticalResultIn(Input):
    model_config = ConfigDict(extra="forbid")

    finding: str = Field(min_length=1, max_length=MAX_TEXT)
    identified_at: Instant
    communicated_to_name: str = Field(min_length=1, max_length=200)
    communicated_to_role: str = Field(default="", max_length=100)
    communicated_to_phone: str = Field(default="", max_length=64)
    communicated_at: Instant
    method: Literal["phone", "in_person", "message", "other"]
    read_back_confirmed: bool


class CriticalResultOut(BaseModel):
    finding: str
    identified_at: datetime
    communicated_to_name: str
    communicated_to_role: str
    communicated_to_phone: str
    communicated_at: datetime
    method: str
    read_back_confirmed: bool
    recorded_by: str
    recorded_at: datetime

    @classmethod
    def from_result(cls, result: CriticalResult) -> CriticalResultOut:
        return cls(
            finding=result.finding,
            identified_at=result.identified_at,
            communicated_to_name=result.communicated_to_name,
            communicated_to_role=result.communicated_to_role,
            communicated_to_phone=result.communicated_to_phone,
            communicated_at=result.communicated_at,
            method=result.method,
            read_back_confirmed=result.read_back_confirmed,
            recorded_by=result.recorded_by.username,
            recorded_at=result.recorded_at,
        )


class ReportTemplateOut(BaseModel):
    key: str
    name: str
    categories: list[str]
    modalities: list[str]
    keywords: list[str]
    findings: str
    impression: str
    recommendation: str


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    username: str
    role: str
    site: str
    action: str
    object_type: str
    object_id: str
    client_addr: str
    outcome: str
    detail: dict[str, Any]

    @classmethod
    def from_event(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            id=event.id,
            at=event.at,
            username=event.username,
            role=event.role,
            site=event.site_code,
            action=event.action,
            object_type=event.object_type,
            object_id=event.object_id,
            client_addr=event.client_addr,
            outcome=event.outcome,
            detail=dict(event.detail or {}),
        )


ReportOut.model_rebuild()


# --- workflow (issue 5): leases, assign/cancel, flags, events ------------------------------
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
