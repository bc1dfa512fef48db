"""How every DICOMweb route runs (``serve``), who asks (``Viewer``, with its audit trail),
and what the routes look up: visible studies' instances, in one query each.

A DICOMweb route is a FastAPI route that declares its path and query parameters (so the
OpenAPI schema documents them and FastAPI checks them) and no dependencies: a viewer
scrolling a series asks for one image per slice, and FastAPI's per-request dependency
machinery (a thread-pool hop per sync dependency, the session's commit hop) costs as much
as serving a slice. ``serve`` does what ``deps.SessionDep`` and ``deps.ViewerUser`` do, in
one hop:

    @router.get("/studies/{study_uid}/metadata")
    @viewer_route
    async def study_metadata(study_uid: str, request: Request) -> Response:
        return await serve(request, lambda session, viewer: ...)

The app-wide ``limits.check_url_inputs`` runs first as for every route (NUL 400, UID
grammar 422); then the bearer token (401) and a viewer role (403), as ``ViewerUser``; then
the work in the thread pool. Views are audited off the request path (``Viewer.viewed``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import anyio
from fastapi import Request, status
from fastapi.responses import Response
from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session, defer
from starlette.concurrency import run_in_threadpool

from viewer_api.auditing import REFUSED, AuditWriter
from viewer_api.deps import VIEWER_ROLES, client_addr_of, declare_roles, get_current_user
from viewer_api.errors import InvalidParameter, NotAcceptable, RoleDenied, UnreadableObject
from viewer_api.security import oauth2_scheme
from worklist.audit import AuditAction, PendingEvent
from worklist.errors import StudyNotFound
from worklist.models import Instance, Series, Study, User
from worklist.repository import study_exists
from worklist.visibility import visible_studies_filter

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Viewer:
    """The caller of a DICOMweb route (a viewer role), and its audit trail: written off
    the request path by the app's ``AuditWriter``."""

    user: User
    client_addr: str
    now: datetime
    audit: AuditWriter

    def viewed(
        self,
        action: AuditAction,
        *,
        study_uid: str,
        detail: dict[str, Any] | None = None,
        object_id: str | None = None,
        object_type: str | None = None,
        outcome: str = "success",
        once: bool = False,
    ) -> None:
        """Audit a view of ``study_uid``. ``once``: one event per user, action and study
        per few minutes (``AuditWriter.repeat_seconds``), for views that come per frame."""
        event = PendingEvent.of(
            actor=self.user,
            action=action,
            object_type=object_type,
            object_id=study_uid if object_id is None else object_id,
            client_addr=self.client_addr,
            outcome=outcome,
            detail=detail,
            now=self.now,
        )
        self.audit.add(event, once_per=(self.user.id, action, study_uid) if once else None)

    def not_visible(self, session: Session, study_uid: str, what: str) -> StudyNotFound:
        """The 404 for a study, series or instance this caller cannot see; a study that
        exists at another site is a refused cross-site attempt, audited as one."""
        if study_exists(session=session, study_uid=study_uid):
            self.viewed(
                AuditAction.STUDY_ACCESS_REFUSED,
                study_uid=study_uid,
                outcome=REFUSED,
                detail={"via": "dicomweb"},
            )
        return StudyNotFound(f"No such {what} visible to you")


def viewer_route(endpoint: F) -> F:
    """Mark a DICOMweb route with the roles ``serve`` admits (``x-teleread-roles``)."""
    declare_roles(endpoint, VIEWER_ROLES)
    return endpoint


async def serve(request: Request, work: Callable[[Session, Viewer], Response]) -> Response:
    """Check the caller as ``deps.ViewerUser`` does (401, 403), then run ``work`` in the
    thread pool with a read session (``deps.reads_only``: a DICOMweb route only reads),
    closed either way, even when the request is cancelled."""
    state = request.app.state
    session: Session = state.read_session_factory()
    try:
        token = await oauth2_scheme(request)
        user = await get_current_user(request, session, token)
        if user.role not in VIEWER_ROLES:
            raise RoleDenied()
        viewer = Viewer(user, client_addr_of(request), state.clock(), state.audit_writer)

        def run() -> Response:
            try:
                return work(session, viewer)
            finally:  # a read session: nothing to roll back; the pool resets the connection
                session.close()

        with anyio.CancelScope(shield=True):
            response: Response = await run_in_threadpool(run)
        return response
    finally:
        session.close()  # no I/O: the worker closed it, or no query ran


