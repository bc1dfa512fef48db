"""Who may see which study; the statuses that end a study's reading."""

from __future__ import annotations

from sqlalchemy import ColumnElement, false, true

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


def visible_studies_filter(viewer: User) -> ColumnElement[bool]:
    """Clinic users see their own site; radiologists and admins all; anyone else nothing."""
    if not viewer.is_active:
        return false()
    if viewer.role in READER_ROLES:
        return true()
    if viewer.role == ROLE_CLINIC and viewer.site_id is not None:
        return Study.site_id == viewer.site_id
    return false()


def require_reader(reader: User) -> None:
    """``NotAReader`` unless ``reader`` is an active radiologist or admin."""
    if reader.role not in READER_ROLES or not reader.is_active:
        raise NotAReader()


__all__ = ["READER_ROLES", "TERMINAL_STATUSES", "require_reader", "visible_studies_filter"]
