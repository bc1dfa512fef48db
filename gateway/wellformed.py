"""Is a received dataset whole? One pass over its element headers in the negotiated syntax.

``dcmread(stop_before_pixels=True)``, which the gateway uses to read the header, never looks
at the pixel data or anything after it, and pydicom's reader is forgiving: it guesses the VR
encoding when the bytes do not match the transfer syntax, and stops quietly at the end of the
bytes even when the last element declared more. A truncated file (a modality that sends a
half-written instance), garbage after the last element, an element declaring 100 MB that is
not there, or explicit-VR bytes sent under an implicit-VR context would all be spooled,
uploaded and fail only in the radiologist's viewer. ``check_structure`` walks the element
headers (values are skipped by their length, never decoded) and raises ``InvalidInstance``
(CANNOT_UNDERSTAND) when they do not add up; sequences deeper than ``MAX_SEQUENCE_DEPTH``
are refused too (recursive readers downstream would overflow their stack), and so is native
(uncompressed) Pixel Data shorter than its image attributes say (Rows x Columns x samples x
frames x Bits Allocated), or a Number of Frames that is not a number: no viewer could show it.

The same pass gives the C-STORE fast path what it needs before the response
(``gateway.received.quick_instance``): the top-level values of ``UID_TAGS`` and
``PATIENT_TAGS`` (is it the patient of the study's earlier instances?), and whether the
dataset is plain enough to vouch for without pydicom: elements in ascending order in every
item up to the pixel data, no UN of undefined length (which pydicom reads its own way).
"""

from __future__ import annotations

import struct

from pydicom import uid

from gateway.errors import InvalidInstance

MAX_SEQUENCE_DEPTH = 64
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xE000, 0xE00D, 0xE0DD
PIXEL_DATA = 0x7FE00010
# explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
# transfer syntaxes whose dataset bytes are not plain elements (deflate: zlib stream)
_NOT_WALKABLE = frozenset((uid.DeflatedExplicitVRLittleEndian,))


def _bad(message: str) -> InvalidInstance:
    return InvalidInstance(f"dataset not well formed: {message}")


UID_TAGS = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
}
PATIENT_TAGS = {
    0x00080005: "SpecificCharacterSet",
    0x00100010: "PatientName",
    0x00100020: "PatientID",
}
_COLLECTED = UID_TAGS.keys() | PATIENT_TAGS.keys()


# top-level values the Pixel Data check reads: Samples per Pixel, Photometric Interpretation,
# Number of Frames, Rows, Columns, Bits Allocated
SAMPLES, PHOTOMETRIC, FRAMES, ROWS, COLUMNS, BITS = (
    0x00280002,
    0x00280004,
    0x00280008,
    0x00280010,
    0x00280011,
    0x00280100,
)
IMAGE_TAGS = frozenset((SAMPLES, PHOTOMETRIC, FRAMES, ROWS, COLUMNS, BITS))
NATIVE = frozenset(
    (uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.ExplicitVRBigEndian)
)


def pixel_bytes_needed(image: dict[int, bytes], order: str) -> int | None:
    """How many bytes native Pixel Data needs by the top-level image attributes ``image``
    (raw values; ``order``: ``<`` or ``>``); None when they do not say (no Rows, ...)."""

    def us(tag: int) -> int | None:
        value = image.get(tag, b"")
        return struct.unpack_from(f"{order}H", value)[0] if len(value) >= 2 else None

    rows, columns, bits = us(ROWS), us(COLUMNS), us(BITS)
    if not rows or not columns or not bits:
        return None
    text = image.get(FRAMES, b"").strip(b" \0")
    try:
        frames = max(1, int(text)) if text else 1
    except ValueError:
        shown = text[:16].decode("ascii", "replace")
        raise InvalidInstance(f"NumberOfFrames {shown!r} is not a number") from None
    samples = us(SAMPLES) or 1
    if image.get(PHOTOMETRIC, b"").strip(b" \0").endswith(b"_422"):
        samples = 2  # YBR_FULL_422 / YBR_PARTIAL_422: chroma for every second pixel
    return (rows * columns * frames * samples * bits + 7) // 8