DICOM_JSON = "application/dicom+json"


def base_url(request: Request) -> str:
    """The DICOMweb root as the client reached it (``http://host:port/dicomweb``)."""
    return str(request.base_url).rstrip("/") + "/dicomweb"


def instances_query(
    viewer: User, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> Select[Instance, str]:
    """Instances of a visible study (and series, instance), with their series UID, in
    series then instance order."""
    stmt = (
        select(Instance, Series.series_instance_uid)
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Instance.study_id == Study.id)
        .where(Study.study_instance_uid == study_uid, visible_studies_filter(viewer))
    )
    if series_uid is not None:
        stmt = stmt.where(Series.series_instance_uid == series_uid)
    if sop_uid is not None:
        stmt = stmt.where(Instance.sop_instance_uid == sop_uid)
    return stmt.order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)


def level(series_uid: str | None, sop_uid: str | None) -> str:
    """ "study", "series" or "instance": what a path with these UIDs names."""
    return "instance" if sop_uid else "series" if series_uid else "study"


def find_instances(
    *,
    session: Session,
    viewer: Viewer,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[tuple[Instance, str]]:
    """``instances_query``'s rows; ``StudyNotFound`` (404) when there are none, so another
    site's study looks exactly like a study that does not exist."""
    rows = [
        (instance, series)
        for instance, series in session.execute(
            instances_query(viewer.user, study_uid, series_uid, sop_uid).options(
                defer(Instance.dicom_json)  # metadata reads it as text, on its own
            )
        )
    ]
    if not rows:
        raise viewer.not_visible(session, study_uid, level(series_uid, sop_uid))
    return rows


@dataclass(frozen=True, slots=True)
class IndexedInstance:
    """What the index says of one stored instance: enough to find and render its frames."""

    sop_instance_uid: str
    object_key: str
    sha256: str
    transfer_syntax_uid: str
    dicom_json: dict[str, Any] | None


# one instance by its three UIDs, the statement built once (the visibility filter is added
# per caller); a scrolled series asks for it once per slice
_ONE_INSTANCE = (
    select(
        Instance.sop_instance_uid,
        Instance.object_key,
        Instance.sha256,
        Instance.transfer_syntax_uid,
        Instance.dicom_json,
    )
    .join(Series, Instance.series_id == Series.id)
    .join(Study, Instance.study_id == Study.id)
    .where(
        Study.study_instance_uid == bindparam("study_uid"),
        Series.series_instance_uid == bindparam("series_uid"),
        Instance.sop_instance_uid == bindparam("sop_uid"),
    )
)


def find_instance(
    *, session: Session, viewer: Viewer, study_uid: str, series_uid: str, sop_uid: str
) -> IndexedInstance:
    """One instance of a visible study, header included; ``StudyNotFound`` (404) as in
    ``find_instances``."""
    row = session.execute(
        _ONE_INSTANCE.where(visible_studies_filter(viewer.user)),
        {"study_uid": study_uid, "series_uid": series_uid, "sop_uid": sop_uid},
    ).first()
    if row is None:
        raise viewer.not_visible(session, study_uid, "instance")
    return IndexedInstance(*row)


def json_response(data: list[dict[str, Any]], headers: dict[str, str] | None = None) -> Response:
    """DICOM JSON, or 204 No Content for an empty result."""
    if not data:
        return Response(status_code=status.HTTP_204_NO_CONTENT, headers=headers)
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, media_type=DICOM_JSON, headers=headers)


def bad_request(message: str) -> InvalidParameter:
    return InvalidParameter(message)


def unreadable(message: str = "The stored object cannot be read as DICOM") -> UnreadableObject:
    return UnreadableObject(message)


def not_acceptable(message: str) -> NotAcceptable:
    return NotAcceptable(message)
