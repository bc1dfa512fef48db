"""Report bodies: drafts, signing, the report with its addenda and critical results, templates."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from viewer_api.validation import MAX_REASON, MAX_TEXT, Input, Instant
from worklist.models import CriticalResult, Report, ReportAddendum, SRSend


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


class SRSendOut(BaseModel):
    """The report's SR on its way to the site's PACS: ``pending`` (due at
    ``next_attempt_at``), ``sent`` or ``failed`` (gave up; the next change queues it again)."""

    status: str
    reason: str  # what queued it last: signed_final, amended, study_updated, requested, ...
    attempts: int  # since it was last queued
    queued_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None  # None unless pending
    last_error: str | None
    sent_at: datetime | None
    destination: str
    sop_instance_uid: str  # the SR last sent

    @classmethod
    def from_send(cls, row: SRSend) -> SRSendOut:
        return cls(
            status=row.status,
            reason=row.reason,
            attempts=row.attempts,
            queued_at=row.queued_at,
            last_attempt_at=row.last_attempt_at,
            next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
            last_error=row.last_error,
            sent_at=row.sent_at,
            destination=row.destination,
            sop_instance_uid=row.sop_instance_uid,
        )


class ReportOut(BaseModel):
    study_instance_uid: str
    site: str
    status: str
    findings: str
    impression: str
    recommendation: str
    author: str
    signed_by: str | None
    # the signer as people know them (display name, else user name)
    signed_by_name: str | None = None
    signed_at: datetime | None
    content_sha256: str | None
    created_at: datetime
    updated_at: datetime
    # later corrections (the signed content above never changes) and critical results
    addenda: list[AddendumOut] = Field(default_factory=list)
    critical_results: list[CriticalResultOut] = Field(default_factory=list)
    critical_result_expected: bool = False
    no_critical_result_reason: str | None = None
    # the SR sent to the site's PACS (None: never queued, or the site has no destination)
    sr_send: SRSendOut | None = None

    @classmethod
    def from_report(
        cls,
        report: Report,
        *,
        addenda: Sequence[ReportAddendum] = (),
        critical_results: Sequence[CriticalResult] = (),
        critical_result_expected: bool = False,
        sr_send: SRSend | None = None,
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
            signed_by_name=(
                (report.signed_by.display_name or report.signed_by.username)
                if report.signed_by is not None
                else None
            ),
            signed_at=report.signed_at,
            content_sha256=report.content_sha256,
            created_at=report.created_at,
            updated_at=report.updated_at,
            addenda=[AddendumOut.from_addendum(a) for a in addenda],
            critical_results=[CriticalResultOut.from_result(c) for c in critical_results],
            critical_result_expected=critical_result_expected,
            no_critical_result_reason=report.no_critical_result_reason,
            sr_send=SRSendOut.from_send(sr_send) if sr_send is not None else None,
        )


# --- report addenda, critical results, templates --------------------------------
class AddendumIn(Input):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_TEXT)
    reason: str = Field(min_length=1, max_length=MAX_REASON)


class AddendumOut(BaseModel):
    author: str
    # the author as people know them (display name, else user name)
    author_name: str
    created_at: datetime
    text: str
    reason: str
    content_sha256: str

    @classmethod
    def from_addendum(cls, addendum: ReportAddendum) -> AddendumOut:
        return cls(
            author=addendum.author.username,
            author_name=addendum.author.display_name or addendum.author.username,
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
    id: int
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
    # the clinic's acknowledgement on its page (the read-back): user name and time
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None

    @classmethod
    def from_result(cls, result: CriticalResult) -> CriticalResultOut:
        acknowledged = result.acknowledged_by
        return cls(
            id=result.id,
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
            acknowledged_by=acknowledged.username if acknowledged is not None else None,
            acknowledged_at=result.acknowledged_at,
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


ReportOut.model_rebuild()
