"""A fast structural walk over a received dataset's top-level elements, without pydicom.

``walk`` checks that the elements are well formed (tags ascending, lengths within the data,
sequences delimited, up to the pixel data) and collects the UIDs of ``UID_TAGS``; it raises
``NotWalkable`` when it cannot vouch for the dataset. Only the little endian transfer
syntaxes of ``WALKABLE`` are walked. Used by ``gateway.instance.quick_instance``.
"""

from __future__ import annotations

import struct

UID_TAGS = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
}
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
WALKABLE = {
    "1.2.840.10008.1.2": True,  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": False,  # Explicit VR Little Endian
}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


class NotWalkable(Exception):
    """The walker cannot vouch for this dataset: let pydicom judge it."""


def walk(
    buf: memoryview,
    pos: int,
    end: int,
    implicit: bool,
    found: dict[int, bytes] | None,
    until: int | None,
) -> int:
    """Walk data elements from ``pos``; return the position after them (after the delimiter
    ``until`` when given). Stops before (7FE0,0010) at the top level."""
    unpack = struct.unpack_from
    prev = -1
    while pos < end:
        if pos + 8 > end:
            raise NotWalkable("truncated element header")
        group, elem, length = unpack("<HHI", buf, pos)
        tag = group << 16 | elem
        if until is not None and tag == until:
            return pos + 8
        if tag in (_ITEM, _ITEM_END, _SEQ_END):
            raise NotWalkable("delimiter out of place")
        if found is not None and tag >= 0x7FE00010:
            return pos
        if tag <= prev:
            raise NotWalkable("elements out of order")
        prev = tag
        header = 8
        if not implicit:
            vr = bytes(buf[pos + 4 : pos + 6])
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    raise NotWalkable("truncated element header")
                (length,) = unpack("<I", buf, pos + 8)
                header = 12
            elif vr.isalpha() and vr.isupper():
                (length,) = unpack("<H", buf, pos + 6)
            else:
                raise NotWalkable("not a VR")
            if vr == b"UN" and length == _UNDEFINED:
                raise NotWalkable("UN of undefined length")
        pos += header
        if length == _UNDEFINED:
            pos = _walk_sequence(buf, pos, end, implicit)
            continue
        if pos + length > end:
            raise NotWalkable("element longer than the data")
        if found is not None and tag in UID_TAGS:
            found[tag] = bytes(buf[pos : pos + length])
        pos += length
    if until is not None:
        raise NotWalkable("missing delimiter")
    return pos


def _walk_sequence(buf: memoryview, pos: int, end: int, implicit: bool) -> int:
    while True:
        if pos + 8 > end:
            raise NotWalkable("unterminated sequence")
        group, elem, length = struct.unpack_from("<HHI", buf, pos)
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise NotWalkable("not an item")
        if length == _UNDEFINED:
            pos = walk(buf, pos, end, implicit, None, _ITEM_END)
        elif pos + length > end:
            raise NotWalkable("item longer than the data")
        else:
            pos += length
