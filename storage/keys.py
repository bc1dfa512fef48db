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
    """Reject keys that could escape a directory or confuse a backend.

    No component may be empty or start with ``.`` (which also rules out ``.`` and ``..``):
    the filesystem store keeps its temp files and metadata sidecars under dot-names, so a
    key can never collide with them. No control characters either.
    """
    if (
        not key
        or len(key) > 512
        or key.startswith("/")
        or "\\" in key
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key)
        or any(part == "" or part.startswith(".") for part in key.split("/"))
    ):
        raise InvalidKey(f"invalid object key: {key[:80]!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: ``""``, a whole key path ending in ``/``, or the start of a key."""
    if prefix == "":
        return prefix
    head, _, last = prefix.rpartition("/")
    if head:
        check_key(head)
    if prefix.startswith("/") or last.startswith(".") or "\\" in last:
        raise InvalidKey(f"invalid key prefix: {prefix[:80]!r}")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in last):
        raise InvalidKey(f"invalid key prefix: {prefix[:80]!r}")
    return prefix
