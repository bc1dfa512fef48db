"""A spooled file's header read without pydicom (the forwarder's deferred read).

``read_spooled`` does what ``gateway.instance.read_instance_pydicom(data, None, ...)`` does
for the headers ``gateway.header_read`` vouches for, and returns None for the rest (pydicom
decides). The text elements are decoded once per series (``_text_part``'s cache) and
classified once (``classify``'s memo): ~85 us instead of ~530 us per 512x512 CT slice
(``bench/header_read.py``), with the same result, which
``tests/unit/test_gateway_header_read.py`` checks against the pydicom read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import tag_for_keyword

from gateway.header_read import read_header
from gateway.received import (
    INT_FIELDS,
    TEXT_FIELDS,
    ReceivedInstance,
    declared_of,
    int_of,
    text_of,
    triaged_instance,
)
from storage.keys import instance_key, is_valid_uid
from worklist.triage import (
    CODE_ITEM_TAGS,
    CODE_SEQUENCE_KEYWORDS,
    REQUEST_CODE_SEQUENCE_KEYWORDS,
    REQUEST_KEYWORDS,
    TRIAGE_KEYWORDS,
    extract_text_values,
    log_notes,
)

_CHARSET = 0x00080005
_REQUEST_ATTRIBUTES_SEQUENCE = 0x00400275
_UID_FIELDS = tuple(
    (keyword, tag_for_keyword(keyword) or 0)
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
)
_TEXT_TAGS = tuple(
    (name, keyword, limit, tag_for_keyword(keyword) or 0)
    for name, (keyword, limit) in TEXT_FIELDS.items()
)
_INT_TAGS = tuple((name, tag_for_keyword(keyword) or 0) for name, keyword in INT_FIELDS.items())
_TRIAGE_TAGS = tuple(tag_for_keyword(keyword) or 0 for keyword in TRIAGE_KEYWORDS)
_CODE_TAGS = tuple(tag_for_keyword(keyword) or 0 for keyword in CODE_SEQUENCE_KEYWORDS)
_REQUEST_TAGS = frozenset(
    [_CHARSET]
    + [
        tag_for_keyword(keyword) or 0
        for keyword in (*REQUEST_KEYWORDS, *REQUEST_CODE_SEQUENCE_KEYWORDS)
    ]
)
# code sequences (top level, request items): their items' code value, scheme and meaning
_NESTED = {
    tag_for_keyword(keyword) or 0: CODE_ITEM_TAGS | {_CHARSET}
    for keyword in (*CODE_SEQUENCE_KEYWORDS, *REQUEST_CODE_SEQUENCE_KEYWORDS)
}
# the text part's inputs: the character set, the payload's text fields, the triage text
_TEXT_KEY_TAGS = tuple(
    dict.fromkeys([_CHARSET, *(t[3] for t in _TEXT_TAGS), *_TRIAGE_TAGS, *_CODE_TAGS])
)
_WANTED = frozenset(
    [*_TEXT_KEY_TAGS, *(tag for _, tag in _UID_FIELDS), *(tag for _, tag in _INT_TAGS)]
) - frozenset(_CODE_TAGS)
_ABSENT = object()
_TEXT_CACHE_SIZE = 256


@dataclass(frozen=True, slots=True)
class _TextPart:
    """What a header's text elements decode to (the same for every instance of a series)."""

    texts: tuple[tuple[str, str], ...]  # payload name -> text, in TEXT_FIELDS order
    fields: dict[str, str]  # triage text fields (copied before use)
    extracted_notes: tuple[str, ...]  # extract_text_values' notes (logged)
    charset_notes: tuple[str, ...]


# decoded text parts by their raw bytes; public so that a benchmark or test can start it empty
text_cache: dict[tuple[Any, ...], _TextPart] = {}


def _frozen(value: Any) -> Any:
    """A value as a cache key part: a sequence's items (lists of dicts) as nested tuples."""
    if isinstance(value, list):
        return tuple(tuple(sorted((k, _frozen(v)) for k, v in item.items())) for item in value)
    return value


def _text_part(values: Mapping[int, Any], items: list[dict[int, Any]] | None) -> _TextPart:
    """Decode the text elements; cached by their raw bytes (decoding is a pure function of
    them), so the instances of a series after the first cost a dictionary look-up."""
    key = (
        tuple(_frozen(values.get(tag, _ABSENT)) for tag in _TEXT_KEY_TAGS),
        None if items is None else _frozen(items),
    )
    part = text_cache.get(key)
    if part is not None:
        return part
    declared = declared_of(values[_CHARSET]) if _CHARSET in values else None
    texts: list[tuple[str, str]] = []
    notes: list[str] = []
    for name, keyword, limit, tag in _TEXT_TAGS:
        text, n = text_of(values[tag], keyword, declared) if tag in values else ("", [])
        texts.append((name, text[:limit]))
        notes.extend(n)
    extracted = extract_text_values(values, items or ())
    part = _TextPart(
        texts=tuple(texts),
        fields=extracted.fields,
        extracted_notes=tuple(extracted.notes),
        charset_notes=tuple(dict.fromkeys([*extracted.notes, *notes])),
    )
    if len(text_cache) >= _TEXT_CACHE_SIZE:
        text_cache.clear()
    text_cache[key] = part
    return part


def read_spooled(
    data: bytes | memoryview,
    *,
    site: str,
    calling_ae: str,
    called_ae: str,
    urgent_called_aes: Mapping[str, str],
) -> ReceivedInstance | None:
    """``read_instance_pydicom(data, None, ...)`` for the headers ``header_read`` vouches for,
    without pydicom; None: not sure, or the instance is to be refused (pydicom words it)."""
    raw = read_header(data, _WANTED, _REQUEST_ATTRIBUTES_SEQUENCE, _REQUEST_TAGS, _NESTED)
    if raw is None:
        return None
    values = raw.values
    uids = [
        text_of(values[tag], keyword, None)[0] if tag in values else ""
        for keyword, tag in _UID_FIELDS
    ]
    if not all(is_valid_uid(u) for u in uids):
        return None
    sop_class, sop, series, study = uids
    if sop != raw.media_storage_sop_instance_uid or sop_class != raw.media_storage_sop_class_uid:
        return None
    object_key = instance_key(site, study, series, sop)
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
        payload[name] = int_of(text_of(values[tag], name, None)[0]) if tag in values else None
    log_notes(part.extracted_notes, study)
    return triaged_instance(
        payload,
        dict(part.fields),
        list(part.charset_notes),
        site=site,
        calling_ae=calling_ae,
        called_ae=called_ae,
        urgent_called_aes=urgent_called_aes,
    )


__all__ = ["read_spooled"]
