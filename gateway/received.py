"""What the gateway knows about a received instance, and what it can know before answering.

``ReceivedInstance`` is one instance ready for the spool. ``quick_instance`` is the C-STORE
fast path's view before the response: the dataset's structure checked and its UIDs read in
one pass (``gateway.wellformed``), no pydicom; the header's text and triage come after the
response (``gateway.instance.read_instance`` on the spooled file). The value helpers turn an
element's value, raw bytes or what pydicom made of it, into text the same way for both the
pydicom and the pydicom-free header reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.part10 import StoreMeta
from gateway.wellformed import UID_TAGS, check_structure
from storage.keys import instance_key, is_valid_uid
from worklist.triage import category_for_called_ae, classify, decode_text

URGENT_RANK = 0
ROUTINE_RANK = 1
# the ingest API's limits (viewer_api.schemas.InstanceIn): longer values are cut, not refused
TEXT_FIELDS: dict[str, tuple[str, int]] = {
    "modality": ("Modality", 16),
    "patient_name": ("PatientName", 200),
    "patient_id": ("PatientID", 64),
    "patient_sex": ("PatientSex", 16),
    "patient_birth_date": ("PatientBirthDate", 8),
    "accession_number": ("AccessionNumber", 64),
    "study_date": ("StudyDate", 8),
    "study_time": ("StudyTime", 32),
    "study_description": ("StudyDescription", 200),
    "series_description": ("SeriesDescription", 200),
    "body_part_examined": ("BodyPartExamined", 64),
}
# what quick_instance vouches for (the little endian syntaxes whose elements it can judge)
WALKABLE = frozenset(("1.2.840.10008.1.2", "1.2.840.10008.1.2.1"))
INT_FIELDS = {"series_number": "SeriesNumber", "instance_number": "InstanceNumber"}


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """What the C-STORE handler (``gateway.handlers.store_received``) needs to know about one
    request, whichever path read it off the wire."""

    calling_ae: str
    called_ae: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


@dataclass(slots=True)
class ReceivedInstance:
    """One parsed instance, ready for the spool."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    site: str
    calling_ae: str
    called_ae: str
    object_key: str
    category: str | None
    priority_rank: int
    # per-instance announcement fields (docs/contracts.md) without size, sha256, received_at
    # and dicom_json (added by the forwarder)
    payload: dict[str, Any] = field(default_factory=dict)
    # False: only the UIDs are known (``quick_instance``); the header is read after the
    # C-STORE response (``read_instance`` on the spooled file, by the forwarder)
    indexed: bool = True
    # known before the response either way: is it the patient of the study's earlier
    # instances (``Outbox.held_reason``)?
    patient_id: str = ""
    patient_name: str = ""


def text_of(value: Any, keyword: str, declared: str | None) -> tuple[str, list[str]]:
    """An element's value (raw bytes, or what pydicom converted it to) -> text and notes."""
    if value is None:
        return "", []
    if isinstance(value, bytes):
        text, notes = decode_text(value, declared)
        return text, [f"{keyword}: {n}" for n in notes]
    if isinstance(value, str):
        return value.strip(" \x00"), []
    return "\\".join(str(v) for v in value).strip(" \x00"), []


