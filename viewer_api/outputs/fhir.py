"""The report as a FHIR R4 ``DiagnosticReport`` (JSON), with the patient and the
``ImagingStudy`` it reports on as contained resources.

Built as plain dicts (the runtime needs no FHIR library); the tests validate the result
with ``fhir.resources`` (its R4B models, which match R4 for these resources).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from viewer_api.outputs.content import ReportContent
from viewer_api.outputs.layout import ReportDocument, plain_text
from worklist.models import REPORT_AMENDED, REPORT_FINAL, REPORT_PRELIMINARY

LOINC = "http://loinc.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DICOM_UID_SYSTEM = "urn:dicom:uid"
# report status -> DiagnosticReport.status (http://hl7.org/fhir/diagnostic-report-status)
FHIR_STATUS = {
    REPORT_PRELIMINARY: "preliminary",
    REPORT_FINAL: "final",
    REPORT_AMENDED: "amended",
}
GENDER = {"M": "male", "F": "female", "O": "other"}
PATIENT_REF = "patient"
STUDY_REF = "imagingstudy"


@dataclass(frozen=True)
class SeriesSummary:
    uid: str
    modality: str
    number: int | None
    description: str
    num_instances: int


def _instant(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _effective(content: ReportContent) -> str | None:
    """StudyDate/StudyTime (local time at the site) as a FHIR dateTime with its offset."""
    date = content.study_date
    if not (len(date) == 8 and date.isdigit()):
        return None
    time = content.study_time.split(".")[0]
    if len(time) >= 4 and time.isdigit():
        time = (time + "00")[:6]
        zone = timezone(timedelta(hours=content.display_offset_hours))
        try:
            local = datetime.strptime(date + time, "%Y%m%d%H%M%S").replace(tzinfo=zone)
        except ValueError:
            return f"{date[:4]}-{date[4:6]}-{date[6:]}"
        return local.isoformat()
    return f"{date[:4]}-{date[4:6]}-{date[6:]}"


def _patient(content: ReportContent) -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": PATIENT_REF}
    if content.patient_id:
        patient["identifier"] = [
            {
                "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                "value": content.patient_id,
            }
        ]
    if content.patient_name:
        patient["name"] = [{"text": content.patient_name}]
    gender = GENDER.get(content.patient_sex.upper()[:1])
    if gender:
        patient["gender"] = gender
    birth = content.patient_birth_date
    if len(birth) == 8 and birth.isdigit():
        patient["birthDate"] = f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"
    return patient


def _imaging_study(content: ReportContent, series: Sequence[SeriesSummary]) -> dict[str, Any]:
    study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": STUDY_REF,
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{content.study_uid}"}],
        "status": "available",
        "subject": {"reference": f"#{PATIENT_REF}", "display": content.patient_name or None},
        "numberOfSeries": len(series),
        "numberOfInstances": sum(s.num_instances for s in series),
    }
    if content.accession:
        study["identifier"].append(
            {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": content.accession}
        )
    modalities = sorted({s.modality for s in series if s.modality})
    if modalities:
        study["modality"] = [{"system": DCM, "code": m} for m in modalities]
    started = _effective(content)
    if started and "T" in started:
        study["started"] = started
    if content.study_description:
        study["description"] = content.study_description
    if series:
        study["series"] = [
            {
                "uid": s.uid,
                **({"number": s.number} if s.number is not None else {}),
                "modality": {"system": DCM, "code": s.modality or "OT"},
                **({"description": s.description} if s.description else {}),
                "numberOfInstances": s.num_instances,
            }
            for s in series
        ]
    return _drop_none(study)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def diagnostic_report(
    content: ReportContent,
    doc: ReportDocument,
    *,
    series: Sequence[SeriesSummary] = (),
    pdf_url: str | None = None,
) -> dict[str, Any]:
    """The FHIR R4 DiagnosticReport (a JSON object) for a signed report; ``doc`` (its
    layout) is the presented text."""
    text = plain_text(doc).encode("utf-8")
    forms: list[dict[str, Any]] = [
        {
            "contentType": "text/plain; charset=utf-8",
            "language": doc.lang,
            "data": base64.b64encode(text).decode("ascii"),
            "size": len(text),
            # FHIR Attachment.hash is the base64 SHA-1 of the data
            "hash": base64.b64encode(hashlib.sha1(text).digest()).decode("ascii"),
            "title": doc.title,
            "creation": _instant(content.signed_at),
        }
    ]
    if pdf_url:
        forms.append(
            {"contentType": "application/pdf", "url": pdf_url, "title": f"{doc.title} PDF"}
        )
    identifiers: list[dict[str, Any]] = [
        {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{content.study_uid}"}
    ]
    if content.accession:
        identifiers.append(
            {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": content.accession}
        )
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        # a FHIR id is [A-Za-z0-9.-]{1,64}: a DICOM UID always fits
        "id": content.study_uid,
        "meta": {"lastUpdated": _instant(content.signed_at)},
        "contained": [_patient(content), _imaging_study(content, series)],
        "identifier": identifiers,
        "status": FHIR_STATUS[content.status],
        "category": [{"coding": [{"system": V2_0074, "code": "RAD", "display": "Radiology"}]}],
        "code": {
            "coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}],
            "text": content.study_description or "Diagnostic imaging study",
        },
        "subject": {"reference": f"#{PATIENT_REF}", "display": content.patient_name or None},
        "effectiveDateTime": _effective(content),
        "issued": _instant(content.signed_at),
        "performer": [{"display": content.hospital}],
        "resultsInterpreter": [
            {
                "display": content.signer_name,
                "identifier": {"value": content.signer_username},
            }
        ],
        "imagingStudy": [{"reference": f"#{STUDY_REF}"}],
        "conclusion": content.impression,
        "presentedForm": forms,
    }
    return _drop_none(report)


__all__ = ["FHIR_STATUS", "SeriesSummary", "diagnostic_report"]
