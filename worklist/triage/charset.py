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
import unicodedata
from collections.abc import Sequence

from pydicom.charset import python_encoding

ESC = 0x1B

# escape sequence -> (graphic set it designates, Python codec), ISO 2022 / PS3.5 6.1.2.5
_ESCAPES: dict[bytes, tuple[str, str]] = {
    b"\x1b(B": ("G0", "ascii"),  # ISO-IR 6
    b"\x1b(J": ("G0", "ascii"),  # JIS X 0201 romaji (close enough for matching)
    b"\x1b$B": ("G0", "iso2022_jp"),  # JIS X 0208
    b"\x1b$(D": ("G0", "iso2022_jp_2"),  # JIS X 0212
    b"\x1b)I": ("G1", "shift_jis"),  # JIS X 0201 katakana
    b"\x1b$)C": ("G1", "euc_kr"),  # KS X 1001
    b"\x1b$)A": ("G1", "gb18030"),  # GB2312 (ISO 2022 IR 58): EUC-CN, GB18030 is a superset
    b"\x1b-A": ("G1", "latin_1"),
    b"\x1b-B": ("G1", "iso8859_2"),
    b"\x1b-C": ("G1", "iso8859_3"),
    b"\x1b-D": ("G1", "iso8859_4"),
    b"\x1b-F": ("G1", "iso8859_7"),
    b"\x1b-G": ("G1", "iso8859_6"),
    b"\x1b-H": ("G1", "iso8859_8"),
    b"\x1b-L": ("G1", "iso8859_5"),
    b"\x1b-M": ("G1", "iso8859_9"),
    b"\x1b-T": ("G1", "tis_620"),
}
# the G1 set a first Specific Character Set value designates before any escape
_INITIAL_G1 = {
    "ISO 2022 IR 13": "shift_jis",
    "ISO_IR 13": "shift_jis",
    "ISO 2022 IR 58": "gb18030",
    "ISO 2022 IR 149": "euc_kr",
}
# 7-bit multi-byte G0 sets: the codec needs its escape sequence to decode
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


def _looks_utf8(text: str) -> bool:
    """Is a strict UTF-8 decoding plausible? Short GBK strings are often valid UTF-8 too:
    头颅 (CD B7 C2 AD) is U+0377 U+00AD. Real UTF-8 text has CJK (3-byte sequences) or
    accented Latin letters, not format characters and stray Greek or Arabic."""
    wide = [c for c in text if ord(c) > 0x7F]
    if not wide:
        return True
    if any(unicodedata.category(c) in ("Cc", "Cf", "Co", "Cn") for c in wide):
        return False
    if any(ord(c) >= 0x800 for c in wide):
        return True
    return all(0xC0 <= ord(c) <= 0x24F and c not in "×÷" for c in wide)


def _strict(raw: bytes, codec: str) -> str | None:
    try:
        return raw.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _clean(text: str) -> str:
    return strip_escapes(text).strip(" \x00")


def _initial_g1(terms: list[str]) -> str:
    first = terms[0] if terms else ""
    if first in _INITIAL_G1:
        return _INITIAL_G1[first]
    codec = python_encoding.get(first, "")
    if first and codec not in ("", "iso8859", "UTF8", "GB18030", "GBK"):
        return codec
    # no G1 declared up front: the first Chinese set among the declared ones, else GB18030
    for t in terms[1:]:
        if t in _INITIAL_G1:
            return _INITIAL_G1[t]
    return "gb18030"


def _decode_iso2022(raw: bytes, terms: list[str]) -> tuple[str, bool]:
    """Decode segment by segment; returns (text, every segment decoded strictly)."""
    parts: list[str] = []
    ok = True
    g0, g1 = "ascii", _initial_g1(terms)
    pos = 0
    for m in _ESCAPE_RE.finditer(raw):
        text, good = _segment(raw[pos : m.start()], g0, g1)
        parts.append(text)
        ok = ok and good
        designation = _ESCAPES.get(m.group())
        if designation is None:
            ok = False
        elif designation[0] == "G0":
            g0 = designation[1]
        else:
            g1 = designation[1]
        pos = m.start() if g0 in _KEEP_ESCAPE else m.end()
    text, good = _segment(raw[pos:], g0, g1)
    parts.append(text)
    return "".join(parts), ok and good


def _segment(chunk: bytes, g0: str, g1: str) -> tuple[str, bool]:
    if not chunk:
        return "", True
    codec = g0 if g0 in _KEEP_ESCAPE else (g1 if any(b > 0x7F for b in chunk) else "ascii")
    decoded = _strict(chunk, codec)
    if decoded is None:
        return _ESCAPE_STR_RE.sub("", chunk.decode(codec, errors="replace")), False
    return _ESCAPE_STR_RE.sub("", decoded), True


def _codec_for(terms: list[str]) -> str:
    first = next((t for t in terms if t), "")
    return python_encoding.get(first, "latin_1") if first else "latin_1"


def decode_text(raw: bytes, declared_charsets: Sequence[str] | str | None) -> tuple[str, list[str]]:
    """One value's bytes -> clean Unicode and notes on any fallback."""
    terms = declared_terms(declared_charsets)
    shown = "\\".join(terms) if terms else "none"
    if not raw:
        return "", []
    if raw.isascii() and ESC not in raw:
        return _clean(raw.decode("ascii")), []

    if ESC in raw:
        text, ok = _decode_iso2022(raw, terms)
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

    gb_ok = as_gb is not None and _looks_gb(as_gb)
    utf8_ok = as_utf8 is not None and _looks_utf8(as_utf8)
    if utf8_declared:
        if as_utf8 is not None and (utf8_ok or not gb_ok):
            return _clean(as_utf8), []
        if as_gb is not None:
            return _clean(as_gb), [
                f"declared {shown} but bytes look like GBK/GB18030; decoded as GB18030"
            ]
        return _clean(raw.decode("utf-8", errors="replace")), [
            f"declared {shown} but bytes are not UTF-8; undecodable bytes replaced"
        ]

    if gb_declared:
        if as_gb is not None and (gb_ok or not utf8_ok):
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
    if as_utf8 is not None and (utf8_ok or not gb_ok):
        return _clean(as_utf8), [f"{what} but bytes are UTF-8; decoded as UTF-8"]
    if as_gb is not None and gb_ok:
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
