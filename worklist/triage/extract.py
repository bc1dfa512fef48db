"""Read triage text from a dataset's raw element bytes; triage files on disk."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as PydicomSequence

from worklist.triage.charset import declared_terms, decode_text, strip_escapes
from worklist.triage.classify import MAX_REASONS, classify, explain
from worklist.triage.codes import (
    CODE_MEANING,
    CODE_SEQUENCE_KEYWORDS,
    CODE_VALUE,
    CODING_SCHEME,
    ITEM_SEPARATOR,
    LONG_CODE_VALUE,
    REQUEST_CODE_SEQUENCE_KEYWORDS,
    code_text,
)
from worklist.triage.normalise import normalise
from worklist.triage.result import TRIAGE_KEYWORDS, ExtractedText, Reason, TriageResult
from worklist.triage.rules import Category

logger = logging.getLogger(__name__)

SPECIFIC_CHARACTER_SET = 0x00080005
REQUEST_ATTRIBUTES_SEQUENCE = 0x00400275
# read from the top level and from each Request Attributes Sequence item
REQUEST_KEYWORDS = (
    "RequestedProcedureDescription",
    "ReasonForTheRequestedProcedure",
    "RequestedProcedurePriority",
    "ScheduledProcedureStepDescription",
)
_LATIN1_CODECS = {"", "ISO_IR 6", "ISO_IR 100", "ISO 2022 IR 6", "ISO 2022 IR 100"}


# ``get`` below: tag -> the element's value (raw bytes while pydicom has not converted it),
# or _ABSENT when the dataset has no such element
_ABSENT: Any = object()
_TRIAGE_TAGS = tuple((kw, tag_for_keyword(kw) or 0) for kw in TRIAGE_KEYWORDS)
_REQUEST_TAGS = tuple((kw, tag_for_keyword(kw) or 0) for kw in REQUEST_KEYWORDS)
_SEQUENCE_TAGS = {
    REQUEST_ATTRIBUTES_SEQUENCE: "RequestAttributesSequence",
    **{tag_for_keyword(kw) or 0: kw for kw in CODE_SEQUENCE_KEYWORDS},
    **{tag_for_keyword(kw) or 0: kw for kw in REQUEST_CODE_SEQUENCE_KEYWORDS},
}
_CODE_TAGS = tuple((kw, tag_for_keyword(kw) or 0) for kw in CODE_SEQUENCE_KEYWORDS)
_REQUEST_CODE_TAGS = tuple((kw, tag_for_keyword(kw) or 0) for kw in REQUEST_CODE_SEQUENCE_KEYWORDS)


def _declared_of(value: Any, inherited: list[str]) -> list[str]:
    if value is _ABSENT:
        return inherited
    if isinstance(value, bytes):
        return declared_terms(value)
    if value is None:
        return []
    if isinstance(value, str):
        return declared_terms(value)
    return declared_terms([str(v) for v in value])


def _declared(ds: Dataset, inherited: list[str]) -> list[str]:
    elem = ds.get_item(SPECIFIC_CHARACTER_SET)
    return _declared_of(_ABSENT if elem is None else elem.value, inherited)


def _value_text(value: Any, declared: list[str]) -> tuple[str, list[str]]:
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
    get: Callable[[int], Any],
    declared: list[str],
    keywords: Sequence[tuple[str, int]],
    out: dict[str, list[str]],
    notes: list[str],
) -> None:
    for kw, tag in keywords:
        value = get(tag)
        if value is _ABSENT:
            continue
        text, n = _value_text(value, declared)
        notes.extend(f"{kw}: {note}" for note in n)
        text = normalise(text)
        if text and text not in out.setdefault(kw, []):
            out[kw].append(text)


def _read_codes(
    get: Callable[[int], Any],
    declared: list[str],
    keywords: Sequence[tuple[str, int]],
    out: dict[str, list[str]],
    notes: list[str],
) -> None:
    """Code sequence items as ``VALUE^SCHEME^MEANING`` texts (``worklist.triage.codes``).
    ``get(tag)`` gives a sequence as pydicom's Datasets or as tag -> raw value mappings;
    anything else there (a value pydicom did not read as a sequence) is passed over."""
    for kw, tag in keywords:
        items = get(tag)
        if items is _ABSENT or not isinstance(items, list):
            continue
        for item in items:
            if isinstance(item, Dataset):
                item_get = _getter(item)
            elif isinstance(item, Mapping):
                item_get = _mapping_getter(item)
            else:
                continue
            item_declared = _declared_of(item_get(SPECIFIC_CHARACTER_SET), declared)
            parts: list[str] = []
            for part_tag in (CODE_VALUE, CODING_SCHEME, CODE_MEANING):
                value = item_get(part_tag)
                if part_tag == CODE_VALUE and value in (_ABSENT, None, b"", ""):
                    value = item_get(LONG_CODE_VALUE)
                text, n = ("", []) if value is _ABSENT else _value_text(value, item_declared)
                notes.extend(f"{kw}: {note}" for note in n)
                parts.append(normalise(text))
            text = code_text(*parts)
            if text and text not in out.setdefault(kw, []):
                out[kw].append(text)


def _getter(ds: Dataset) -> Callable[[int], Any]:
    def get(tag: int) -> Any:
        elem = ds.get_item(tag)
        return _ABSENT if elem is None else elem.value

    return get


def _finish(found: dict[str, list[str]], notes: list[str]) -> ExtractedText:
    return ExtractedText(
        fields={k: ITEM_SEPARATOR.join(v) for k, v in found.items() if v},
        notes=list(dict.fromkeys(notes)),
    )


def log_notes(notes: Sequence[str], study_uid: str) -> None:
    """The log line ``extract_text`` writes when text needed charset fallbacks."""
    if notes:
        logger.info(
            "triage text decoded with fallbacks",
            extra={
                "action": "triage_charset_fallback",
                "study_uid": study_uid,
                "notes": list(notes),
            },
        )


def extract_text(ds: Dataset) -> ExtractedText:
    """Decoded, normalised triage text of a dataset (the header is enough), with notes.

    Values come from the raw element bytes when pydicom has not converted them yet (so a
    wrong Specific Character Set cannot spoil them); Request Attributes Sequence items add
    their requested procedure description, reason and priority.
    """
    declared = _declared(ds, [])
    found: dict[str, list[str]] = {}
    notes: list[str] = []
    get = _sequence_getter(ds, notes)
    _read_into(get, declared, _TRIAGE_TAGS, found, notes)
    _read_codes(get, declared, _CODE_TAGS, found, notes)
    items = get(REQUEST_ATTRIBUTES_SEQUENCE)
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Dataset):
            item_get = _sequence_getter(item, notes)
            item_declared = _declared(item, declared)
            _read_into(item_get, item_declared, _REQUEST_TAGS, found, notes)
            _read_codes(item_get, item_declared, _REQUEST_CODE_TAGS, found, notes)
    text = _finish(found, notes)
    if text.notes:
        log_notes(text.notes, str(ds.get("StudyInstanceUID", "")))
    return text


def extract_text_values(
    values: Mapping[int, Any], request_items: Sequence[Mapping[int, Any]] = ()
) -> ExtractedText:
    """``extract_text`` of a header already split into element values, as pydicom's
    ``RawDataElement.value`` holds them (raw bytes; None for an empty implicit VR value):
    ``values`` maps the top level's tags, ``request_items`` the Request Attributes Sequence
    items'. Writes no log line (``log_notes`` does)."""
    get = _mapping_getter(values)
    declared = _declared_of(get(SPECIFIC_CHARACTER_SET), [])
    found: dict[str, list[str]] = {}
    notes: list[str] = []
    _read_into(get, declared, _TRIAGE_TAGS, found, notes)
    _read_codes(get, declared, _CODE_TAGS, found, notes)
    for item in request_items:
        item_get = _mapping_getter(item)
        item_declared = _declared_of(item_get(SPECIFIC_CHARACTER_SET), declared)
        _read_into(item_get, item_declared, _REQUEST_TAGS, found, notes)
        _read_codes(item_get, item_declared, _REQUEST_CODE_TAGS, found, notes)
    return _finish(found, notes)