def declared_of(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    if isinstance(value, str):
        return value
    return "\\".join(str(v) for v in value)


def int_of(text: str) -> int | None:
    try:
        return int(text.split("\\")[0].strip())
    except ValueError:
        try:
            return int(float(text.split("\\")[0].strip()))
        except (ValueError, OverflowError):
            return None


def quick_instance(
    dataset: memoryview,
    file_meta: StoreMeta,
    *,
    site: str,
    calling_ae: str,
    called_ae: str,
    urgent_called_aes: Mapping[str, str],
) -> ReceivedInstance | None:
    """What must be known before answering a C-STORE, without pydicom: the dataset's top-level
    elements are well formed (tags ascending, lengths within the data, sequences delimited, up
    to the pixel data) and its UIDs valid and matching the request. None: not sure (another
    transfer syntax, anything odd): use ``read_instance``, which decides. The header's text
    fields and triage come later (``indexed`` False). Raises ``InvalidInstance`` for a dataset
    that is not a complete element sequence (``gateway.wellformed``, whose one pass over the
    elements also collects the UIDs)."""
    found: dict[int, bytes] = {}
    plain = check_structure(dataset, str(file_meta.TransferSyntaxUID), found)
    if file_meta.TransferSyntaxUID not in WALKABLE or not plain:
        return None
    try:
        uids = {name: found[tag].rstrip(b"\0 ").decode("ascii") for tag, name in UID_TAGS.items()}
    except (KeyError, UnicodeDecodeError):
        return None  # read_instance words the refusal
    if not all(is_valid_uid(u) for u in uids.values()):
        return None
    sop, sop_class = uids["SOPInstanceUID"], uids["SOPClassUID"]
    if (
        sop != file_meta.MediaStorageSOPInstanceUID
        or sop_class != file_meta.MediaStorageSOPClassUID
    ):
        return None
    study, series = uids["StudyInstanceUID"], uids["SeriesInstanceUID"]
    explicit = category_for_called_ae(called_ae, urgent_called_aes)
    declared = declared_of(found.get(0x00080005))  # Specific Character Set
    patient_id, _ = text_of(found.get(0x00100020), "PatientID", declared)
    patient_name, _ = text_of(found.get(0x00100010), "PatientName", declared)
    return ReceivedInstance(
        sop_class_uid=sop_class,
        sop_instance_uid=sop,
        series_instance_uid=series,
        study_instance_uid=study,
        transfer_syntax_uid=file_meta.TransferSyntaxUID,
        site=site,
        calling_ae=calling_ae,
        called_ae=called_ae,
        object_key=instance_key(site, study, series, sop),
        category=explicit,
        priority_rank=URGENT_RANK if explicit else ROUTINE_RANK,
        indexed=False,
        patient_id=patient_id[: TEXT_FIELDS["patient_id"][1]],
        patient_name=patient_name[: TEXT_FIELDS["patient_name"][1]],
    )


def triaged_instance(
    payload: dict[str, Any],
    fields: dict[str, str],
    charset_notes: list[str],
    *,
    site: str,
    calling_ae: str,
    called_ae: str,
    urgent_called_aes: Mapping[str, str],
) -> ReceivedInstance:
    """A header read's end (pydicom's or not): ``payload`` (UIDs, object key, text and number
    fields) completed with the triage text ``fields``, the charset notes and the triage."""
    explicit = category_for_called_ae(called_ae, urgent_called_aes)
    triage = classify(fields, modality=fields.get("Modality") or None, explicit=explicit)
    payload["text_fields"] = fields
    payload["charset_notes"] = charset_notes
    payload["urgent_hint"] = {
        "category": triage.category,
        "priority": triage.priority,
        "reasons": [r.to_json() for r in triage.reasons],
    }
    return ReceivedInstance(
        sop_class_uid=payload["sop_class_uid"],
        sop_instance_uid=payload["sop_instance_uid"],
        series_instance_uid=payload["series_instance_uid"],
        study_instance_uid=payload["study_instance_uid"],
        transfer_syntax_uid=payload["transfer_syntax_uid"],
        site=site,
        calling_ae=calling_ae,
        called_ae=called_ae,
        object_key=payload["object_key"],
        category=triage.category,
        priority_rank=URGENT_RANK if triage.priority == "stat" else ROUTINE_RANK,
        payload=payload,
        patient_id=str(payload.get("patient_id") or ""),
        patient_name=str(payload.get("patient_name") or ""),
    )


__all__ = [
    "INT_FIELDS",
    "ROUTINE_RANK",
    "TEXT_FIELDS",
    "URGENT_RANK",
    "WALKABLE",
    "ReceivedInstance",
    "StoreRequest",
    "declared_of",
    "int_of",
    "quick_instance",
    "text_of",
    "triaged_instance",
]
