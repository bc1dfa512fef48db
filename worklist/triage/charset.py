"""Bytes of one DICOM text value -> clean Unicode, with notes on how it was decoded.

Township scanners get Specific Character Set (0008,0005) wrong often: GBK bytes declared
``ISO_IR 100``, nothing declared at all, or ``ISO 2022 IR 58`` with its escape sequences, which
pydicom 3.0.2 leaves inside the decoded string. So we decode the bytes ourselves:

1. Escape sequences (``ESC $ ) A`` and friends) switch the code set per segment; they are
   removed from the result, never kept.
2. The declared character set is trusted when the bytes decode strictly with it *and* the
   result is plausible (GB18030 or GBK bytes read as Latin-1 are not: see ``_looks_gb``).
3. Otherwise, and when nothing is declared: UTF-8 if the bytes are valid UTF-8, else GB18030
   (a superset of GBK and GB2312), else the declared set with replacement characters; every
   such fallback is reported in the notes. Notes never quote the text (it may be a name).

The input bytes are never changed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydicom.charset import python_encoding

ESC = 0x1B

# escape sequence -> Python codec for the segment that follows it (ISO 2022, PS3.5 6.1.2.5)
_ESCAPES: dict[bytes, str] = {
    b"\x1b(B": "ascii",  # G0 ISO-IR 6
    b"\x1b(J": "ascii",  # G0 JIS X 0201 romaji (close enough for matching)
    b"\x1b)I": "shift_jis",  # G1 JIS X 0201 katakana
    b"\x1b$B": "iso2022_jp",  # G0 JIS X 0208
    b"\x1b$(D": "iso2022_jp_2",  # G0 JIS X 0212
    b"\x1b$)C": "euc_kr",  # G1 KS X 1001
    b"\x1b$)A": "gb18030",  # G1 GB2312 (ISO 2022 IR 58): EUC-CN bytes, GB18030 is a superset
    b"\x1b-A": "latin_1",
    b"\x1b-B": "iso8859_2",
    b"\x1b-C": "iso8859_3",
    b"\x1b-D": "iso8859_4",
    b"\x1b-F": "iso8859_7",
    b"\x1b-G": "iso8859_6",
    b"\x1b-H": "iso8859_8",
    b"\x1b-L": "iso8859_5",
    b"\x1b-M": "iso8859_9",
    b"\x1b-T": "tis_620",
}
# codecs that need their escape sequence kept in the segment to decode
_KEEP_ESCAPE = {"iso2022_jp", "iso2022_jp_2"}
_ESCAPE_RE = re.compile(rb"\x1b[\x20-\x2f]*[\x30-\x7e]")
_ESCAPE_STR_RE = re.compile(r"\x1b[\x20-\x2f]*[\x30-\x7e]")
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_BAD_CHAR_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ue000-\uf8ff\ufffd]")

_GB_NAMES = {"GB18030", "GBK", "ISO 2022 GBK", "ISO 2022 IR 58", "ISO 2022 58"}
_UTF8_NAMES = {"ISO_IR 192"}
_DEFAULT_NAMES = {"", "ISO_IR 6", "ISO 2022 IR 6"}


def declared_terms(declared: Sequence[str] | str | bytes | None) -> list[str]:
    """Specific Character Set as a list of defined terms (first may be '' = default)."""
    if declared is None:
        return []
    if isinstance(declared, bytes):
        declared = declared.decode("ascii", errors="replace")
    if isinstance(declared, str):
        declared = declared.split("\\")
    return [str(t).strip().upper().replace("ISO-IR", "ISO_IR") for t in declared]


def strip_escapes(text: str) -> str:
    """Remove ISO 2022 escape sequences left in an already decoded string."""
    return _ESCAPE_STR_RE.sub("", text)


def _looks_gb(text: str) -> bool:
    """Is a strict GB18030 decoding plausibly Chinese, rather than Latin-1 read as GB?"""
    if _BAD_CHAR_RE.search(text):
        return False
    wide = [c for c in text if ord(c) > 0x7F]
    if not wide or not _CJK_RE.search(text):
        return False
    common = 0
    for c in wide:
        try:
            c.encode("gb2312")
            common += 1
        except UnicodeEncodeError:
            pass
    return common * 2 >= len(wide)


def _strict(raw: bytes, codec: str) -> str | None:
    try:
        return raw.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _clean(text: str) -> str:
    return strip_escapes(text).strip(" \x00")


def _decode_iso2022(raw: bytes, first_codec: str) -> tuple[str, bool]:
    """Decode segment by segment; returns (text, every segment decoded strictly)."""
    parts: list[str] = []
    ok = True
    pos = 0
    codec = first_codec
    for m in _ESCAPE_RE.finditer(raw):
        parts.append(_segment(raw[pos : m.start()], codec))
        seq = m.group()
        new = _ESCAPES.get(seq)
        if new is None:
            ok = False
        else:
            codec = new
        pos = m.end()
        if codec in _KEEP_ESCAPE:
            pos = m.start()
    parts.append(_segment(raw[pos:], codec))
    text = "".join(parts)
    if "\ufffd" in text:
        ok = False
    return text, ok


def _segment(chunk: bytes, codec: str) -> str:
    if not chunk:
        return ""
    if codec == "ascii":
        # ESC ( B returns G0 to ASCII; high bytes still belong to the active G1 set
        codec = "gb18030" if any(b > 0x7F for b in chunk) else "ascii"
    decoded = _strict(chunk, codec)
    if decoded is None:
        decoded = chunk.decode(codec, errors="replace")
    return _ESCAPE_STR_RE.sub("", decoded)


def _codec_for(terms: list[str]) -> str:
    first = next((t for t in terms if t), "")
    return python_encoding.get(first, "latin_1") if first else "latin_1"


def decode_text(
    raw: bytes, declared_charsets: Sequence[str] | str | None
) -> tuple[str, list[str]]:
    """One value's bytes -> clean Unicode and notes on any fallback."""
    terms = declared_terms(declared_charsets)
    shown = "\\".join(terms) if terms else "none"
    if not raw:
        return "", []
    if raw.isascii() and ESC not in raw:
        return _clean(raw.decode("ascii")), []

    if ESC in raw:
        first = "latin_1" if terms and terms[0] == "ISO_IR 100" else "ascii"
        text, ok = _decode_iso2022(raw, first)
        notes: list[str] = []
        if not any(t.startswith("ISO 2022") for t in terms):
            notes.append(f"escape sequences present but Specific Character Set is {shown}")
        if not ok:
            notes.append("unknown escape sequence or undecodable bytes (replaced)")
        return _clean(text), notes

    gb_declared = any(t in _GB_NAMES for t in terms)
    utf8_declared = any(t in _UTF8_NAMES for t in terms)
    as_utf8 = _strict(raw, "utf-8")
    as_gb = _strict(raw, "gb18030")

    if utf8_declared:
        if as_utf8 is not None:
            return _clean(as_utf8), []
        if as_gb is not None:
            return _clean(as_gb), [f"declared {shown} but bytes are not UTF-8; decoded as GB18030"]
        return _clean(raw.decode("utf-8", errors="replace")), [
            f"declared {shown} but bytes are not UTF-8; undecodable bytes replaced"
        ]

    if gb_declared:
        if as_gb is not None and (_looks_gb(as_gb) or as_utf8 is None):
            return _clean(as_gb), []
        if as_utf8 is not None:
            return _clean(as_utf8), [f"declared {shown} but bytes are UTF-8; decoded as UTF-8"]
        return _clean(raw.decode("gb18030", errors="replace")), [
            f"declared {shown} but bytes are not GB18030; undecodable bytes replaced"
        ]

    # nothing declared, the default repertoire, or a single-byte / other set
    declared_codec = _codec_for(terms)
    is_default = all(t in _DEFAULT_NAMES for t in terms)
    what = "no Specific Character Set" if is_default else f"declared {shown}"
    if as_utf8 is not None:
        return _clean(as_utf8), [f"{what} but bytes are UTF-8; decoded as UTF-8"]
    if as_gb is not None and _looks_gb(as_gb):
        if is_default:
            return _clean(as_gb), [f"{what}; non-ASCII bytes decoded as GB18030"]
        native = _strict(raw, declared_codec)
        if native is None or declared_codec in {"latin_1", "iso8859"} or not _looks_native(native):
            return _clean(as_gb), [f"{what} but bytes look like GBK/GB18030; decoded as GB18030"]
    native = _strict(raw, declared_codec)
    if native is not None:
        return _clean(native), ([] if not is_default else [f"{what}; decoded as Latin-1"])
    if as_gb is not None:
        return _clean(as_gb), [f"{what} but bytes do not decode; decoded as GB18030"]
    return _clean(raw.decode("gb18030", errors="replace")), [
        f"{what} and bytes do not decode; undecodable bytes replaced"
    ]


def _looks_native(text: str) -> bool:
    """A strict decoding in a declared non-Latin set (Cyrillic, Japanese...) without junk."""
    return not _BAD_CHAR_RE.search(text)
