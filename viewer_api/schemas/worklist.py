"""Worklist, study and workflow bodies: rows, study detail, assign / cancel / flag, events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from viewer_api.outputs.content import readable_name
from viewer_api.validation import MAX_REASON, Input
from worklist.models import STATUS_PRELIMINARY, InstanceVersion, Report, Series, Study
from worklist.repository import WorklistRow
from worklist.triage import Reason


# --- worklist and studies -----------------------------------------------------------------
class TriageReason(BaseModel):
    """One triage reason as data (``worklist.triage.Reason``): the pages word it in the
    reader's language from ``code`` and its parts; ``text`` is its English wording."""

    code: str
    category: str | None = None
    family: str | None = None
    term: str | None = None
    found: str | None = None
    field: str | None = None
    onset: str | None = None
    by: str | None = None
    note: str | None = None
    text: str

    @classmethod
    def listed(cls, stored: list[Any] | None) -> list[TriageReason]:
        reasons = [Reason.from_json(r) for r in stored or []]
        return [cls(**r.to_json(), text=str(r)) for r in reasons]


class Triage(BaseModel):
    priority: str
    category: str | None
    reasons: list[TriageReason]
    overridden: bool


def dicom_age(birth_date: str, on: str) -> str:
    """The patient's age on a day, as DICOM writes it (AS: ``"066Y"``, ``"011M"``,
    ``"020D"``), from two DA dates; ``""`` when either is missing or malformed."""
    try:
        born = date(int(birth_date[:4]), int(birth_date[4:6]), int(birth_date[6:8]))
        day = date(int(on[:4]), int(on[4:6]), int(on[6:8]))
    except (ValueError, IndexError):
        return ""
    if len(birth_date) != 8 or len(on) != 8 or day < born:
        return ""
    months = (day.year - born.year) * 12 + day.month - born.month - (day.day < born.day)
    if months >= 24:
        return f"{months // 12:03d}Y"
    if months >= 1:
        return f"{months:03d}M"
    return f"{(day - born).days:03d}D"


class WorklistItem(BaseModel):
    study_instance_uid: str
    site: str
    modality: str
    priority: str
    category: str | None
    triage_reasons: list[TriageReason]
    status: str
    num_instances: int
    received_at: datetime
    claimed_by: str | None
    # the claim holder as people know them (display name, else user name)
    claimed_by_name: str | None = None
    claim_expires_at: datetime | None
    study_description: str
    # as a person reads it: "王小明" (no space for Chinese), "WANG Xiaoming"
    patient_name: str
    patient_id: str
    patient_sex: str
    patient_age: str  # DICOM AS ("066Y"), from the birth and study dates; "" if unknown
    accession_number: str
    body_part: str  # the first series' Body Part Examined that has one ("HEAD", "CHEST")
    deadline_at: datetime | None
    # a corrected re-send replaced a served image after the report was signed: the report
    # may describe images no longer served (``worklist.resends``)
    updated_after_report_at: datetime | None = None

    @classmethod
    def from_study(cls, study: Study) -> WorklistItem:
        return cls(**WorklistItem.fields_of(study))

    @staticmethod
    def fields_of(study: Study | WorklistRow) -> dict[str, Any]:
        """The row's fields, for this model and the ones that extend it (validated once,
        by the model built from them)."""
        on = study.study_date or study.received_at.strftime("%Y%m%d")
        return {
            "study_instance_uid": study.study_instance_uid,
            "site": study.site.code,
            "modality": study.modalities,
            "priority": study.priority,
            "category": study.category,
            "triage_reasons": TriageReason.listed(study.triage_reasons),
            "status": study.status,
            "num_instances": study.num_instances,
            "received_at": study.received_at,
            "claimed_by": study.claimed_by.username if study.claimed_by is not None else None,
            "claimed_by_name": (
                (study.claimed_by.display_name or study.claimed_by.username)
                if study.claimed_by is not None
                else None
            ),
            "claim_expires_at": study.claim_expires_at if study.claimed_by_id else None,
            "study_description": study.study_description,
            "patient_name": readable_name(study.patient_name),
            "patient_id": study.patient_id,
            "patient_sex": study.patient_sex,
            "patient_age": dicom_age(study.patient_birth_date, on),
            "accession_number": study.accession_number,
            "body_part": study.body_part or "",
            "deadline_at": study.deadline_at,
            "updated_after_report_at": study.updated_after_report_at,
        }


class SeriesOut(BaseModel):
    series_instance_uid: str
    series_number: int | None
    modality: str
    series_description: str
    body_part_examined: str
    num_instances: int
    sop_instance_uids: list[str]

    @classmethod
    def from_series(cls, series: Series, sop_uids: Sequence[str]) -> SeriesOut:
        """``series`` with its instances' UIDs (``repository.sop_uids_by_series``)."""
        return cls(
            series_instance_uid=series.series_instance_uid,
            series_number=series.series_number,
            modality=series.modality,
            series_description=series.series_description,
            body_part_examined=series.body_part_examined,
            num_instances=series.num_instances,
            sop_instance_uids=list(sop_uids),
        )


