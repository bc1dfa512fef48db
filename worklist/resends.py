"""Re-sent instances: other bytes announced under a SOP Instance UID already filed in the
study, from the same site (a modality's corrected re-send: a fixed patient name, a
re-reconstructed image).

The gateway uploads a re-send under its own key beside the first version (never over it), so
every version stays in storage. Here the county's policy (``TELEREAD_WORKLIST_OVERWRITE_POLICY``,
after dcm4chee's overwrite policy and Orthanc's ``OverwriteInstances``) decides which one is
served:

- ``same_source`` (default): the newest version from the same site and calling AE title
  replaces the served one; a re-send from another AE of the site is kept, not served.
- ``always``: the newest version from the same site replaces the served one.
- ``never``: the first version stays served.

A replaced version becomes an ``InstanceVersion`` (``superseded``); a re-send not applied is
one too (``not_applied``: the policy, or it is older than the version served). Either way an
admin can list and fetch it. A replacement updates the instance row (what DICOMweb, the
viewer and the reports read) and the study's and series' header fields from the new
version. When the study's report is already signed, the report is left as it is and the
study is flagged (``Study.updated_after_report_at``), an event tells the readers, and the
report's SR is queued for the site's PACS again (``worklist.sr_sends``: made again over the
study as served now).

A re-send whose Patient ID differs from its study's is not a correction here: ingest holds it
as a patient conflict, as any instance naming another patient (``worklist.ingest``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from worklist.events import KIND_STUDY_UPDATED_AFTER_REPORT, publish_study_event
from worklist.models import (
    OVERWRITE_ALWAYS,
    OVERWRITE_NEVER,
    OVERWRITE_SAME_SOURCE,
    VERSION_NOT_APPLIED,
    VERSION_SUPERSEDED,
    Instance,
    InstanceVersion,
    Series,
    Study,
)
from worklist.sr_sends import REASON_STUDY_UPDATED, queue_for

logger = logging.getLogger(__name__)

REPLACED, KEPT_FIRST, OLDER = "replaced", "kept_first", "older"

# study fields a corrected re-send updates (arrival attribute -> study column, its length)
_STUDY_FIELDS = {
    "patient_name": 200,
    "patient_id": 64,
    "patient_sex": 16,
    "patient_birth_date": 8,
    "accession_number": 64,
    "study_date": 8,
    "study_time": 32,
    "study_description": 200,
}
_SERIES_FIELDS = {"series_description": 200, "body_part_examined": 64, "modality": 16}


class Arrival(Protocol):
    """What a re-send needs of an announced instance (``worklist.ingest.InstanceArrival``)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    object_key: str
    size: int
    sha256: str
    received_at: datetime
    transfer_syntax_uid: str
    instance_number: int | None
    dicom_json: dict[str, Any] | None
    patient_id: str
    patient_name: str
    patient_sex: str
    patient_birth_date: str
    accession_number: str
    study_date: str
    study_time: str
    study_description: str
    series_description: str
    body_part_examined: str
    modality: str


@dataclass(frozen=True)
class Resend:
    """What became of one re-sent instance."""

    sop_instance_uid: str
    study_instance_uid: str
    object_key: str  # the re-sent version's
    outcome: str  # REPLACED, KEPT_FIRST, OLDER
    version_id: int
    # the study's report was signed before this replacement: flagged, not changed
    after_signed_report: bool = False


@dataclass
class Split:
    """An ingest batch of one study: its re-sends (with the instance each re-sends), the
    announcements of versions already recorded (duplicates) and the rest."""

    resent: list[tuple[Any, Instance]]
    known_versions: int
    rest: list[Any]


def split_resends(*, session: Session, study: Study, arrivals: Sequence[Arrival]) -> Split:
    """Which of ``arrivals`` re-send an instance filed in ``study`` (same SOP Instance and
    Series Instance UID, another object, the same Patient ID or none)."""
    sops = [a.sop_instance_uid for a in arrivals]
    filed = {
        i.sop_instance_uid: i
        for i in session.scalars(
            select(Instance).where(
                Instance.study_id == study.id, Instance.sop_instance_uid.in_(sops)
            )
        )
    }
    if not filed:
        return Split([], 0, list(arrivals))
    keys = [a.object_key for a in arrivals if a.sop_instance_uid in filed]
    versions = set(
        session.scalars(
            select(InstanceVersion.object_key).where(InstanceVersion.object_key.in_(keys))
        )
    )
    split = Split([], 0, [])
    seen: set[str] = set()
    for a in arrivals:
        instance = filed.get(a.sop_instance_uid)
        if instance is None or a.object_key == instance.object_key:
            split.rest.append(a)
        elif a.object_key in versions or a.object_key in seen:
            split.known_versions += 1
        elif instance.series.series_instance_uid != a.series_instance_uid or _other_patient(
            study, a
        ):
            split.rest.append(a)  # not a correction of this instance: ingest's rules apply
        else:
            seen.add(a.object_key)
            split.resent.append((a, instance))
    return split


def _other_patient(study: Study, a: Arrival) -> bool:
    own, new = study.patient_id.strip(), a.patient_id[:64].strip()
    return bool(own and new and own != new)


def _allowed(policy: str, served_ae: str, calling_ae: str) -> bool:
    if policy == OVERWRITE_ALWAYS:
        return True
    if policy == OVERWRITE_SAME_SOURCE:
        return served_ae == calling_ae[:16]
    if policy == OVERWRITE_NEVER:
        return False
    raise ValueError(f"unknown overwrite policy {policy!r}")