def _sequence_getter(ds: Dataset, notes: list[str]) -> Callable[[int], Any]:
    """``_getter`` that also gives a sequence's items as a list (its value as pydicom read
    it; a sequence pydicom cannot read is noted and passed over, never stops triage)."""
    plain = _getter(ds)

    def get(tag: int) -> Any:
        value = plain(tag)
        if value is _ABSENT or tag not in _SEQUENCE_TAGS:
            return value
        try:
            items = ds[tag].value
        except Exception as exc:  # a broken sequence must not stop triage of the rest
            notes.append(f"{_SEQUENCE_TAGS[tag]} unreadable: {type(exc).__name__}")
            return _ABSENT
        return list(items) if isinstance(items, PydicomSequence) else _ABSENT

    return get


def _mapping_getter(values: Mapping[int, Any]) -> Callable[[int], Any]:
    def get(tag: int) -> Any:
        return values.get(tag, _ABSENT)

    return get


def triage_dataset(ds: Dataset, *, explicit: Category | None = None) -> TriageResult:
    """Extract and classify; character-set fallbacks are added to the reasons."""
    return _triage_text(extract_text(ds), explicit)


def _triage_text(text: ExtractedText, explicit: Category | None) -> TriageResult:
    result = classify(text.fields, modality=text.fields.get("Modality"), explicit=explicit)
    if not text.notes:
        return result
    notes = tuple(Reason("charset", note=n) for n in text.notes)
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


def triage_file(path: str | Path, *, explain_terms: bool = False) -> dict[str, Any]:
    """One file -> the ``teleread triage`` JSON object (an ``error`` key when unreadable);
    ``explain_terms``: also ``explain``, every matched term with its family and source."""
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
            text = extract_text(ds)
            result = _triage_text(text, None)
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
    reasons = [str(r) for r in result.reasons]
    row.update(category=result.category, priority=result.priority, reasons=reasons)
    if explain_terms:
        row["explain"] = explain(text.fields, modality=text.fields.get("Modality"))
    return row


def read_paths(
    paths: Sequence[str | Path], *, explain_terms: bool = False
) -> Iterator[dict[str, Any]]:
    """``teleread triage [--explain] PATH...``: files or folders (recursive), one dict per
    file."""
    for path in _files(paths):
        yield triage_file(path, explain_terms=explain_terms)
