"""A received C-STORE dataset -> the Part-10 bytes to spool and what the county must know.

The dataset bytes are never re-encoded: the file is the gateway's file meta header followed by
the dataset exactly as it came off the wire. Its header is parsed (``stop_before_pixels``) only
to read UIDs, the worklist's header fields and the triage text, all decoded to Unicode with
``worklist.triage.decode_text`` (township scanners often declare the wrong character set).

A spooled file's header (the forwarder's deferred read, ``read_instance(data, None, ...)``)
is read without pydicom when ``gateway.header_read`` vouches for it, its text decoded once per
series (``_text_part``'s cache) and classified once (``classify``'s memo): ~85 us instead of
~530 us per 512x512 CT slice (``bench/header_read.py``), with exactly the same result, which
``tests/unit/test_gateway_header_read.py`` checks against ``read_instance_pydicom``.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset

from gateway import status
from gateway.errors import InvalidInstance
from gateway.header_read import read_header
from gateway.part10 import (
    PREAMBLE,
    SPOOL_INFO_CREATOR_UID,
    StoreMeta,
    encode_meta,
    part10_bytes,
    spool_info_of,
)
from gateway.wellformed import UID_TAGS, check_structure
from storage.keys import instance_key, is_valid_uid
from worklist.triage import (
    TRIAGE_KEYWORDS,
    category_for_called_ae,
    classify,
    decode_text,
    extract_text,
    extract_text_values,
    log_notes,
)

__all__ = [
    "MAX_DICOM_JSON_BYTES",
    "PREAMBLE",
    "ROUTINE_RANK",
    "SPOOL_INFO_CREATOR_UID",
    "URGENT_RANK",
    "ReceivedInstance",
    "StoreMeta",
    "encode_meta",
    "header_json",
    "part10_bytes",
    "quick_instance",
    "read_instance",
    "read_instance_pydicom",
    "spool_info_of",
    "spooled_header_json",
]

logger = logging.getLogger(__name__)

URGENT_RANK = 0
ROUTINE_RANK = 1
MAX_DICOM_JSON_BYTES = 256 * 1024
# the ingest API's limits (viewer_api.schemas.InstanceIn): longer values are cut, not refused
_TEXT_FIELDS: dict[str, tuple[str, int]] = {
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
_INT_FIELDS = {"series_number": "SeriesNumber", "instance_number": "InstanceNumber"}
# pydicom warns about odd values while parsing; warning filters are process-global, so the
# parse (GIL-bound anyway) runs under one lock while they are switched off
_PARSE_LOCK = threading.Lock()


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


def _dataset_bytes(part10: bytes) -> memoryview:
    """The dataset of a ``part10_bytes`` file (after the file meta group, whose length is
    its first element)."""
    (group_length,) = struct.unpack_from("<L", part10, len(PREAMBLE) + 8)
    return memoryview(part10)[len(PREAMBLE) + 12 + group_length :]


def _text_of(value: Any, keyword: str, declared: str | None) -> tuple[str, list[str]]:
    """An element's value (raw bytes, or what pydicom converted it to) -> text and notes."""
    if value is None:
        return "", []
    if isinstance(value, bytes):
        text, notes = decode_text(value, declared)
        return text, [f"{keyword}: {n}" for n in notes]
    if isinstance(value, str):
        return value.strip(" \x00"), []
    return "\\".join(str(v) for v in value).strip(" \x00"), []


def _raw_text(ds: Dataset, keyword: str, declared: str | None) -> tuple[str, list[str]]:
    elem: RawDataElement | DataElement | None = ds.get_item(tag_for_keyword(keyword) or 0)
    if elem is None:
        return "", []
    return _text_of(elem.value, keyword, declared)