def apply_resends(
    *,
    session: Session,
    study: Study,
    site_code: str,
    calling_ae: str,
    resent: Sequence[tuple[Any, Instance]],
    policy: str,
    now: datetime,
) -> list[Resend]:
    """Apply ``policy`` to each re-send (``split_resends``), oldest first; the study row is
    locked by the caller."""
    done: list[Resend] = []
    flagged = False
    for a, instance in sorted(resent, key=lambda pair: pair[0].received_at):
        served_ae = instance.calling_ae or study.calling_ae
        if a.received_at < instance.received_at:
            outcome, reason = OLDER, "older than the version served"
        elif not _allowed(policy, served_ae, calling_ae):
            outcome = KEPT_FIRST
            reason = (
                f"overwrite policy {policy}: served version from {served_ae}, "
                f"re-sent by {calling_ae[:16]}"
            )
        else:
            outcome, reason = REPLACED, ""
        if outcome != REPLACED:
            version = _version_of_arrival(
                a, instance=instance, calling_ae=calling_ae, reason=reason, now=now
            )
            session.add(version)
            session.flush()
            done.append(
                Resend(
                    a.sop_instance_uid, study.study_instance_uid, a.object_key, outcome, version.id
                )
            )
            _log(outcome, study, a, version.id, policy)
            continue
        changed = _update_study(study, instance.series, a)
        version = InstanceVersion(
            instance_id=instance.id,
            study_id=study.id,
            sop_instance_uid=instance.sop_instance_uid,
            series_instance_uid=instance.series.series_instance_uid,
            object_key=instance.object_key,
            size=instance.size,
            sha256=instance.sha256,
            transfer_syntax_uid=instance.transfer_syntax_uid,
            calling_ae=served_ae,
            received_at=instance.received_at,
            dicom_json=instance.dicom_json,
            status=VERSION_SUPERSEDED,
            reason=f"replaced by a re-send from {calling_ae[:16]}",
            recorded_at=now,
            detail={"replaced_by_sha256": a.sha256, "changed": changed},
        )
        session.add(version)
        instance.object_key = a.object_key
        instance.size = a.size
        instance.sha256 = a.sha256
        instance.sop_class_uid = a.sop_class_uid
        instance.transfer_syntax_uid = a.transfer_syntax_uid
        instance.instance_number = a.instance_number
        instance.dicom_json = a.dicom_json
        instance.received_at = a.received_at
        instance.calling_ae = calling_ae[:16]
        report = study.report
        signed = report is not None and report.signed_at is not None
        if signed:
            study.updated_after_report_at = now
            flagged = True
        session.flush()
        done.append(
            Resend(
                a.sop_instance_uid,
                study.study_instance_uid,
                a.object_key,
                REPLACED,
                version.id,
                signed,
            )
        )
        _log(REPLACED, study, a, version.id, policy)
    if flagged:
        publish_study_event(
            session=session,
            kind=KIND_STUDY_UPDATED_AFTER_REPORT,
            study=study,
            site_code=site_code,
            now=now,
        )
        # the report stays as signed; its SR, made again over the study as served, goes again
        queue_for(session=session, study=study, reason=REASON_STUDY_UPDATED, now=now)
    return done


def _version_of_arrival(
    a: Arrival, *, instance: Instance, calling_ae: str, reason: str, now: datetime
) -> InstanceVersion:
    return InstanceVersion(
        instance_id=instance.id,
        study_id=instance.study_id,
        sop_instance_uid=a.sop_instance_uid,
        series_instance_uid=a.series_instance_uid,
        object_key=a.object_key,
        size=a.size,
        sha256=a.sha256,
        transfer_syntax_uid=a.transfer_syntax_uid,
        calling_ae=calling_ae[:16],
        received_at=a.received_at,
        dicom_json=a.dicom_json,
        status=VERSION_NOT_APPLIED,
        reason=reason,
        recorded_at=now,
        detail={},
    )


def _update_study(study: Study, series: Series, a: Arrival) -> list[str]:
    """Header fields from the new version (empty values leave a field alone); the names of
    the fields that changed (never their values: they may name the patient)."""
    changed = []
    for name, limit in _STUDY_FIELDS.items():
        value = getattr(a, name)[:limit]
        if value and value != getattr(study, name):
            setattr(study, name, value)
            changed.append(name)
    for name, limit in _SERIES_FIELDS.items():
        value = getattr(a, name)[:limit]
        if value and value != getattr(series, name):
            setattr(series, name, value)
            changed.append(name)
    return changed


def _log(outcome: str, study: Study, a: Arrival, version_id: int, policy: str) -> None:
    logger.info(
        "re-sent instance recorded",
        extra={
            "action": f"instance_resend_{outcome}",
            "policy": policy,
            "version_id": version_id,
            "study_uid": study.study_instance_uid,
            "series_uid": a.series_instance_uid,
            "sop_uid": a.sop_instance_uid,
        },
    )


def list_versions(*, session: Session, study: Study) -> Sequence[InstanceVersion]:
    """The study's versions not served, newest record first."""
    return session.scalars(
        select(InstanceVersion)
        .where(InstanceVersion.study_id == study.id)
        .order_by(InstanceVersion.recorded_at.desc(), InstanceVersion.id.desc())
    ).all()


def get_version(*, session: Session, version_id: int) -> InstanceVersion | None:
    return session.get(InstanceVersion, version_id)


__all__ = [
    "KEPT_FIRST",
    "OLDER",
    "REPLACED",
    "Arrival",
    "Resend",
    "Split",
    "apply_resends",
    "get_version",
    "list_versions",
    "split_resends",
]
