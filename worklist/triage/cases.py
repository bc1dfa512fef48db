"""A labelled triage case and the character-set profiles its text is written in: what the
evaluation (``worklist.triage.evaluate``) and the case grammar (``worklist.triage.grammar``)
share."""

from __future__ import annotations

from dataclasses import dataclass, field

from worklist.triage.rules import Category

ESC_IR58 = b"\x1b$)A"
ESC_ASCII = b"\x1b(B"

# profile -> (declared Specific Character Set or None for absent, encoder name)
PROFILES: dict[str, tuple[str | None, str]] = {
    "gb18030": ("GB18030", "gb18030"),
    "gbk": ("GBK", "gbk"),
    "utf8": ("ISO_IR 192", "utf-8"),
    "ir58": ("\\ISO 2022 IR 58", "ir58"),
    "latin1": ("ISO_IR 100", "latin_1"),
    "ascii": (None, "ascii"),
    "gbk-as-latin1": ("ISO_IR 100", "gbk"),
    "gbk-undeclared": (None, "gbk"),
    "gb18030-undeclared": (None, "gb18030"),
    "utf8-undeclared": (None, "utf-8"),
    "utf8-as-latin1": ("ISO_IR 100", "utf-8"),
}


def encode_text(text: str, encoder: str) -> bytes:
    """Text as a scanner would send it; ``ir58`` wraps each Chinese run in ESC $ ) A ... ESC ( B."""
    if encoder != "ir58":
        return text.encode(encoder)
    out = bytearray()
    run = ""
    for ch in [*text, ""]:
        if ch and ord(ch) > 0x7F:
            run += ch
            continue
        if run:
            out += ESC_IR58 + run.encode("gb2312") + ESC_ASCII
            run = ""
        out += ch.encode("ascii")
    return bytes(out)


@dataclass(slots=True)
class Case:
    id: str
    expect: Category | None
    enc: str
    fields: dict[str, str]
    request: dict[str, str] = field(default_factory=dict)
    codes: dict[str, list[str]] = field(default_factory=dict)
    request_codes: dict[str, list[str]] = field(default_factory=dict)
    explicit: Category | None = None
    stat: bool = False
    source: str = ""
    family: str = ""  # grammar cases: the family, the part (dev / held_out), the form
    part: str = ""
    form: str = ""


__all__ = ["ESC_ASCII", "ESC_IR58", "PROFILES", "Case", "encode_text"]
