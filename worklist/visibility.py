"""Who may see which study; the statuses that end a study's reading."""

from __future__ import annotations

from sqlalchemy import ColumnElement, bindparam, false, true

from worklist.errors import NotAReader
from worklist.models import (
    ROLE_ADMIN,
    ROLE_CLINIC,
    ROLE_RADIOLOGIST,
    STATUS_AMENDED,
    STATUS_CANCELLED,
    STATUS_FINAL,
    Study,
    User,
)

TERMINAL_STATUSES = (STATUS_CANCELLED, STATUS_FINAL, STATUS_AMENDED)
READER_ROLES = (ROLE_RADIOLOGIST, ROLE_ADMIN)

# "still on the worklist", with the statuses written into the SQL as literals: the partial
# indexes in queue order (``models.OPEN_STUDY_SQL``) match only a literal list. Sent as bound
# parameters, SQLite scans the table and sorts it, and PostgreSQL's generic plan cannot use
# them either (psycopg prepares a statement after its fifth run)
OPEN_STUDIES: ColumnElement[bool] = Study.status.not_in(
    bindparam("terminal_statuses", list(TERMINAL_STATUSES), expanding=True, literal_execute=True)
)


def visible_studies_filter(viewer: User) -> ColumnElement[bool]:
    """Clinic users see their own site; radiologists and admins all; anyone else nothing."""
    if not viewer.is_active:
        return false()
    if viewer.role in READER_ROLES:
        return true()
    if viewer.role == ROLE_CLINIC and viewer.site_id is not None:
        return Study.site_id == viewer.site_id
    return false()


def visibility_key(viewer: User) -> tuple[object, ...]:
    """What ``visible_studies_filter(viewer)`` depends on: two viewers with the same key see
    the same studies (a cache of worklist pages is keyed by it)."""
    if not viewer.is_active:
        return ("none",)
    if viewer.role in READER_ROLES:
        return ("all",)
    if viewer.role == ROLE_CLINIC and viewer.site_id is not None:
        return ("site", viewer.site_id)
    return ("none",)


def require_reader(reader: User) -> None:
    """``NotAReader`` unless ``reader`` is an active radiologist or admin."""
    if reader.role not in READER_ROLES or not reader.is_active:
        raise NotAReader()


__all__ = [
    "OPEN_STUDIES",
    "READER_ROLES",
    "TERMINAL_STATUSES",
    "require_reader",
    "visibility_key",
    "visible_studies_filter",
]
