"""The gateway's bodies: its configuration and the ingest announcement (docs/contracts.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from viewer_api.validation import (
    MAX_INSTANCES_PER_CALL,
    MAX_INT64,
    Input,
    Instant,
    Int32,
    check_uid,
)


class GatewaySite(BaseModel):
    code: str
    name: str
    ae_titles: list[str]
    # where the site's modalities may call from: CIDR blocks, and the SHA-256 (hex) of their
    # DICOM TLS client certificates; both empty: any address (docs/contracts.md)
    networks: list[str] = []
    certificates: list[str] = []


class GatewayConfig(BaseModel):
    sites: list[GatewaySite]


class UrgentHint(Input):
    category: Literal["stroke", "chest_pain"] | None = None
    priority: Literal["stat", "routine"] | None = None
    # each a worklist.triage.Reason's to_json() (an older gateway sends English strings)
    reasons: list[dict[str, str] | str] = Field(default_factory=list, max_length=50)


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
    # when the gateway had it in the object store, on its clock (an older gateway: absent)
    uploaded_at: Instant | None = None

    @field_validator(
        "study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid"
    )
    @classmethod
    def _check_uids(cls, value: str) -> str:
        return check_uid(value)

    @field_validator("transfer_syntax_uid")
    @classmethod
    def _check_ts(cls, value: str) -> str:
        return check_uid(value) if value else value


class IngestIn(Input):
    site: str = Field(min_length=1, max_length=32)
    calling_ae: str = Field(default="", max_length=16)
    called_ae: str = Field(default="", max_length=16)
    instances: list[InstanceIn] = Field(min_length=1, max_length=MAX_INSTANCES_PER_CALL)


class HeldOut(BaseModel):
    """An announced instance the county held as a conflict for an admin, not filed."""

    conflict_id: int
    kind: str  # study_other_site, series_other_study, patient_mismatch or sop_other_study
    study_instance_uid: str
    sop_instance_uid: str


class ResendOut(BaseModel):
    """A re-sent instance (other bytes under a SOP Instance UID filed in the study): the
    version now served (``replaced``), or kept beside the one served (``kept_first``: the
    overwrite policy; ``older``: older than the one served)."""

    sop_instance_uid: str
    study_instance_uid: str
    object_key: str
    outcome: str
    version_id: int
    after_signed_report: bool = False


class IngestOut(BaseModel):
    accepted: int
    duplicates: int
    # instances held for an admin (their study UID belongs to another site, their series to
    # another study, or their patient differs from their study's): not in the worklist
    conflicts: list[HeldOut] = []
    resends: list[ResendOut] = []
