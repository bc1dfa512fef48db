"""The report as a DICOM Basic Text SR, stored as a series of its own in the study.

``make_report_sr`` is pure: a ``ReportContent``, the study's patient/study header (from an
instance's DICOM JSON in the index, or a stored object's header) and the image instances
it reports on give a dataset. ``store_report_sr`` writes it to the object store under the
normal key and records it with ``worklist.ingest.record_instances``, so it shows up in the
study like any instance the gateway announced.

Idempotent per report version: the SOP Instance UID is derived from the study UID and the
version hash (signed content plus addenda), and the content and creation times are the
signing times, so generating it again gives the same object. An amended report's SR names
the previous version's SR (if there is one) in PredecessorDocumentsSequence.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.base import ObjectStore
from storage.errors import StorageError
from storage.keys import instance_key
from viewer_api.outputs.content import ReportContent, gather
from viewer_api.outputs.settings import OutputSettings, get_output_settings
from worklist.ingest import InstanceArrival, record_instances
from worklist.models import REPORT_PRELIMINARY, Instance, Report, Series, Study
from worklist.settings import DEFAULT_DEADLINES, Deadlines

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class StoredSR:
    study_uid: str
    series_uid: str
    sop_uid: str
    object_key: str
    size: int
    created: bool  # False: this version's SR already existed


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


def sop_uid_for(study_uid: str, version_sha256: str) -> str:
    return str(generate_uid(entropy_srcs=[study_uid, "teleread report SR", version_sha256]))


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
) -> Dataset:
    """A Basic Text SR of ``content`` (a signed report) for the study ``header`` describes."""
    zone = timezone(timedelta(hours=content.display_offset_hours))
    when = _version_time(content).astimezone(zone)
    signed = content.signed_at.astimezone(zone)
    final = content.status != REPORT_PRELIMINARY

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = sop_uid_for(content.study_uid, content.version_sha256)
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
    for critical in content.critical_results:
        children.append(
            _text(
                CRITICAL,
                f"{critical.finding}（已通知 {critical.communicated_to}，{critical.method}，"
                f"{content.local(critical.communicated_at)}）",
            )
        )
    for addendum in content.addenda:
        children.append(
            _text(
                ADDENDUM,
                f"{addendum.text}\n原因：{addendum.reason}（{addendum.author}，{content.local(addendum.created_at)}）",
            )
        )
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


def study_header(*, session: Session, store: ObjectStore, study: Study) -> Dataset:
    """The study's patient/study header: an image's DICOM JSON from the index, else a stored
    image's header, else the index's own columns."""
    rows = session.execute(
        select(Instance.dicom_json, Instance.object_key)
        .where(Instance.study_id == study.id, Instance.sop_class_uid != BASIC_TEXT_SR)
        .order_by(Instance.id)
        .limit(1)
    ).first()
    if rows is not None and rows[0]:
        try:
            return Dataset.from_json(rows[0])
        except (ValueError, TypeError, KeyError):
            logger.warning(
                "unreadable DICOM JSON in the index",
                extra={"action": "sr_header_fallback", "study_uid": study.study_instance_uid},
            )
    if rows is not None:
        try:
            with store.open(rows[1]) as stream:
                return dcmread(stream, stop_before_pixels=True)
        except (StorageError, InvalidDicomError, OSError, EOFError):
            logger.warning(
                "stored object header unreadable",
                extra={"action": "sr_header_fallback", "study_uid": study.study_instance_uid},
            )
    header = Dataset()
    header.PatientName = study.patient_name
    header.PatientID = study.patient_id
    header.PatientSex = study.patient_sex
    header.PatientBirthDate = study.patient_birth_date
    header.StudyDate = study.study_date
    header.StudyTime = study.study_time
    header.AccessionNumber = study.accession_number
    header.StudyDescription = study.study_description
    return header


def _images(session: Session, study: Study) -> list[ImageRef]:
    rows = session.execute(
        select(Series.series_instance_uid, Instance.sop_class_uid, Instance.sop_instance_uid)
        .join(Series, Instance.series_id == Series.id)
        .where(Instance.study_id == study.id, Instance.sop_class_uid != BASIC_TEXT_SR)
        .order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
    ).all()
    return [ImageRef(series_uid=s, sop_class_uid=c, sop_uid=i) for s, c, i in rows]


def _latest_sr(session: Session, study: Study, series_uid: str) -> ImageRef | None:
    row = session.execute(
        select(Instance.sop_class_uid, Instance.sop_instance_uid)
        .join(Series, Instance.series_id == Series.id)
        .where(Instance.study_id == study.id, Series.series_instance_uid == series_uid)
        .order_by(Instance.instance_number.desc(), Instance.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return ImageRef(series_uid=series_uid, sop_class_uid=row[0], sop_uid=row[1])


def store_report_sr(
    content: ReportContent,
    *,
    session: Session,
    store: ObjectStore,
    study: Study,
    now: datetime,
    station_name: str = "TELEREAD",
    deadlines: Deadlines = DEFAULT_DEADLINES,
) -> StoredSR:
    """Make this report version's SR, store it, and record it in the study (once)."""
    series_uid = series_uid_for(content.study_uid)
    sop_uid = sop_uid_for(content.study_uid, content.version_sha256)
    key = instance_key(content.study_uid, series_uid, sop_uid)
    existing = session.scalars(
        select(Instance).where(Instance.sop_instance_uid == sop_uid)
    ).one_or_none()
    if existing is not None:
        return StoredSR(content.study_uid, series_uid, sop_uid, key, existing.size, False)
    predecessor = _latest_sr(session, study, series_uid)
    ds = make_report_sr(
        content,
        header=study_header(session=session, store=store, study=study),
        images=_images(session, study),
        predecessor=predecessor,
        station_name=station_name,
    )
    data = sr_bytes(ds)
    digest = hashlib.sha256(data).hexdigest()
    store.put(key, data, sha256=digest)
    arrival = InstanceArrival(
        study_instance_uid=content.study_uid,
        series_instance_uid=series_uid,
        sop_instance_uid=sop_uid,
        sop_class_uid=BASIC_TEXT_SR,
        object_key=key,
        size=len(data),
        sha256=digest,
        received_at=now,
        transfer_syntax_uid=str(ExplicitVRLittleEndian),
        modality="SR",
        study_description=study.study_description,
        series_number=SR_SERIES_NUMBER,
        series_description=SR_SERIES_DESCRIPTION,
        instance_number=int(ds.InstanceNumber),
        text_fields={},
        dicom_json=ds.to_json_dict(),
    )
    outcome = record_instances(
        session=session,
        site_code=study.site.code,
        calling_ae=study.calling_ae,
        instances=[arrival],
        now=now,
        deadlines=deadlines,
    )
    logger.info(
        "report SR stored",
        extra={
            "action": "report_sr_stored",
            "study_uid": content.study_uid,
            "sop_uid": sop_uid,
            "status": content.status,
            "accepted": outcome.accepted,
        },
    )
    return StoredSR(content.study_uid, series_uid, sop_uid, key, len(data), outcome.accepted > 0)


def store_signed_report_sr(
    *,
    session: Session,
    store: ObjectStore,
    study: Study,
    report: Report,
    now: datetime,
    settings: OutputSettings | None = None,
    deadlines: Deadlines = DEFAULT_DEADLINES,
) -> StoredSR:
    """The hook for signing: gather ``report`` (signed) and store its SR version.

    Raises ``ReportNotSigned`` for a draft; storage errors propagate.
    """
    settings = settings or get_output_settings()
    content = gather(
        session=session,
        study=study,
        report=report,
        hospital=settings.hospital_name,
        display_offset_hours=settings.display_utc_offset_hours,
    )
    return store_report_sr(
        content,
        session=session,
        store=store,
        study=study,
        now=now,
        station_name=settings.sr_station_name,
        deadlines=deadlines,
    )


__all__ = [
    "BASIC_TEXT_SR",
    "ImageRef",
    "StoredSR",
    "make_report_sr",
    "series_uid_for",
    "sop_uid_for",
    "sr_bytes",
    "store_report_sr",
    "store_signed_report_sr",
    "study_header",
]
