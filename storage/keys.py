"""Object keys: ``<site>/<study uid>/<series uid>/<sop uid>.dcm``, site code and UIDs
validated first. The site prefix lets a township gateway's S3 credential be limited to
writing under its own site's objects. Keys written before the prefix existed
(``<study uid>/<series uid>/<sop uid>.dcm``) stay readable: the index stores each object's
key; ``teleread storage migrate-keys`` moves them under their site's prefix."""

from __future__ import annotations

import re

from storage.errors import InvalidKey

# PS3.5 9.1: components of digits separated by '.', no leading zero in a multi-digit
# component, at most 64 characters.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
# a site code as it may lead a key: what worklist.accounts accepts for a site code
_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_VERSION = re.compile(r"_[0-9a-f]{16}\.dcm")


def is_valid_uid(uid: str) -> bool:
    return 0 < len(uid) <= 64 and _UID.fullmatch(uid) is not None


def check_uid(uid: str) -> str:
    if not is_valid_uid(uid):
        raise InvalidKey(f"not a DICOM UID: {uid[:80]!r}")
    return uid


def check_site(site: str) -> str:
    if _SITE.fullmatch(site) is None:
        raise InvalidKey(f"not a site code usable as a key prefix: {site[:40]!r}")
    return site


def instance_key(site: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    uids = f"{check_uid(study_uid)}/{check_uid(series_uid)}/{check_uid(sop_uid)}.dcm"
    return f"{check_site(site)}/{uids}"


def version_key(
    site: str, study_uid: str, series_uid: str, sop_uid: str, dataset_sha256: str
) -> str:
    """The key of a re-sent version of an instance (other bytes under a SOP Instance UID
    already stored): ``<site>/<study>/<series>/<sop>_<first 16 hex of the dataset's
    sha256>.dcm``, beside the first version, which is never overwritten. The same content
    always gets the same key, so retries and several gateways agree."""
    tag = dataset_sha256[:16].lower()
    if len(tag) != 16 or any(c not in "0123456789abcdef" for c in tag):
        raise InvalidKey(f"not a sha256: {dataset_sha256[:80]!r}")
    return instance_key(site, study_uid, series_uid, sop_uid).removesuffix(".dcm") + f"_{tag}.dcm"


def is_instance_key(key: str, site: str, study_uid: str, series_uid: str, sop_uid: str) -> bool:
    """Whether ``key`` is one of the keys these UIDs may have: the site-prefixed one, a
    re-sent version of it (``version_key``), or the key before site prefixes."""
    first = instance_key(site, study_uid, series_uid, sop_uid)
    if key in (first, legacy_instance_key(study_uid, series_uid, sop_uid)):
        return True
    stem = first.removesuffix(".dcm")
    return key.startswith(stem) and _VERSION.fullmatch(key[len(stem) :]) is not None


def legacy_instance_key(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The key an instance had before keys got their site prefix."""
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
