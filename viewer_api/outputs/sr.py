"""The report as a DICOM Basic Text SR (the dataset; ``sr_store`` puts it in the study).

``make_report_sr`` is pure: a ``ReportContent``, the study's patient/study header (from an
instance's DICOM JSON in the index, or a stored object's header) and the image instances
it reports on give a dataset.

Idempotent per report version: the SOP Instance UID is derived from the study UID and the
version hash (signed content plus addenda), and the content and creation times are the
signing times, so generating it again gives the same object. An amended report's SR names
the previous version's SR (if there is one) in PredecessorDocumentsSequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from viewer_api.outputs.content import ReportContent
from viewer_api.outputs.layout import document
from worklist.models import REPORT_PRELIMINARY

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
SR_SERIES_NUMBER = 999
SR_SERIES_DESCRIPTION = "影像诊断报告 Imaging report"
MANUFACTURER = "teleread"
LOCAL_SCHEME = "99TELEREAD"  # "99" prefix: a local coding scheme (PS3.16 8.2)

# (value, scheme, meaning)
Code = tuple[str, str, str]
TITLE: Code = ("18748-4", "LN", "Diagnostic Imaging Report")
FINDINGS: Code = ("121070", "DCM", "Findings")
FINDING: Code = ("121071", "DCM", "Finding")
IMPRESSIONS: Code = ("121072", "DCM", "Impressions")
IMPRESSION: Code = ("121073", "DCM", "Impression")
RECOMMENDATIONS: Code = ("121074", "DCM", "Recommendations")
RECOMMENDATION: Code = ("121075", "DCM", "Recommendation")
PERSON_OBSERVER: Code = ("121008", "DCM", "Person Observer Name")
CRITICAL: Code = ("CRITRES", LOCAL_SCHEME, "Critical result communication")
ADDENDUM: Code = ("ADDENDUM", LOCAL_SCHEME, "Addendum")

# header attributes copied from an image of the study (Patient, General Study, Patient Study)
COPIED = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
# type 2 attributes: present, empty if unknown
TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


@dataclass(frozen=True)
class ImageRef:
    series_uid: str
    sop_class_uid: str
    sop_uid: str


def _code(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _item(relationship: str, value_type: str, concept: Code, **values: Any) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = DicomSequence([_code(concept)])
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _text(concept: Code, text: str) -> Dataset:
    return _item("CONTAINS", "TEXT", concept, TextValue=text)


def _container(concept: Code, children: list[Dataset]) -> Dataset:
    return _item(
        "CONTAINS",
        "CONTAINER",
        concept,
        ContinuityOfContent="SEPARATE",
        ContentSequence=DicomSequence(children),
    )


def person_name(name: str) -> str:
    """A display name as a DICOM PN: whole in the family-name component unless it already
    has components (a name like "李医生" cannot be split reliably)."""
    name = name.strip()[:60]
    return name if "^" in name else f"{name}^"


def series_uid_for(study_uid: str) -> str:
    """The one SR series of a study's reports (every version goes into it)."""
    return str(generate_uid(entropy_srcs=[study_uid, "teleread report SR series"]))


def sop_uid_for(study_uid: str, version_sha256: str, served: str = "") -> str:
    """The SR of one report version over one served state of the study: ``served`` names
    the state when its images changed after the report (empty: as they were)."""
    sources = [study_uid, "teleread report SR", version_sha256]
    if served:
        sources.append(f"served {served}")
    return str(generate_uid(entropy_srcs=sources))


def _hierarchical_refs(study_uid: str, refs: Sequence[ImageRef]) -> DicomSequence:
    """One item of the Hierarchical SOP Instance Reference Macro for ``study_uid``."""
    by_series: dict[str, list[ImageRef]] = {}
    for ref in refs:
        by_series.setdefault(ref.series_uid, []).append(ref)
    study_item = Dataset()
    study_item.StudyInstanceUID = study_uid
    series_items = []
    for series_uid, items in by_series.items():
        series_item = Dataset()
        series_item.SeriesInstanceUID = series_uid
        sops = []
        for ref in items:
            sop = Dataset()
            sop.ReferencedSOPClassUID = ref.sop_class_uid
            sop.ReferencedSOPInstanceUID = ref.sop_uid
            sops.append(sop)
        series_item.ReferencedSOPSequence = DicomSequence(sops)
        series_items.append(series_item)
    study_item.ReferencedSeriesSequence = DicomSequence(series_items)
    return DicomSequence([study_item])