class StudyDetail(WorklistItem):
    patient_birth_date: str
    study_date: str
    study_time: str
    calling_ae: str
    triage: Triage
    series: list[SeriesOut]
    report_status: str | None
    # the claim's warnings as the holder's page shows them, kept for a page opened after
    # the event: when the holder was told the claim runs out soon (None once renewed), and
    # whose claim ran out (until someone claims the study)
    claim_warned_at: datetime | None = None
    claim_expired_by: str | None = None

    @classmethod
    def of(cls, study: Study, sop_uids: Mapping[int, Sequence[str]]) -> StudyDetail:
        """``study`` with its series, ``sop_uids`` their instances' UIDs by series id
        (``repository.sop_uids_by_series``)."""
        report: Report | None = study.report
        return cls(
            **WorklistItem.fields_of(study),
            patient_birth_date=study.patient_birth_date,
            study_date=study.study_date,
            study_time=study.study_time,
            calling_ae=study.calling_ae,
            triage=Triage(
                priority=study.priority,
                category=study.category,
                reasons=TriageReason.listed(study.triage_reasons),
                overridden=study.triage_override_by_id is not None,
            ),
            series=[SeriesOut.from_series(s, sop_uids.get(s.id, ())) for s in study.series],
            report_status=report.status if report is not None else None,
            claim_warned_at=study.claim_warned_at if study.claimed_by_id else None,
            claim_expired_by=(
                study.claim_expired_by.username if study.claim_expired_by is not None else None
            ),
        )


class InstanceVersionOut(BaseModel):
    """A version of an instance not served (``worklist.resends``)."""

    id: int
    sop_instance_uid: str
    series_instance_uid: str
    status: str  # superseded (was served, replaced) or not_applied (never served)
    reason: str
    calling_ae: str
    received_at: datetime
    recorded_at: datetime
    size: int
    sha256: str
    transfer_syntax_uid: str
    # study and series fields the replacing version changed (names, never their values)
    changed: list[str]

    @classmethod
    def of(cls, v: InstanceVersion) -> InstanceVersionOut:
        return cls(
            id=v.id,
            sop_instance_uid=v.sop_instance_uid,
            series_instance_uid=v.series_instance_uid,
            status=v.status,
            reason=v.reason,
            calling_ae=v.calling_ae,
            received_at=v.received_at,
            recorded_at=v.recorded_at,
            size=v.size,
            sha256=v.sha256,
            transfer_syntax_uid=v.transfer_syntax_uid,
            changed=[str(c) for c in (v.detail or {}).get("changed", [])],
        )


class PriorReport(BaseModel):
    status: str
    findings: str
    impression: str
    recommendation: str
    signed_by: str | None
    signed_at: datetime | None


class PriorStudy(WorklistItem):
    """One of the patient's other studies, with its report when one is signed."""

    study_date: str
    report: PriorReport | None

    @classmethod
    def from_prior(cls, study: Study) -> PriorStudy:
        report: Report | None = study.report
        signed = report is not None and report.signed_at is not None
        return cls(
            **WorklistItem.fields_of(study),
            study_date=study.study_date,
            report=PriorReport(
                status=report.status,
                findings=report.findings,
                impression=report.impression,
                recommendation=report.recommendation,
                signed_by=report.signed_by.username if report.signed_by else None,
                signed_at=report.signed_at,
            )
            if signed and report is not None
            else None,
        )


# --- workflow: leases, assign/cancel, flags, events -----------------------------
class WorkflowItem(WorklistItem):
    """A worklist row with its clock: time left to the deadline that runs now (the read
    deadline; once a preliminary report met it, the final report's), escalation, an expired
    claim, cancel."""

    due_at: datetime | None
    due: Literal["read", "final"] | None
    time_left_seconds: int | None
    overdue: bool
    claim_expired_by: str | None
    claim_expired_by_name: str | None  # as people know them (display name, else user name)
    claim_expired_at: datetime | None
    escalation_level: int
    cancel_reason: str | None
    cancelled_at: datetime | None

    @classmethod
    def from_study_at(cls, study: Study | WorklistRow, now: datetime) -> WorkflowItem:
        """A worklist page's row (``repository.list_worklist``) or a study just changed
        (claimed, released, assigned), as the reading room shows it at ``now``."""
        base = WorklistItem.fields_of(study)
        due: Literal["read", "final"] | None = "read" if study.deadline_at else None
        due_at = study.deadline_at
        if study.status == STATUS_PRELIMINARY and study.final_deadline_at is not None:
            due, due_at = "final", study.final_deadline_at
        left = int((due_at - now).total_seconds()) if due_at is not None else None
        expired_by = study.claim_expired_by
        return cls(
            **base,
            due_at=due_at,
            due=due,
            time_left_seconds=left,
            overdue=left is not None and left < 0,
            claim_expired_by=expired_by.username if expired_by is not None else None,
            claim_expired_by_name=(
                (expired_by.display_name or expired_by.username) if expired_by is not None else None
            ),
            claim_expired_at=study.claim_expired_at,
            escalation_level=study.escalation_level or 0,
            cancel_reason=study.cancel_reason,
            cancelled_at=study.cancelled_at,
        )


class AssignIn(Input):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    # why (kept in the audit trail and told to the readers' pages)
    reason: str | None = Field(default=None, max_length=MAX_REASON)


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
