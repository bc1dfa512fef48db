"""The audit trail for admins: who did what to which object, when, from where, and how it
ended, filtered and paginated; and exported whole (CSV, FHIR ``AuditEvent``), streamed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from viewer_api.auditing import Auditor
from viewer_api.deps import AdminUser, Audit, SessionDep
from viewer_api.schemas import MAX_OFFSET, AuditEventOut, Instant
from worklist import audit_export
from worklist.audit import (
    AuditAction,
    AuditFilter,
    iter_events,
    last_id,
    search_events,
)
from worklist.models import AuditEvent

router = APIRouter(prefix="/api/v1", tags=["audit"])

MAX_PAGE = 1000
EXPORT_PAGE = 1000  # events per database read and per chunk sent


@router.get(
    "/audit",
    response_model=list[AuditEventOut],
    responses={status.HTTP_403_FORBIDDEN: {"description": "Admins only"}},
)
def list_audit_events(
    session: SessionDep,
    user: AdminUser,
    audit: Audit,
    action: Annotated[str | None, Query(max_length=64)] = None,
    username: Annotated[str | None, Query(max_length=64)] = None,
    object_id: Annotated[str | None, Query(max_length=128)] = None,
    since: Annotated[Instant | None, Query()] = None,
    until: Annotated[Instant | None, Query()] = None,
    site: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[AuditEventOut]:
    """Events newest first; ``since`` inclusive, ``until`` exclusive (ISO 8601 with offset).
    Reading the trail is itself audited (after the query, so it is not in its own page)."""
    found = search_events(
        session=session,
        action=action,
        username=username,
        object_id=object_id,
        since=since,
        until=until,
        site=site,
        limit=limit,
        offset=offset,
    )
    filters = {
        "action": action,
        "username": username,
        "object_id": object_id,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "site": site,
    }
    audit(
        AuditAction.AUDIT_VIEWED,
        detail={
            "filters": {k: v for k, v in filters.items() if v is not None},
            "count": len(found),
            "offset": offset,
        },
    )
    return [AuditEventOut.from_event(e) for e in found]


def _export_filters(
    since: Annotated[
        Instant | None,
        Query(description="ISO 8601 with an offset; inclusive"),
    ] = None,
    until: Annotated[
        Instant | None,
        Query(description="ISO 8601 with an offset; exclusive"),
    ] = None,
    username: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    object_id: Annotated[str | None, Query(max_length=128)] = None,
    site: Annotated[str | None, Query(max_length=32)] = None,
) -> AuditFilter:
    if since is not None and until is not None and since >= until:
        # the standard validation error body, as the schema declares for 422
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "until"),
                    "msg": "until must be later than since",
                    "input": until.isoformat(),
                }
            ]
        )
    return AuditFilter(
        since=since,
        until=until,
        username=username,
        action=action,
        object_id=object_id,
        site=site,
    )


ExportFilters = Annotated[AuditFilter, Depends(_export_filters)]
_EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    status.HTTP_403_FORBIDDEN: {"description": "Admins only"},
}


def _start_export(
    *, request: Request, session: Session, audit: Auditor, filters: AuditFilter, kind: str
) -> tuple[Iterator[list[AuditEvent]], str]:
    """Pin the export to the events that exist now, audit it (committed before the first
    byte goes out), and return the pages to stream and a file name."""
    pinned = AuditFilter(
        since=filters.since,
        until=filters.until,
        username=filters.username,
        action=filters.action,
        object_id=filters.object_id,
        site=filters.site,
        max_id=last_id(session=session),
    )
    shown = {
        "username": filters.username,
        "action": filters.action,
        "object_id": filters.object_id,
        "site": filters.site,
        "since": filters.since.isoformat() if filters.since else None,
        "until": filters.until.isoformat() if filters.until else None,
    }
    audit(
        AuditAction.AUDIT_EXPORTED,
        detail={
            "format": kind,
            "filters": {k: v for k, v in shown.items() if v is not None},
            "up_to_id": pinned.max_id,
        },
    )
    factory: sessionmaker[Session] = request.app.state.session_factory
    pages = iter_events(factory=factory, filters=pinned, page_size=EXPORT_PAGE)
    stamp = audit.now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return pages, f"audit-{stamp}.{kind}"


def _download(name: str) -> dict[str, str]:
    return {
        "Content-Disposition": f'attachment; filename="{name}"',
        "Cache-Control": "private, no-store",
    }


@router.get(
    "/audit/export.csv",
    response_class=StreamingResponse,
    responses={**_EXPORT_RESPONSES, status.HTTP_200_OK: {"content": {"text/csv": {}}}},
)
def export_audit_csv(
    request: Request,
    session: SessionDep,
    user: AdminUser,
    audit: Audit,
    filters: ExportFilters,
) -> StreamingResponse:
    """Every matching event, oldest first, as UTF-8 CSV with a byte order mark (so Excel on
    a Chinese Windows reads it as UTF-8), streamed. The export is itself audited."""
    pages, name = _start_export(
        request=request,
        session=session,
        audit=audit,
        filters=filters,
        kind="csv",
    )
    return StreamingResponse(
        (chunk.encode("utf-8") for chunk in audit_export.csv_chunks(pages)),
        media_type="text/csv; charset=utf-8",
        headers=_download(name),
    )


@router.get(
    "/audit/export.fhir.json",
    response_class=StreamingResponse,
    responses={
        **_EXPORT_RESPONSES,
        status.HTTP_200_OK: {"content": {"application/fhir+json": {}}},
    },
)
def export_audit_fhir(
    request: Request,
    session: SessionDep,
    user: AdminUser,
    audit: Audit,
    filters: ExportFilters,
) -> StreamingResponse:
    """Every matching event, oldest first, as a FHIR R4 ``Bundle`` (type ``collection``) of
    ``AuditEvent`` resources coded with the DICOM audit vocabulary, streamed. Audited."""
    pages, name = _start_export(
        request=request,
        session=session,
        audit=audit,
        filters=filters,
        kind="fhir.json",
    )
    return StreamingResponse(
        (chunk.encode("utf-8") for chunk in audit_export.fhir_bundle_chunks(pages, now=audit.now)),
        media_type="application/fhir+json",
        headers=_download(name),
    )
