"""The header of a spooled Part-10 file as raw element values, without pydicom.

``gateway.instance.read_instance`` reads a spooled file's header after the C-STORE response
(the forwarder's ``index_pending``). pydicom's ``dcmread(stop_before_pixels=True)`` spends
most of that time building objects for ~100 elements of which ~25 are read. ``read_header``
walks the same bytes once and keeps only the values asked for, exactly as pydicom's
``RawDataElement.value`` would hold them (the bytes; for an empty value,
``empty_value_for_VR(vr, raw=True)``), so the values decode to the same text.

It vouches only for what it understands, and mirrors what pydicom 3's reader does with it:
the preamble and ``DICM``; a File Meta group in Explicit VR Little Endian whose transfer
syntax is Implicit or Explicit VR Little Endian; a dataset whose elements are all well formed
(in explicit VR: known VRs only), whose sequences of undefined length (which pydicom parses
while reading) are SQ, with items that end exactly where they say, up to pydicom's pixel data
stop tags. Anything else (another transfer syntax, a command group, an element longer than
the data, a VR pydicom would guess about, an implicit VR dataset that pydicom would read as
explicit, a wanted value of undefined length...) gives None: the caller then uses pydicom,
which decides, so results are the same for every input.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import empty_value_for_VR
from pydicom.filereader import ENCODED_VR
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

__all__ = ["RawHeader", "read_header"]

_PREAMBLE_END = 132
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
# the transfer syntax value as the gateway's file meta holds it -> implicit VR
_SYNTAXES = {
    b"1.2.840.10008.1.2\x00": True,
    b"1.2.840.10008.1.2.1\x00": False,
}
_META_UID = re.compile(rb"([0-9.]+)\x00?")
_META_UIDS = frozenset((0x00020002, 0x00020003, 0x00020010))
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_STOP = frozenset((0x7FE00010, 0x7FE00009, 0x7FE00008))  # pydicom's _at_pixel_data
_FIRST_STOP = min(_STOP)
_KNOWN_VRS = frozenset(ENCODED_VR)
_LONG_VRS = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)
_SQ = b"SQ"
_MAX_DEPTH = 32  # nested sequences deeper than this: let pydicom judge
_CHARSET = 0x00080005
# pydicom looks a Specific Character Set up as it reads it (codecs.lookup: a NUL raises)
_PLAIN_CHARSET = re.compile(rb"[\x20-\x7e]*")
_TAG_LENGTH = struct.Struct("<HHI").unpack_from
_EXPLICIT_HEAD = struct.Struct("<HH2sH").unpack_from
_U32 = struct.Struct("<I").unpack_from


@lru_cache(maxsize=256)
def _dictionary_vr(tag: int) -> bytes | None:
    try:
        return dictionary_VR(tag).encode()
    except KeyError:
        return None


@lru_cache(maxsize=16)
def _watched(wanted: frozenset[int], sequence: int, nested: frozenset[int]) -> frozenset[int]:
    """The top-level tags ``_top_level`` looks at more closely."""
    return wanted | nested | {_CHARSET, sequence}


class _Unsure(Exception):
    """Not a header this reader vouches for."""


@dataclass(slots=True)
class RawHeader:
    """A spooled file's file meta UIDs and the asked-for raw values of its header."""

    transfer_syntax_uid: str
    media_storage_sop_class_uid: str
    media_storage_sop_instance_uid: str
    # top-level tag -> value, for the asked-for tags present
    values: dict[int, Any] = field(default_factory=dict)
    # the items of the sequence asked for (None: no such element), each tag -> value; a
    # ``nested`` sequence's value (here or in ``values``) is its items, each tag -> value
    items: list[dict[int, Any]] | None = None


def read_header(
    data: bytes | memoryview,
    wanted: frozenset[int],
    sequence: int,
    item_wanted: frozenset[int],
    nested: Mapping[int, frozenset[int]] | None = None,
) -> RawHeader | None:
    """The values of the ``wanted`` top-level tags and of ``item_wanted`` in the items of
    the ``sequence`` tag; None when not sure (use pydicom). ``nested``: sequences (code
    sequences) at the top level or in ``sequence``'s items whose items are read too, tag ->
    the tags wanted in their items; their value is the list of their items."""
    buf = memoryview(data)
    try:
        return _Reader(buf, wanted, sequence, item_wanted, nested or {}).read()
    except (_Unsure, struct.error, KeyError):
        return None


