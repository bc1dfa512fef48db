"""The small bodies of auth (the token), audit (its events) and health."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from worklist.models import AuditEvent


# --- auth ---------------------------------------------------------------------------------
class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    role: str
    site: str | None


class SessionOut(BaseModel):
    """Who is signed in, and what the web pages may offer them."""

    username: str
    display_name: str
    role: str
    site: str | None
    # the UI features this account's role may use (``viewer_api.access.FEATURES``)
    capabilities: list[str]
    # with the session cookie: what state-changing requests send in ``X-CSRF-Token``
    csrf_token: str | None = None


# --- audit --------------------------------------------------------------------------------
class AuditEventOut(BaseModel):
    id: int
    at: datetime
    username: str
    role: str
    site: str
    action: str
    object_type: str
    object_id: str
    client_addr: str
    outcome: str
    detail: dict[str, Any]

    @classmethod
    def from_event(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            id=event.id,
            at=event.at,
            username=event.username,
            role=event.role,
            site=event.site_code,
            action=event.action,
            object_type=event.object_type,
            object_id=event.object_id,
            client_addr=event.client_addr,
            outcome=event.outcome,
            detail=dict(event.detail or {}),
        )


# --- health -------------------------------------------------------------------------------
class Health(BaseModel):
    status: Literal["ok"] = "ok"
