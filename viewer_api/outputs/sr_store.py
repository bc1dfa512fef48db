"""The report's SR stored as a series of its own in the study.

``store_report_sr`` makes this report version's SR (``sr.make_report_sr``), writes it to the
object store under the normal key and records it with ``worklist.ingest.record_instances``,
so it shows up in the study like any instance the gateway announced; once per version and
served state of the study (the SOP Instance UID is derived from both), naming the previous
SR as its predecessor.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.base import ObjectStore
from storage.errors import StorageError
from storage.keys import instance_key
from viewer_api.outputs.content import ReportContent, gather
from viewer_api.outputs.settings import OutputSettings, get_output_settings
from viewer_api.outputs.sr import (
    BASIC_TEXT_SR,
    SR_SERIES_DESCRIPTION,
    SR_SERIES_NUMBER,
    ImageRef,
    make_report_sr,
    series_uid_for,
    sop_uid_for,
    sr_bytes,
)
from worklist.ingest import InstanceArrival, record_instances
from worklist.models import Instance, Report, Series, Study
from worklist.settings import DEFAULT_DEADLINES, Deadlines

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredSR:
    study_uid: str
    series_uid: str
    sop_uid: str
    object_key: str
    size: int
    created: bool  # False: this version's SR already existed


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
    """Make this report version's SR, store it, and record it in the study (once per report
    version and served state: when a corrected re-send replaced images after the report
    (``Study.updated_after_report_at``), the report stays as signed but its SR is made again,
    with the study's header and images as they are served now, naming the previous one as
    its predecessor)."""
    series_uid = series_uid_for(content.study_uid)
    served = study.updated_after_report_at.isoformat() if study.updated_after_report_at else ""
    sop_uid = sop_uid_for(content.study_uid, content.version_sha256, served)
    key = instance_key(study.site.code, content.study_uid, series_uid, sop_uid)
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
        served=served,
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
    content = gather(session=session, study=study, report=report, settings=settings)
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
    "StoredSR",
    "store_report_sr",
    "store_signed_report_sr",
    "study_header",
]