def check_structure(
    data: bytes | memoryview, transfer_syntax: str, uids: dict[int, bytes] | None = None
) -> bool:
    """Raise ``InvalidInstance`` unless ``data`` (a dataset, no preamble or file meta) is a
    complete sequence of elements in ``transfer_syntax``. ``uids``: filled with the raw
    top-level values of ``UID_TAGS`` and ``PATIENT_TAGS``. True: the dataset is plain (see
    the module's docstring)."""
    if transfer_syntax in _NOT_WALKABLE:
        return False
    view = memoryview(data)
    end = len(view)
    implicit = transfer_syntax == uid.ImplicitVRLittleEndian
    order = ">" if transfer_syntax == uid.ExplicitVRBigEndian else "<"
    head = struct.Struct(f"{order}HH2sH").unpack_from  # group, element, VR, short length
    u32 = struct.Struct(f"{order}L").unpack_from
    # open containers: (end offset or None when undefined length, kind, implicit);
    # kind "seq": items only; "item": elements; "frag": encapsulated pixel data fragments
    stack: list[tuple[int | None, str, bool]] = []
    # the last tag seen in each open item (the dataset's first); watched up to the top-level
    # pixel data, after which the fast path reads nothing
    last: list[int] = [-1]
    watching = plain = True
    image: dict[int, bytes] = {}  # the top-level values of IMAGE_TAGS
    native = transfer_syntax in NATIVE
    pos = 0
    while True:
        limit = end
        if stack:
            top_end, kind, implicit_here = stack[-1]
            if top_end is not None:
                limit = top_end
                if pos == top_end:
                    if stack.pop()[1] == "item":
                        last.pop()
                    continue
        else:
            kind, implicit_here = "item", implicit
            if pos == end:
                return plain
        if pos + 8 > limit:
            where = "the dataset" if not stack else "a sequence"
            raise _bad(f"{limit - pos} stray byte(s) at the end of {where} (offset {pos})")
        group, element, vr, short = head(view, pos)
        if group == 0xFFFE:
            (length,) = u32(view, pos + 4)
            pos += 8
            if element == ITEM and kind in ("seq", "frag"):
                if length == UNDEFINED:
                    if kind == "frag":
                        raise _bad("pixel data fragment of undefined length")
                    stack.append((None, "item", implicit_here))
                    last.append(-1)
                elif pos + length > limit:
                    raise _bad(f"item of {length} bytes overruns its sequence (offset {pos})")
                elif kind == "frag":
                    pos += length
                else:
                    stack.append((pos + length, "item", implicit_here))
                    last.append(-1)
            elif element == ITEM_END and kind == "item" and stack and stack[-1][0] is None:
                stack.pop()
                last.pop()
            elif element == SEQUENCE_END and kind in ("seq", "frag") and stack[-1][0] is None:
                stack.pop()
            else:
                raise _bad(f"unexpected (FFFE,{element:04X}) at offset {pos - 8}")
            if len(stack) > 2 * MAX_SEQUENCE_DEPTH + 1:
                raise _bad(f"sequences nested deeper than {MAX_SEQUENCE_DEPTH}")
            continue
        if kind != "item":
            raise _bad(f"element ({group:04X},{element:04X}) where an item was expected")
        if watching:
            tag = (group << 16) | element
            if not stack and tag >= PIXEL_DATA:
                watching = False
            elif tag <= last[-1]:
                plain = False
            last[-1] = tag
        if implicit_here:
            vr = b""
            (length,) = u32(view, pos + 4)
            pos += 8
        else:
            if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                raise _bad(
                    f"element ({group:04X},{element:04X}) has no explicit VR (offset {pos}): "
                    "bytes do not match the transfer syntax"
                )
            if vr in _LONG_VRS:
                if pos + 12 > limit:
                    raise _bad(f"truncated element header at offset {pos}")
                (length,) = u32(view, pos + 8)
                pos += 12
            else:
                length = short
                pos += 8
        if length == UNDEFINED:
            tag = (group << 16) | element
            if tag == PIXEL_DATA and vr != b"SQ":
                stack.append((None, "frag", implicit_here))
            else:  # a sequence (UN of undefined length: implicit VR little endian inside)
                stack.append((None, "seq", implicit_here or vr == b"UN"))
                if vr == b"UN" and watching:
                    plain = False
        elif pos + length > limit:
            raise _bad(
                f"element ({group:04X},{element:04X}) declares {length} bytes, "
                f"{limit - pos} left (offset {pos})"
            )
        elif vr == b"SQ":
            stack.append((pos + length, "seq", implicit_here))
        else:
            tag = (group << 16) | element
            if not stack:
                if uids is not None and tag in _COLLECTED:
                    uids[tag] = bytes(view[pos : pos + length])
                elif tag in IMAGE_TAGS:
                    image[tag] = bytes(view[pos : pos + length])
                elif tag == PIXEL_DATA and native:
                    needed = pixel_bytes_needed(image, order)
                    if needed is not None and length < needed:
                        raise InvalidInstance(
                            f"Pixel Data has {length} bytes, its image attributes need {needed}"
                        )
            pos += length
        if len(stack) > 2 * MAX_SEQUENCE_DEPTH + 1:
            raise _bad(f"sequences nested deeper than {MAX_SEQUENCE_DEPTH}")