def _version_time(content: ReportContent) -> datetime:
    """When this version came to be: the signature, or the latest addendum."""
    times = [content.signed_at, *(a.created_at for a in content.addenda)]
    return max(times)


def make_report_sr(
    content: ReportContent,
    *,
    header: Dataset,
    images: Sequence[ImageRef] = (),
    predecessor: ImageRef | None = None,
    station_name: str = "TELEREAD",
    served: str = "",
) -> Dataset:
    """A Basic Text SR of ``content`` (a signed report) for the study ``header`` describes."""
    zone = timezone(timedelta(hours=content.display_offset_hours))
    when = _version_time(content).astimezone(zone)
    signed = content.signed_at.astimezone(zone)
    final = content.status != REPORT_PRELIMINARY

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = sop_uid_for(content.study_uid, content.version_sha256, served)
    ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = when.strftime("%H%M%S")
    ds.TimezoneOffsetFromUTC = when.strftime("%z")
    # Patient, General Study, Patient Study: as the images say
    for keyword in COPIED:
        if keyword in header and header[keyword].value not in (None, ""):
            setattr(ds, keyword, header[keyword].value)
    for keyword in TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    ds.StudyInstanceUID = content.study_uid
    # SR Document Series, General Equipment
    ds.Modality = "SR"
    ds.SeriesInstanceUID = series_uid_for(content.study_uid)
    ds.SeriesNumber = SR_SERIES_NUMBER
    ds.SeriesDescription = SR_SERIES_DESCRIPTION
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = content.hospital[:64]
    ds.StationName = station_name[:16]
    # SR Document General
    ds.InstanceNumber = 1 + len(content.addenda)
    ds.CompletionFlag = "COMPLETE" if final else "PARTIAL"
    ds.VerificationFlag = "VERIFIED" if final else "UNVERIFIED"
    ds.PreliminaryFlag = "FINAL" if final else "PRELIMINARY"
    ds.ContentDate = when.strftime("%Y%m%d")
    ds.ContentTime = when.strftime("%H%M%S")
    if final:
        observer = Dataset()
        observer.VerifyingObserverName = person_name(content.signer_name or content.signer_username)
        observer.VerifyingObserverIdentificationCodeSequence = DicomSequence()
        observer.VerifyingOrganization = content.hospital[:64]
        observer.VerificationDateTime = signed.strftime("%Y%m%d%H%M%S%z")
        ds.VerifyingObserverSequence = DicomSequence([observer])
    ds.PerformedProcedureCodeSequence = DicomSequence()
    if images:
        ds.CurrentRequestedProcedureEvidenceSequence = _hierarchical_refs(content.study_uid, images)
    if predecessor is not None:
        ds.PredecessorDocumentsSequence = _hierarchical_refs(content.study_uid, [predecessor])
    # SR Document Content: the tree
    children = [
        _item(
            "HAS OBS CONTEXT",
            "PNAME",
            PERSON_OBSERVER,
            PersonName=person_name(content.signer_name or content.signer_username),
        ),
        _container(FINDINGS, [_text(FINDING, content.findings or "-")]),
        _container(IMPRESSIONS, [_text(IMPRESSION, content.impression or "-")]),
    ]
    if content.recommendation.strip():
        children.append(
            _container(RECOMMENDATIONS, [_text(RECOMMENDATION, content.recommendation)])
        )
    doc = document(content)  # the critical calls and addenda worded as every output words them
    for section in doc.critical:
        children.append(_text(CRITICAL, "\n".join(section.paragraphs)))
    for section in doc.addenda:
        children.append(_text(ADDENDUM, "\n".join(section.paragraphs)))
    scheme = Dataset()
    scheme.CodingSchemeDesignator = LOCAL_SCHEME
    scheme.CodingSchemeName = "teleread local codes"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    ds.CodingSchemeIdentificationSequence = DicomSequence([scheme])
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = DicomSequence([_code(TITLE)])
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = DicomSequence(children)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def sr_bytes(ds: Dataset) -> bytes:
    """The SR as a Part-10 file."""
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


__all__ = [
    "BASIC_TEXT_SR",
    "ImageRef",
    "make_report_sr",
    "series_uid_for",
    "sop_uid_for",
    "sr_bytes",
]
