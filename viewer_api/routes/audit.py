"""The audit trail for admins: who did what to which object, when, from where, and how it
ended, filtered and paginated."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from pydantic import AwareDatetime

from viewer_api.deps import ClientAddr, NowDep, SessionDep, require_roles
from viewer_api.schemas import AuditEventOut
from worklist import audit
from worklist.models import ROLE_ADMIN, User

router = APIRouter(prefix="/api/v1", tags=["audit"])

MAX_PAGE = 1000

AdminUser = Annotated[User, Depends(require_roles(ROLE_ADMIN))]


@router.get(
    "/audit",
    response_model=list[AuditEventOut],
    responses={status.HTTP_403_FORBIDDEN: {"description": "Admins only"}},
)
def list_audit_events(
    session: SessionDep,
    user: AdminUser,
    now: NowDep,
    client_addr: ClientAddr,
    action: Annotated[str | None, Query(max_length=64)] = None,
    username: Annotated[str | None, Query(max_length=64)] = None,
    object_id: Annotated[str | None, Query(max_length=128)] = None,
    since: Annotated[AwareDatetime | None, Query()] = None,
    until: Annotated[AwareDatetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[AuditEventOut]:
    """Events newest first; ``since`` inclusive, ``until`` exclusive (ISO 8601 with offset).
    Reading the trail is itself audited (after the query, so it is not in its own page)."""
    found = audit.search_events(
        session=session,
        action=action,
        username=username,
        object_id=object_id,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    filters = {
        "action": action,
        "username": username,
        "object_id": object_id,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
    }
    audit.record(
        session=session,
        actor=user,
        action="audit_viewed",
        object_type="audit",
        client_addr=client_addr,
        detail={
            "filters": {k: v for k, v in filters.items() if v is not None},
            "count": len(found),
            "offset": offset,
        },
        now=now,
    )
    return [AuditEventOut.from_event(e) for e in found]
