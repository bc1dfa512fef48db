"""Is an instance of another patient than its study? Pure: the county's ingest holds such an
instance for an admin (``worklist.ingest``), and the gateway, which knows the study from the
instances it received before, answers the C-STORE with a warning (``gateway.handlers``): both
compare the same way."""

from __future__ import annotations


def normalise_person_name(value: str) -> str:
    """A DICOM PN compared as a person would: case and spacing aside, empty trailing
    components (``Wang^Fang^^^``) and an ideographic/phonetic group that is absent on one
    side do not make two names differ (only the first group is compared)."""
    alphabetic = value.split("=")[0]
    parts = [" ".join(p.split()).casefold() for p in alphabetic.split("^")]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts)


def patients_differ(own_id: str, own_name: str, new_id: str, new_name: str) -> bool:
    """The new instance names another patient than the study: both sides carry a Patient ID
    (or a name) and they differ. An empty value on either side is not a difference. IDs
    are compared up to 64 characters and names up to 200 (the ingest API's limits)."""
    own_id, new_id = own_id[:64].strip(), new_id[:64].strip()
    if own_id and new_id and own_id != new_id:
        return True
    own = normalise_person_name(own_name[:200])
    new = normalise_person_name(new_name[:200])
    return bool(own and new and own != new)


__all__ = ["normalise_person_name", "patients_differ"]