def _declared_of(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    if isinstance(value, str):
        return value
    return "\\".join(str(v) for v in value)


def _declared_charset(ds: Dataset) -> str | None:
    elem = ds.get_item(0x00080005)
    return None if elem is None else _declared_of(elem.value)


def _uid(ds: Dataset, keyword: str) -> str:
    text, _ = _raw_text(ds, keyword, None)
    return text


def _int_of(text: str) -> int | None:
    try:
        return int(text.split("\\")[0].strip())
    except ValueError:
        try:
            return int(float(text.split("\\")[0].strip()))
        except (ValueError, OverflowError):
            return None


def _int(ds: Dataset, keyword: str) -> int | None:
    text, _ = _raw_text(ds, keyword, None)
    return _int_of(text)


def _drop_bulk(data: dict[str, Any]) -> None:
    for tag in list(data):
        element = data[tag]
        if "BulkDataURI" in element:
            del data[tag]
            continue
        for item in element.get("Value", []) if element.get("vr") == "SQ" else []:
            if isinstance(item, dict):
                _drop_bulk(item)


def header_json(ds: Dataset, patient_name: str) -> dict[str, Any] | None:
    """The header as DICOM JSON without bulk data (None when it cannot be made or is huge)."""
    try:
        data = ds.to_json_dict(
            bulk_data_threshold=1024,
            bulk_data_element_handler=lambda _elem: "",
            suppress_invalid_tags=True,
        )
    except Exception as exc:
        logger.info(
            "header not convertible to DICOM JSON",
            extra={"action": "dicom_json_skipped", "error": type(exc).__name__},
        )
        return None
    _drop_bulk(data)
    if "00100010" in data:  # our decoding of the name, not pydicom's guess
        data["00100010"] = {"vr": "PN", "Value": [{"Alphabetic": patient_name}]}
    if len(json.dumps(data, ensure_ascii=False)) > MAX_DICOM_JSON_BYTES:
        return None
    return data


def spooled_header_json(path: Path | BinaryIO, patient_name: str) -> dict[str, Any] | None:
    """``header_json`` of a spooled file (the forwarder adds it when announcing, off the
    C-STORE response's critical path)."""
    with _PARSE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception:
            return None
        return header_json(ds, patient_name)


def _parse(data: bytes) -> Dataset:
    with _PARSE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return dcmread(BytesIO(data), stop_before_pixels=True)
        except Exception as exc:  # any parse failure is the sender's problem, not ours
            raise InvalidInstance(
                f"dataset not parseable: {type(exc).__name__}: {str(exc)[:200]}"
            ) from exc


def _check(ds: Dataset, file_meta: Any) -> tuple[str, str, str, str]:
    sop_class = _uid(ds, "SOPClassUID")
    sop = _uid(ds, "SOPInstanceUID")
    series = _uid(ds, "SeriesInstanceUID")
    study = _uid(ds, "StudyInstanceUID")
    for name, value in (
        ("SOPClassUID", sop_class),
        ("SOPInstanceUID", sop),
        ("SeriesInstanceUID", series),
        ("StudyInstanceUID", study),
    ):
        if not is_valid_uid(value):
            raise InvalidInstance(
                f"{name} missing or not a valid UID: {value[:70]!r}",
                status=status.CANNOT_UNDERSTAND,
            )
    if sop != str(file_meta.MediaStorageSOPInstanceUID):
        raise InvalidInstance(
            "SOPInstanceUID differs from the request's Affected SOP Instance",
            status=status.CANNOT_UNDERSTAND,
        )
    if sop_class != str(file_meta.MediaStorageSOPClassUID):
        raise InvalidInstance(
            "SOPClassUID differs from the request's Affected SOP Class",
            status=status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
        )
    return sop_class, sop, series, study


def read_instance(
    data: bytes,
    file_meta: FileMetaDataset | StoreMeta | None,
    *,
    site: str,
    calling_ae: str,
    called_ae: str,
    urgent_called_aes: Mapping[str, str],
) -> ReceivedInstance:
    """Parse the header of a spooled-to-be Part-10 file; raise ``InvalidInstance``.
    ``file_meta`` None: the file's own (a spooled file); its header is then read without
    pydicom when ``gateway.header_read`` vouches for it (the same result, a fraction of the
    CPU), else with pydicom (``read_instance_pydicom``)."""
    args: dict[str, Any] = {
        "site": site,
        "calling_ae": calling_ae,
        "called_ae": called_ae,
        "urgent_called_aes": urgent_called_aes,
    }
    if file_meta is None:
        inst = _read_spooled(data, **args)
        if inst is not None:
            return inst
    return read_instance_pydicom(data, file_meta, **args)


def read_instance_pydicom(
    data: bytes,
    file_meta: FileMetaDataset | StoreMeta | None,
    *,
    site: str,
    calling_ae: str,
    called_ae: str,
    urgent_called_aes: Mapping[str, str],
) -> ReceivedInstance:
    """``read_instance`` with pydicom (``dcmread(stop_before_pixels=True)``): any file."""
    if file_meta is not None:  # a spooled file was checked before its ACK
        check_structure(_dataset_bytes(data), str(file_meta.TransferSyntaxUID))
    ds = _parse(data)
    if file_meta is None:
        file_meta = ds.file_meta
    sop_class, sop, series, study = _check(ds, file_meta)
    declared = _declared_charset(ds)
    payload: dict[str, Any] = {
        "study_instance_uid": study,
        "series_instance_uid": series,
        "sop_instance_uid": sop,
        "sop_class_uid": sop_class,
        "transfer_syntax_uid": str(file_meta.TransferSyntaxUID),
        "object_key": instance_key(study, series, sop),
    }
    notes: list[str] = []
    with _PARSE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (keyword, limit) in _TEXT_FIELDS.items():
            text, n = _raw_text(ds, keyword, declared)
            payload[name] = text[:limit]
            notes.extend(n)
        for name, keyword in _INT_FIELDS.items():
            payload[name] = _int(ds, keyword)
        extracted = extract_text(ds)
    explicit = category_for_called_ae(called_ae, urgent_called_aes)
    fields = extracted.fields
    triage = classify(fields, modality=fields.get("Modality") or None, explicit=explicit)
    payload["text_fields"] = fields
    payload["charset_notes"] = list(dict.fromkeys([*extracted.notes, *notes]))
    payload["urgent_hint"] = {
        "category": triage.category,
        "priority": triage.priority,
        "reasons": list(triage.reasons),
    }
    return ReceivedInstance(
        sop_class_uid=sop_class,
        sop_instance_uid=sop,
        series_instance_uid=series,
        study_instance_uid=study,
        transfer_syntax_uid=str(file_meta.TransferSyntaxUID),
        site=site,
        calling_ae=calling_ae,
        called_ae=called_ae,
        object_key=payload["object_key"],
        category=triage.category,
        priority_rank=URGENT_RANK if triage.priority == "stat" else ROUTINE_RANK,
        payload=payload,
    )


# -- a spooled file's header without pydicom ------------------------------------------------

_CHARSET = 0x00080005
_REQUEST_ATTRIBUTES_SEQUENCE = 0x00400275
_UID_FIELDS = tuple(
    (keyword, tag_for_keyword(keyword) or 0)
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
)
_TEXT_TAGS = tuple(
    (name, keyword, limit, tag_for_keyword(keyword) or 0)
    for name, (keyword, limit) in _TEXT_FIELDS.items()
)
_INT_TAGS = tuple((name, tag_for_keyword(keyword) or 0) for name, keyword in _INT_FIELDS.items())
_TRIAGE_TAGS = tuple(tag_for_keyword(keyword) or 0 for keyword in TRIAGE_KEYWORDS)
_REQUEST_TAGS = frozenset(
    [_CHARSET]
    + [
        tag_for_keyword(keyword) or 0
        for keyword in (
            "RequestedProcedureDescription",
            "ReasonForTheRequestedProcedure",
            "RequestedProcedurePriority",
        )
    ]
)
# the text part's inputs: the character set, the payload's text fields, the triage text
_TEXT_KEY_TAGS = tuple(dict.fromkeys([_CHARSET, *(t[3] for t in _TEXT_TAGS), *_TRIAGE_TAGS]))
_WANTED = frozenset(
    [*_TEXT_KEY_TAGS, *(tag for _, tag in _UID_FIELDS), *(tag for _, tag in _INT_TAGS)]
)
_ABSENT = object()
_TEXT_CACHE_SIZE = 256


@dataclass(frozen=True, slots=True)
class _TextPart:
    """What a header's text elements decode to (the same for every instance of a series)."""

    texts: tuple[tuple[str, str], ...]  # payload name -> text, in _TEXT_FIELDS order
    fields: dict[str, str]  # triage text fields (copied before use)
    extracted_notes: tuple[str, ...]  # extract_text_values' notes (logged)
    charset_notes: tuple[str, ...]


_text_cache: dict[tuple[Any, ...], _TextPart] = {}


def _text_part(values: Mapping[int, Any], items: list[dict[int, Any]] | None) -> _TextPart:
    """Decode the text elements; cached by their raw bytes (decoding is a pure function of
    them), so the instances of a series after the first cost a dictionary look-up."""
    key = (
        tuple(values.get(tag, _ABSENT) for tag in _TEXT_KEY_TAGS),
        None if items is None else tuple(tuple(sorted(item.items())) for item in items),
    )
    part = _text_cache.get(key)
    if part is not None:
        return part
    declared = _declared_of(values[_CHARSET]) if _CHARSET in values else None
    texts: list[tuple[str, str]] = []
    notes: list[str] = []
    for name, keyword, limit, tag in _TEXT_TAGS:
        text, n = _text_of(values[tag], keyword, declared) if tag in values else ("", [])
        texts.append((name, text[:limit]))
        notes.extend(n)
    extracted = extract_text_values(values, items or ())
    part = _TextPart(
        texts=tuple(texts),
        fields=extracted.fields,
        extracted_notes=tuple(extracted.notes),
        charset_notes=tuple(dict.fromkeys([*extracted.notes, *notes])),
    )
    if len(_text_cache) >= _TEXT_CACHE_SIZE:
        _text_cache.clear()
    _text_cache[key] = part
    return part


def _read_spooled(
    data: bytes,
    *,
    site: str,
    calling_ae: str,
    called_ae: str,
    urgent_called_aes: Mapping[str, str],
) -> ReceivedInstance | None:
    """``read_instance_pydicom(data, None, ...)`` for the headers ``header_read`` vouches for,
    without pydicom; None: not sure, or the instance is to be refused (pydicom words it)."""
    raw = read_header(data, _WANTED, _REQUEST_ATTRIBUTES_SEQUENCE, _REQUEST_TAGS)
    if raw is None:
        return None
    values = raw.values
    uids = [
        _text_of(values[tag], keyword, None)[0] if tag in values else ""
        for keyword, tag in _UID_FIELDS
    ]
    if not all(is_valid_uid(u) for u in uids):
        return None
    sop_class, sop, series, study = uids
    if sop != raw.media_storage_sop_instance_uid or sop_class != raw.media_storage_sop_class_uid:
        return None
    object_key = instance_key(study, series, sop)
    payload: dict[str, Any] = {
        "study_instance_uid": study,
        "series_instance_uid": series,
        "sop_instance_uid": sop,
        "sop_class_uid": sop_class,
        "transfer_syntax_uid": raw.transfer_syntax_uid,
        "object_key": object_key,
    }
    part = _text_part(values, raw.items)
    payload.update(part.texts)
    for name, tag in _INT_TAGS:
        payload[name] = _int_of(_text_of(values[tag], name, None)[0]) if tag in values else None
    log_notes(part.extracted_notes, study)
    explicit = category_for_called_ae(called_ae, urgent_called_aes)
    fields = dict(part.fields)
    triage = classify(fields, modality=fields.get("Modality") or None, explicit=explicit)
    payload["text_fields"] = fields
    payload["charset_notes"] = list(part.charset_notes)
    payload["urgent_hint"] = {
        "category": triage.category,
        "priority": triage.priority,
        "reasons": list(triage.reasons),
    }
    return ReceivedInstance(
        sop_class_uid=sop_class,
        sop_instance_uid=sop,
        series_instance_uid=series,
        study_instance_uid=study,
        transfer_syntax_uid=raw.transfer_syntax_uid,
        site=site,
        calling_ae=calling_ae,
        called_ae=called_ae,
        object_key=object_key,
        category=triage.category,
        priority_rank=URGENT_RANK if triage.priority == "stat" else ROUTINE_RANK,
        payload=payload,
    )


# -- the fast path before the C-STORE response ----------------------------------------------


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
    return ReceivedInstance(
        sop_class_uid=sop_class,
        sop_instance_uid=sop,
        series_instance_uid=series,
        study_instance_uid=study,
        transfer_syntax_uid=file_meta.TransferSyntaxUID,
        site=site,
        calling_ae=calling_ae,
        called_ae=called_ae,
        object_key=instance_key(study, series, sop),
        category=explicit,
        priority_rank=URGENT_RANK if explicit else ROUTINE_RANK,
        indexed=False,
    )
