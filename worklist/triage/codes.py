"""Coded entries (DICOM code sequence items) as triage text, and back.

A code sequence item (Code Value, Coding Scheme Designator, Code Meaning) travels in the
triage ``text_fields`` under the sequence's keyword, one item as ``VALUE^SCHEME^MEANING``,
items joined with `` ; `` (within one instance, as ``extract_text`` joins repeated values) or
`` | `` (``worklist.ingest.merge_text_fields`` across instances)::

    {"AdmittingDiagnosesCodeSequence": "I63.900^ICD-10^脑梗死 ; I10^I10^高血压"}

``classify`` reads such a field as codes: a code the rules know (``codes:`` in rules.yaml)
decides by itself and is reported as a code; an unknown one contributes its meaning as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# top level of an image's header (General Study, Patient Study, Performed Procedure Step)
CODE_SEQUENCE_KEYWORDS: tuple[str, ...] = (
    "AdmittingDiagnosesCodeSequence",
    "ReasonForRequestedProcedureCodeSequence",
    "RequestedProcedureCodeSequence",
    "ProcedureCodeSequence",
    "PerformedProtocolCodeSequence",
)
# inside Request Attributes Sequence items (the Request Attributes Macro)
REQUEST_CODE_SEQUENCE_KEYWORDS: tuple[str, ...] = (
    "ReasonForRequestedProcedureCodeSequence",
    "RequestedProcedureCodeSequence",
    "ScheduledProtocolCodeSequence",
)
# an item's elements: Code Value, Long Code Value, Coding Scheme Designator, Code Meaning
CODE_VALUE = 0x00080100
LONG_CODE_VALUE = 0x00080119
CODING_SCHEME = 0x00080102
CODE_MEANING = 0x00080104
CODE_ITEM_TAGS = frozenset((CODE_VALUE, LONG_CODE_VALUE, CODING_SCHEME, CODE_MEANING))

ITEM_SEPARATOR = " ; "
_SPLIT = re.compile(r"\s+[;|]\s+")
_UNSAFE = re.compile(r"[\^;|]+")


@dataclass(frozen=True, slots=True)
class Code:
    value: str
    scheme: str
    meaning: str

    def shown(self) -> str:
        """How a reason shows the code: ``I63.9 (ICD-10) '脑梗死'``."""
        if self.meaning == self.value:
            return self.value
        scheme = f" ({self.scheme})" if self.scheme else ""
        meaning = f" '{self.meaning}'" if self.meaning else ""
        return f"{self.value}{scheme}{meaning}"


def is_code_field(keyword: str) -> bool:
    return keyword.endswith("CodeSequence")


def code_text(value: str, scheme: str, meaning: str) -> str:
    """One item as ``VALUE^SCHEME^MEANING`` ('' when it has neither value nor meaning)."""
    parts = [" ".join(_UNSAFE.sub(" ", p).split()) for p in (value, scheme, meaning)]
    if not parts[0] and not parts[2]:
        return ""
    return "^".join(parts)


def parse_codes(text: str) -> list[Code]:
    """The items of a code field (an item without carets is both its value and meaning: a
    code a rule knows, or else text)."""
    codes: list[Code] = []
    for part in _SPLIT.split(f" {text} "):
        part = part.strip()
        if not part:
            continue
        value, _, rest = part.partition("^")
        if "^" not in part:
            codes.append(Code(part, "", part))
            continue
        scheme, _, meaning = rest.partition("^")
        codes.append(Code(value.strip(), scheme.strip(), meaning.strip()))
    return codes


def normalise_code(value: str) -> str:
    """``i63.900x001`` -> ``I63900X001``: compared by prefix with the rules' codes."""
    return re.sub(r"[\s.\-]", "", value).upper()


__all__ = [
    "CODE_ITEM_TAGS",
    "CODE_MEANING",
    "CODE_SEQUENCE_KEYWORDS",
    "CODE_VALUE",
    "CODING_SCHEME",
    "ITEM_SEPARATOR",
    "LONG_CODE_VALUE",
    "REQUEST_CODE_SEQUENCE_KEYWORDS",
    "Code",
    "code_text",
    "is_code_field",
    "normalise_code",
    "parse_codes",
]
