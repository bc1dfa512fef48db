"""Named DIMSE status codes the gateway answers with (PS3.4 B.2.3, PS3.7 C)."""

from __future__ import annotations

SUCCESS = 0x0000
# C-STORE warnings
COERCION_OF_DATA_ELEMENTS = 0xB000
# C-STORE has no warning of its own for "stored, but not filed as sent": the gateway answers
# the general one, 0xB000, with an Error Comment saying why (no element is coerced)
STORED_BUT_HELD = COERCION_OF_DATA_ELEMENTS
ELEMENTS_DISCARDED = 0xB007
DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB006
# C-STORE failures
REFUSED_NOT_AUTHORISED = 0x0124
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122

# A-ASSOCIATE-RJ (PS3.8 9.3.4): result, source, reason
REJECTED_PERMANENT = 0x01
SOURCE_SERVICE_USER = 0x01
REASON_CALLING_AE_NOT_RECOGNISED = 0x03
REASON_CALLED_AE_NOT_RECOGNISED = 0x07


ERROR_COMMENT_MAX = 64  # Error Comment (0000,0902) is an LO: 64 characters, no backslash


def error_comment(text: str) -> str:
    """``text`` made a valid Error Comment: printable ASCII, no backslash, 64 characters."""
    cleaned = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text).strip()
    if len(cleaned) > ERROR_COMMENT_MAX:
        cleaned = cleaned[: ERROR_COMMENT_MAX - 3].rstrip() + "..."
    return cleaned