class _Reader:
    __slots__ = (
        "buf",
        "depth",
        "end",
        "implicit",
        "item_wanted",
        "nested",
        "sequence",
        "wanted",
    )

    def __init__(
        self,
        buf: memoryview,
        wanted: frozenset[int],
        sequence: int,
        item_wanted: frozenset[int],
        nested: Mapping[int, frozenset[int]],
    ) -> None:
        self.buf = buf
        self.end = len(buf)
        self.wanted = wanted
        self.sequence = sequence
        self.item_wanted = item_wanted
        self.nested = nested
        self.implicit = False
        self.depth = 0

    def read(self) -> RawHeader:
        buf = self.buf
        if self.end < _PREAMBLE_END + 12 or bytes(buf[128:_PREAMBLE_END]) != b"DICM":
            raise _Unsure
        pos, meta = self._meta(_PREAMBLE_END)
        ts = meta.get(0x00020010)
        if ts not in _SYNTAXES:
            raise _Unsure
        self.implicit = implicit = _SYNTAXES[ts]
        uids = []
        for tag in (0x00020002, 0x00020003):
            m = _META_UID.fullmatch(meta.get(tag) or b"")
            if m is None:
                raise _Unsure
            uids.append(m.group(1).decode())
        if pos + 8 > self.end:
            raise _Unsure  # no dataset
        group = buf[pos] | buf[pos + 1] << 8
        if group == 0:
            raise _Unsure  # a command group: pydicom reads it apart
        if implicit and 0x40 < buf[pos + 4] < 0x5B and 0x40 < buf[pos + 5] < 0x5B:
            raise _Unsure  # pydicom would take this implicit VR dataset for explicit VR
        header = RawHeader(_IMPLICIT_LE if implicit else _EXPLICIT_LE, uids[0], uids[1])
        self._top_level(pos, header)
        return header

    def _meta(self, pos: int) -> tuple[int, dict[int, bytes]]:
        """File meta elements (Explicit VR Little Endian, group 2, as pydicom reads them
        until the first tag of another group)."""
        buf, end = self.buf, self.end
        found: dict[int, bytes] = {}
        first = True
        while True:
            if pos + 8 > end:
                raise _Unsure
            group, elem, vr, length = _EXPLICIT_HEAD(buf, pos)
            if group != 2:
                if first:
                    raise _Unsure
                return pos, found
            if first and (elem != 0 or vr != b"UL" or length != 4):
                raise _Unsure
            first = False
            if vr not in _KNOWN_VRS:
                raise _Unsure
            pos += 8
            if vr in _LONG_VRS:
                (length,) = _U32(buf, pos)
                pos += 4
            if length == _UNDEFINED or pos + length > end:
                raise _Unsure
            tag = group << 16 | elem
            if tag in _META_UIDS and vr != b"UI":
                raise _Unsure  # pydicom would convert the value by its VR
            found[tag] = bytes(buf[pos : pos + length])
            pos += length

    def _element(self, pos: int, limit: int) -> tuple[int, bytes | None, int, int]:
        """(tag, explicit VR or None, length, value position) of the element at ``pos``."""
        buf = self.buf
        if pos + 8 > limit:
            raise _Unsure
        if self.implicit:
            group, elem, length = _TAG_LENGTH(buf, pos)
            return group << 16 | elem, None, length, pos + 8
        group, elem, vr, length = _EXPLICIT_HEAD(buf, pos)
        if vr in _LONG_VRS:
            if pos + 12 > limit:
                raise _Unsure
            (length,) = _U32(buf, pos + 8)
            return group << 16 | elem, vr, length, pos + 12
        if group == 0xFFFE or vr not in _KNOWN_VRS:
            raise _Unsure
        return group << 16 | elem, vr, length, pos + 8

    def _value(self, vr: bytes | None, length: int, pos: int) -> Any:
        if length == 0:
            return empty_value_for_VR(None if vr is None else vr.decode(), raw=True)
        return bytes(self.buf[pos : pos + length])

    def _check_charset(self, vr: bytes | None, pos: int, length: int) -> None:
        if vr not in (None, b"CS") or _PLAIN_CHARSET.fullmatch(self.buf, pos, pos + length) is None:
            raise _Unsure

    def _check_vr(self, tag: int, vr: bytes | None) -> None:
        """A wanted element in explicit VR has its dictionary VR (else pydicom, converting
        it for a log line, might differ from its raw bytes or fail)."""
        if vr is not None and vr != _dictionary_vr(tag):
            raise _Unsure

    def _is_sequence(self, tag: int, vr: bytes | None, pos: int, limit: int) -> bool:
        """Would pydicom parse this element of undefined length as a sequence?"""
        if vr is not None:
            return vr == _SQ
        expected = _dictionary_vr(tag)
        if expected is not None:
            return expected == _SQ
        # not in the dictionary (a private tag): a sequence when an item follows
        return pos + 8 <= limit and _TAG_LENGTH(self.buf, pos)[:2] == (0xFFFE, 0xE000)

    def _top_level(self, pos: int, header: RawHeader) -> None:
        # the hot loop: one pass over ~100 elements, so element headers are decoded inline
        # and an element not watched costs a few comparisons
        buf, end, wanted, sequence = self.buf, self.end, self.wanted, self.sequence
        nested = self.nested
        watched = _watched(wanted, sequence, frozenset(nested))
        implicit = self.implicit
        explicit_head, tag_length, u32 = _EXPLICIT_HEAD, _TAG_LENGTH, _U32
        long_vrs, known_vrs, stop = _LONG_VRS, _KNOWN_VRS, _STOP
        vr: bytes | None = None
        while pos < end:
            if pos + 8 > end:
                raise _Unsure
            if implicit:
                group, elem, length = tag_length(buf, pos)
                pos += 8
            else:
                group, elem, vr, length = explicit_head(buf, pos)
                if vr in long_vrs:
                    if pos + 12 > end:
                        raise _Unsure
                    (length,) = u32(buf, pos + 8)
                    pos += 12
                elif vr in known_vrs:
                    pos += 8
                elif group << 16 | elem in stop:
                    return
                else:
                    raise _Unsure
            tag = group << 16 | elem
            if tag >= _FIRST_STOP:
                if tag in stop:
                    return
                if group == 0xFFFE:
                    raise _Unsure
            if length == _UNDEFINED:
                if tag in wanted or not self._is_sequence(tag, vr, pos, end):
                    raise _Unsure
                collect = self.item_wanted if tag == sequence else nested.get(tag)
                items, pos = self._sequence(pos, None, collect, end)
                if tag == sequence:
                    header.items = items
                elif collect is not None:
                    header.values[tag] = items
                continue
            if pos + length > end:
                raise _Unsure
            if tag in watched:
                if tag == _CHARSET:
                    self._check_charset(vr, pos, length)
                if tag in wanted:
                    self._check_vr(tag, vr)
                    header.values[tag] = self._value(vr, length, pos)
                elif tag == sequence:
                    if vr not in (None, _SQ):
                        raise _Unsure
                    header.items, _ = self._sequence(pos, pos + length, self.item_wanted, end)
                elif tag in nested:
                    if vr not in (None, _SQ):
                        raise _Unsure
                    header.values[tag], _ = self._sequence(pos, pos + length, nested[tag], end)
            pos += length

    def _sequence(
        self, pos: int, limit: int | None, collect: frozenset[int] | None, bound: int
    ) -> tuple[list[dict[int, Any]], int]:
        """The items from ``pos`` of a sequence ending at ``limit`` (None: undefined length,
        up to its delimiter, within ``bound``); returns them (when ``collect``, the tags
        wanted in them, is not None) and the position after."""
        items: list[dict[int, Any]] = []
        if limit is not None:
            bound = limit
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _Unsure
        while True:
            if limit is not None and pos == limit:
                self.depth -= 1
                return items, pos
            if pos + 8 > bound:
                raise _Unsure
            group, elem, length = _TAG_LENGTH(self.buf, pos)
            tag = group << 16 | elem
            pos += 8
            if tag == _SEQ_END and limit is None and length == 0:
                self.depth -= 1
                return items, pos
            if tag != _ITEM:
                raise _Unsure
            if length == _UNDEFINED:
                item, pos = self._item(pos, None, bound, collect)
            else:
                if pos + length > bound:
                    raise _Unsure
                item, pos = self._item(pos, pos + length, bound, collect)
            if collect is not None:
                items.append(item)

    def _item(
        self, pos: int, limit: int | None, bound: int, collect: frozenset[int] | None
    ) -> tuple[dict[int, Any], int]:
        """An item's elements (defined length: exactly up to ``limit``; else up to its
        delimiter, within ``bound``); ``collect``: the tags wanted (None: none), a nested
        sequence among them read as its items."""
        values: dict[int, Any] = {}
        wanted = frozenset() if collect is None else collect
        nested = self.nested if collect is not None else {}
        if limit is not None:
            bound = limit
        while True:
            if limit is not None and pos == limit:
                return values, pos
            if limit is None and pos + 8 <= bound:
                group, elem, length = _TAG_LENGTH(self.buf, pos)
                if group == 0xFFFE and elem == 0xE00D:
                    return values, pos + 8
            tag, vr, length, pos = self._element(pos, bound)
            if tag >> 16 == 0xFFFE:
                raise _Unsure
            inner = nested.get(tag) if tag in wanted else None
            if length == _UNDEFINED:
                if (tag in wanted and inner is None) or not self._is_sequence(tag, vr, pos, bound):
                    raise _Unsure
                items, pos = self._sequence(pos, None, inner, bound)
                if inner is not None:
                    values[tag] = items
                continue
            if pos + length > bound:
                raise _Unsure
            if tag == _CHARSET:
                self._check_charset(vr, pos, length)
            if inner is not None:
                if vr not in (None, _SQ):
                    raise _Unsure
                values[tag], _ = self._sequence(pos, pos + length, inner, bound)
            elif tag in wanted:
                self._check_vr(tag, vr)
                values[tag] = self._value(vr, length, pos)
            pos += length
