"""A received C-STORE dataset -> the Part-10 bytes to spool and what the county must know.

The dataset bytes are never re-encoded: the file is the gateway's file meta header followed by
the dataset exactly as it came off the wire. Its header is parsed (``stop_before_pixels``) only
to read UIDs, the worklist's header fields and the triage text, all decoded to Unicode with
``worklist.triage.decode_text`` (township scanners often declare the wrong character set).

A spooled file's header (the forwarder's deferred read, ``read_instance(data, None, ...)``)
is read without pydicom when ``gateway.header_read`` vouches for it
(``gateway.spooled_header``), with exactly the same result as ``read_instance_pydicom``. That
reader mirrors pydicom 3.0.2's, so it is fenced like the DICOM fast path:
``TELEREAD_GATEWAY_HEADER_READER=auto`` uses it only on the pydicom version it was verified
against (``VERIFIED_PYDICOM``; ``tests/unit/test_gateway_header_read.py`` pins the pydicom
sources it mirrors and checks the results alike), else pydicom, the stock path; ``pydicom``
always reads with pydicom.
What is known before the C-STORE response: ``gateway.received.quick_instance``; the file meta
header: ``gateway.part10``.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import threading
import warnings
from collections.abc import Mapping
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO, Literal

import pydicom
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset

from gateway import status
from gateway.errors import InvalidInstance
from gateway.part10 import PREAMBLE, StoreMeta
from gateway.received import (
    INT_FIELDS,
    TEXT_FIELDS,
    ReceivedInstance,
    declared_of,
    int_of,
    text_of,
    triaged_instance,
)
from gateway.spooled_header import read_spooled
from gateway.wellformed import check_structure
from storage.header_json import header_json as dicom_header_json
from storage.keys import instance_key, is_valid_uid
from worklist.triage import extract_text

logger = logging.getLogger(__name__)

MAX_DICOM_JSON_BYTES = 256 * 1024

# pydicom warns about odd values while parsing; warning filters are process-global, so the
# parse (GIL-bound anyway) runs under one lock while they are switched off
_PARSE_LOCK = threading.Lock()


Part10 = bytes | memoryview  # a whole file's bytes, or a view of a mapped spool file


class _ViewReader(io.RawIOBase):
    """A read-only, seekable stream over a memoryview, without copying it (``BytesIO``
    would copy a mapped file whole; pydicom reads only the header)."""

    def __init__(self, view: memoryview) -> None:
        self._view = view.cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._view[self._pos : self._pos + len(buffer)]
        n = len(chunk)
        buffer[:n] = chunk
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _dataset_bytes(part10: Part10) -> memoryview:
    """The dataset of a ``part10_bytes`` file (after the file meta group, whose length is
    its first element)."""
    (group_length,) = struct.unpack_from("<L", part10, len(PREAMBLE) + 8)
    return memoryview(part10)[len(PREAMBLE) + 12 + group_length :]


def _raw_text(ds: Dataset, keyword: str, declared: str | None) -> tuple[str, list[str]]:
    elem: RawDataElement | DataElement | None = ds.get_item(tag_for_keyword(keyword) or 0)
    if elem is None:
        return "", []
    return text_of(elem.value, keyword, declared)


def _declared_charset(ds: Dataset) -> str | None:
    elem = ds.get_item(0x00080005)
    return None if elem is None else declared_of(elem.value)


def _uid(ds: Dataset, keyword: str) -> str:
    text, _ = _raw_text(ds, keyword, None)
    return text


def _int(ds: Dataset, keyword: str) -> int | None:
    text, _ = _raw_text(ds, keyword, None)
    return int_of(text)


def header_json(ds: Dataset, patient_name: str) -> dict[str, Any] | None:
    """The header as DICOM JSON, large binary values as relative BulkDataURIs and invalid
    values kept (``storage.header_json``); None when it cannot be made or is huge. Call with
    pydicom's warnings silenced (``_PARSE_LOCK``)."""
    try:
        made = dicom_header_json(ds)
    except Exception as exc:
        logger.info(
            "header not convertible to DICOM JSON",
            extra={"action": "dicom_json_skipped", "error": type(exc).__name__},
        )
        return None
    data = made.data
    if made.invalid:
        logger.info(
            "header values kept as they came (not valid for their VR)",
            extra={
                "action": "dicom_json_invalid_values",
                "sop_uid": str(ds.get("SOPInstanceUID", "")),
                "tags": made.invalid[:20],
            },
        )
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


def _parse(data: Part10) -> Dataset:
    with _PARSE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            source = BytesIO(data) if isinstance(data, bytes) else _ViewReader(data)
            return dcmread(source, stop_before_pixels=True)
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


VERIFIED_PYDICOM = "3.0.2"
HeaderReader = Literal["auto", "pydicom"]


def pydicom_free_reads(setting: str = "auto", version: str | None = None) -> bool:
    """Whether a spooled file's header may be read without pydicom: ``auto`` on the pydicom
    version ``gateway.header_read`` was verified against (``version``: the installed one)."""
    version = pydicom.__version__ if version is None else version
    return setting == "auto" and version == VERIFIED_PYDICOM


def read_instance(
    data: Part10,
    file_meta: FileMetaDataset | StoreMeta | None,
    *,
    site: str,
    calling_ae: str,
    called_ae: str,
    urgent_called_aes: Mapping[str, str],
    header_reader: HeaderReader = "auto",
) -> ReceivedInstance:
    """Parse the header of a spooled-to-be Part-10 file; raise ``InvalidInstance``.
    ``file_meta`` None: the file's own (a spooled file); its header is then read without
    pydicom when ``header_reader`` allows (``pydicom_free_reads``) and ``gateway.header_read``
    vouches for it (the same result, a fraction of the CPU), else with pydicom
    (``read_instance_pydicom``)."""
    args: dict[str, Any] = {
        "site": site,
        "calling_ae": calling_ae,
        "called_ae": called_ae,
        "urgent_called_aes": urgent_called_aes,
    }
    if file_meta is None and pydicom_free_reads(header_reader):
        inst = read_spooled(data, **args)
        if inst is not None:
            return inst
    return read_instance_pydicom(data, file_meta, **args)


def read_instance_pydicom(
    data: Part10,
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
        "object_key": instance_key(site, study, series, sop),
    }
    notes: list[str] = []
    with _PARSE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (keyword, limit) in TEXT_FIELDS.items():
            text, n = _raw_text(ds, keyword, declared)
            payload[name] = text[:limit]
            notes.extend(n)
        for name, keyword in INT_FIELDS.items():
            payload[name] = _int(ds, keyword)
        extracted = extract_text(ds)
    return triaged_instance(
        payload,
        extracted.fields,
        list(dict.fromkeys([*extracted.notes, *notes])),
        site=site,
        calling_ae=calling_ae,
        called_ae=called_ae,
        urgent_called_aes=urgent_called_aes,
    )
