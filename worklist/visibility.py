"""Who may see which study; the statuses that end a study's reading."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class StudyScope:
    """Which studies a viewer may see: every one (``every``), one site's (``site_id``), or
    none (neither)."""

    every: bool = False
    site_id: int | None = None


def visibility_scope(viewer: User) -> StudyScope:
    """``viewer``'s scope: every study for radiologists and admins, their own site's for
    clinic users, none for an inactive account or anyone else. ``visible_studies_filter``
    is built from it, so viewers with equal scopes see the same studies (a cache of
    worklist pages is keyed by it)."""
    if not viewer.is_active:
        return StudyScope()
    if viewer.role in READER_ROLES:
        return StudyScope(every=True)
    if viewer.role == ROLE_CLINIC and viewer.site_id is not None:
        return StudyScope(site_id=viewer.site_id)
    return StudyScope()


def visible_studies_filter(viewer: User) -> ColumnElement[bool]:
    """The studies ``visibility_scope(viewer)`` names."""
    scope = visibility_scope(viewer)
    if scope.every:
        return true()
    if scope.site_id is not None:
        return Study.site_id == scope.site_id
    return false()


def require_reader(reader: User) -> None:
    """``NotAReader`` unless ``reader`` is an active radiologist or admin."""
    if reader.role not in READER_ROLES or not reader.is_active:
        raise NotAReader()


__all__ = [
    "OPEN_STUDIES",
    "READER_ROLES",
    "TERMINAL_STATUSES",
    "StudyScope",
    "require_reader",
    "visibility_scope",
    "visible_studies_filter",
]
