"""Read triage text from a dataset's raw element bytes; triage files on disk."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from worklist.triage.charset import declared_terms, decode_text, strip_escapes
from worklist.triage.classify import MAX_REASONS, classify
from worklist.triage.normalise import normalise
from worklist.triage.result import TRIAGE_KEYWORDS, ExtractedText, TriageResult
from worklist.triage.rules import Category

logger = logging.getLogger(__name__)

SPECIFIC_CHARACTER_SET = 0x00080005
REQUEST_ATTRIBUTES_SEQUENCE = 0x00400275
# read from the top level and from each Request Attributes Sequence item
REQUEST_KEYWORDS = (
    "RequestedProcedureDescription",
    "ReasonForTheRequestedProcedure",
    "RequestedProcedurePriority",
)
_LATIN1_CODECS = {"", "ISO_IR 6", "ISO_IR 100", "ISO 2022 IR 6", "ISO 2022 IR 100"}


def _declared(ds: Dataset, inherited: list[str]) -> list[str]:
    elem = ds.get_item(SPECIFIC_CHARACTER_SET)
    if elem is None:
        return inherited
    value: Any = elem.value
    if isinstance(value, bytes):
        return declared_terms(value)
    if value is None:
        return []
    if isinstance(value, str):
        return declared_terms(value)
    return declared_terms([str(v) for v in value])


def _value_text(elem: RawDataElement | DataElement, declared: list[str]) -> tuple[str, list[str]]:
    value: Any = elem.value
    if value is None:
        return "", []
    if isinstance(value, bytes):
        return decode_text(value, declared)
    if not isinstance(value, str):
        value = "\\".join(str(v) for v in value)  # multi-valued, already decoded
    value = strip_escapes(value)
    if all(t in _LATIN1_CODECS for t in declared) and any(0x7F < ord(c) <= 0xFF for c in value):
        # pydicom already decoded it as Latin-1 (declared or default): get the bytes back
        try:
            return decode_text(value.encode("latin_1"), declared)
        except UnicodeEncodeError:
            pass
    return value.strip(" \x00"), []


def _read_into(
    ds: Dataset,
    declared: list[str],
    keywords: Sequence[str],
    out: dict[str, list[str]],
    notes: list[str],
) -> None:
    for kw in keywords:
        elem = ds.get_item(tag_for_keyword(kw) or 0)
        if elem is None:
            continue
        text, n = _value_text(elem, declared)
        notes.extend(f"{kw}: {note}" for note in n)
        text = normalise(text)
        if text and text not in out.setdefault(kw, []):
            out[kw].append(text)


def extract_text(ds: Dataset) -> ExtractedText:
    """Decoded, normalised triage text of a dataset (the header is enough), with notes.

    Values come from the raw element bytes when pydicom has not converted them yet (so a
    wrong Specific Character Set cannot spoil them); Request Attributes Sequence items add
    their requested procedure description, reason and priority.
    """
    declared = _declared(ds, [])
    found: dict[str, list[str]] = {}
    notes: list[str] = []
    _read_into(ds, declared, TRIAGE_KEYWORDS, found, notes)
    seq = ds.get_item(REQUEST_ATTRIBUTES_SEQUENCE)
    if seq is not None:
        try:
            items = ds[REQUEST_ATTRIBUTES_SEQUENCE].value or []
        except Exception as exc:  # a broken sequence must not stop triage of the rest
            notes.append(f"RequestAttributesSequence unreadable: {type(exc).__name__}")
            items = []
        for item in items:
            if isinstance(item, Dataset):
                _read_into(item, _declared(item, declared), REQUEST_KEYWORDS, found, notes)
    notes = list(dict.fromkeys(notes))
    if notes:
        logger.info(
            "triage text decoded with fallbacks",
            extra={
                "action": "triage_charset_fallback",
                "study_uid": str(ds.get("StudyInstanceUID", "")),
                "notes": notes,
            },
        )
    return ExtractedText(fields={k: " ; ".join(v) for k, v in found.items()}, notes=notes)


def triage_dataset(ds: Dataset, *, explicit: Category | None = None) -> TriageResult:
    """Extract and classify; character-set fallbacks are added to the reasons."""
    text = extract_text(ds)
    result = classify(text.fields, modality=text.fields.get("Modality"), explicit=explicit)
    if not text.notes:
        return result
    notes = tuple(f"charset: {n}" for n in text.notes)
    reasons = (*result.reasons[: MAX_REASONS - len(notes)], *notes)
    return TriageResult(result.category, result.priority, reasons)


def _files(paths: Sequence[str | Path]) -> Iterator[Path]:
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    yield Path(root) / name
        else:
            yield path


def _uid(ds: Dataset, keyword: str) -> str | None:
    elem = ds.get_item(tag_for_keyword(keyword) or 0)
    if elem is None or elem.value is None:
        return None
    value = elem.value
    text = value.decode("ascii", errors="replace") if isinstance(value, bytes) else str(value)
    return text.strip(" \x00") or None


def triage_file(path: str | Path) -> dict[str, Any]:
    """One file -> the ``teleread triage`` JSON object (an ``error`` key when unreadable)."""
    row: dict[str, Any] = {"path": str(path)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # odd files warn; the row reports what matters
            try:
                ds = dcmread(path, stop_before_pixels=True)
            except InvalidDicomError:
                # a dataset without the Part-10 preamble: accept it only if it has UIDs
                ds = dcmread(path, stop_before_pixels=True, force=True)
                if _uid(ds, "SOPInstanceUID") is None and _uid(ds, "StudyInstanceUID") is None:
                    row["error"] = "not a DICOM file"
                    return row
            if len(ds) == 0:
                row["error"] = "no dataset after the file meta header"
                return row
            result = triage_dataset(ds)
            row["sop_instance_uid"] = _uid(ds, "SOPInstanceUID")
            row["study_instance_uid"] = _uid(ds, "StudyInstanceUID")
    except InvalidDicomError:
        row["error"] = "not a DICOM file"
        return row
    except (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        TypeError,
        AttributeError,
        LookupError,
        NotImplementedError,
        OverflowError,
    ) as exc:
        row["error"] = f"unreadable: {type(exc).__name__}: {str(exc)[:200]}"
        return row
    row.update(category=result.category, priority=result.priority, reasons=list(result.reasons))
    return row


def read_paths(paths: Sequence[str | Path]) -> Iterator[dict[str, Any]]:
    """``teleread triage PATH...``: files or folders (recursive), one dict per file."""
    for path in _files(paths):
        yield triage_file(path)
