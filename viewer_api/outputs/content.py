"""Everything a report output prints, gathered once from the database into plain values."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from viewer_api.outputs.settings import OutputSettings
from worklist.critical import critical_results_for
from worklist.models import (
    REPORT_AMENDED,
    REPORT_FINAL,
    Instance,
    Report,
    Site,
    Study,
)
from worklist.reports import SIGNED_STATUSES, addenda_for

# DICOM JSON tags read from an instance's header
PATIENT_AGE = "00101010"


class ReportNotSigned(Exception):
    """The report is a draft: there is nothing to print or send yet."""


@dataclass(frozen=True)
class CriticalNote:
    finding: str
    to_name: str  # who was told
    to_role: str
    to_phone: str
    communicated_at: datetime
    method: str
    read_back_confirmed: bool
    recorded_by: str


@dataclass(frozen=True)
class AddendumNote:
    text: str
    reason: str
    author: str
    created_at: datetime
    sha256: str


@dataclass(frozen=True)
class ReportContent:
    """The values of one signed report version; ``viewer_api.outputs.layout`` words them."""

    hospital: str
    centre: str  # the reading centre at the hospital ("远程影像诊断中心")
    site_code: str
    site_name: str
    study_uid: str
    patient_name: str  # as a person reads it ("王小明", "WANG Xiaoming")
    patient_name_dicom: str  # as stored ("王^小明")
    patient_id: str
    patient_sex: str
    patient_birth_date: str  # YYYYMMDD or ""
    patient_age: str  # DICOM AS ("066Y") or ""
    study_description: str
    study_date: str
    study_time: str
    modality: str
    accession: str
    status: str  # preliminary | final | amended
    findings: str
    impression: str
    recommendation: str
    signer_username: str
    signer_name: str  # the display name, else the user name
    signer_title: str  # "主治医师" or ""
    signed_at: datetime
    content_sha256: str
    addenda: tuple[AddendumNote, ...] = ()
    critical_results: tuple[CriticalNote, ...] = ()
    display_offset_hours: int = 8

    @property
    def version_sha256(self) -> str:
        """The signed content and every addendum: changes whenever the report does."""
        digest = hashlib.sha256(self.content_sha256.encode())
        for note in self.addenda:
            digest.update(b"|" + note.sha256.encode())
        return digest.hexdigest()

    def local(self, when: datetime) -> str:
        """``when`` in the display time zone, to the minute."""
        zone = timezone(timedelta(hours=self.display_offset_hours))
        return when.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def readable_name(pn: str) -> str:
    """A DICOM person name for print: the ideographic group if there is one, components
    joined without spaces for Chinese and with spaces otherwise."""
    groups = pn.split("=")
    # ideographic (the second group) first, then alphabetic, then phonetic
    order = [groups[i] for i in (1, 0, 2) if i < len(groups)]
    chosen = next((g for g in order if g.strip("^ ")), "")
    parts = [p.strip() for p in chosen.split("^") if p.strip()]
    if not parts:
        return ""
    cjk = all(ord(ch) > 0x2E80 for p in parts for ch in p if not ch.isspace())
    return ("" if cjk else " ").join(parts)


def _first_header(session: Session, study: Study) -> dict[str, Any]:
    header = session.scalar(
        select(Instance.dicom_json)
        .where(Instance.study_id == study.id, Instance.dicom_json.is_not(None))
        .order_by(Instance.id)
        .limit(1)
    )
    return dict(header or {})


def _json_value(header: dict[str, Any], tag: str) -> str:
    values = (header.get(tag) or {}).get("Value") or []
    return str(values[0]) if values else ""


def gather(
    *,
    session: Session,
    study: Study,
    report: Report,
    settings: OutputSettings,
) -> ReportContent:
    """The printable content of ``study``'s signed ``report``; ``ReportNotSigned`` for a draft."""
    if (
        report.status not in SIGNED_STATUSES
        or report.signed_at is None
        or report.content_sha256 is None
    ):
        raise ReportNotSigned()
    site = session.get(Site, study.site_id)
    header = _first_header(session, study)
    addenda = addenda_for(session=session, report_ids=[report.id]).get(report.id, [])
    criticals = critical_results_for(session=session, study_ids=[study.id]).get(study.id, [])
    signer = report.signed_by
    modality = next((m for m in study.modalities.split("\\") if m and m != "SR"), "")
    return ReportContent(
        hospital=settings.hospital_name,
        centre=settings.centre_name,
        site_code=site.code if site else "",
        site_name=site.name if site else "",
        study_uid=study.study_instance_uid,
        patient_name=readable_name(study.patient_name),
        patient_name_dicom=study.patient_name,
        patient_id=study.patient_id,
        patient_sex=study.patient_sex,
        patient_birth_date=study.patient_birth_date,
        patient_age=_json_value(header, PATIENT_AGE),
        study_description=study.study_description,
        study_date=study.study_date,
        study_time=study.study_time,
        modality=modality,
        accession=study.accession_number,
        status=report.status,
        findings=report.findings,
        impression=report.impression,
        recommendation=report.recommendation,
        signer_username=signer.username if signer else "",
        signer_name=(signer.display_name or signer.username) if signer else "",
        signer_title=signer.title if signer else "",
        signed_at=report.signed_at.astimezone(UTC),
        content_sha256=report.content_sha256,
        addenda=tuple(
            AddendumNote(
                text=a.text,
                reason=a.reason,
                author=a.author.display_name or a.author.username,
                created_at=a.created_at.astimezone(UTC),
                sha256=a.content_sha256,
            )
            for a in addenda
        ),
        critical_results=tuple(
            CriticalNote(
                finding=c.finding,
                to_name=c.communicated_to_name,
                to_role=c.communicated_to_role,
                to_phone=c.communicated_to_phone,
                communicated_at=c.communicated_at.astimezone(UTC),
                method=c.method,
                read_back_confirmed=c.read_back_confirmed,
                recorded_by=c.recorded_by.display_name or c.recorded_by.username,
            )
            for c in criticals
        ),
        display_offset_hours=settings.display_utc_offset_hours,
    )


def is_final(status: str) -> bool:
    """Final for the reader's purposes: signed final, possibly with addenda."""
    return status in (REPORT_FINAL, REPORT_AMENDED)


__all__ = [
    "AddendumNote",
    "CriticalNote",
    "ReportContent",
    "ReportNotSigned",
    "gather",
    "is_final",
    "readable_name",
]
