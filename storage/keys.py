"""Object keys: ``<study uid>/<series uid>/<sop uid>.dcm``, UIDs validated first."""

from __future__ import annotations

import re

from storage.errors import InvalidKey

# PS3.5 9.1: components of digits separated by '.', no leading zero in a multi-digit
# component, at most 64 characters.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_valid_uid(uid: str) -> bool:
    return 0 < len(uid) <= 64 and _UID.fullmatch(uid) is not None


def check_uid(uid: str) -> str:
    if not is_valid_uid(uid):
        raise InvalidKey(f"not a DICOM UID: {uid[:80]!r}")
    return uid


def instance_key(study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{check_uid(study_uid)}/{check_uid(series_uid)}/{check_uid(sop_uid)}.dcm"


def check_key(key: str) -> str:
    """Reject keys that could escape a directory or confuse a backend."""
    if (
        not key
        or len(key) > 512
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(part in ("", ".", "..") for part in key.split("/"))
    ):
        raise InvalidKey(f"invalid object key: {key[:80]!r}")
    return key
