"""Push: a server-sent-events stream of worklist events, and the same feed as JSON.

``GET /api/v1/events`` (``text/event-stream``): each event is ``id: <event id>``,
``event: <kind>``, ``data: <JSON>``. The stream starts after ``Last-Event-ID`` (the header a
reconnecting EventSource sends), else after ``?after=N``, else at the newest event. Events
reach it from the process's ``StreamHub`` (``viewer_api.event_streams``: one reader of the
table for every stream; an idle stream holds no thread and no database connection), so it
works whichever API replica wrote the event. A comment line every ``HEARTBEAT_SECONDS``
keeps proxies from closing an idle stream.

The stream ends when the client goes away; when its token expires; within
``RECHECK_SECONDS`` of its account being disabled, changed or its tokens revoked; when
``stop_streams(app)`` is called (shutdown); or after ``MAX_STREAM_SECONDS`` (EventSource then
reconnects with ``Last-Event-ID``, losing nothing). At most
``TELEREAD_API_MAX_STREAMS_PER_ACCOUNT`` streams per account (then 429 with
``Retry-After``) and ``TELEREAD_API_MAX_STREAMS`` per process (then 503).

EventSource cannot set headers: the web pages' stream is authenticated by their session
cookie, and a token may come as ``?access_token=`` as well as in ``Authorization: Bearer``.
``GET /api/v1/events/recent?after=N`` returns the same events as
JSON for polling clients. Radiologists and admins receive every event (all active readers
count as on shift); clinic users their own site's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from viewer_api.deps import (
    NowDep,
    SessionDep,
    SettingsDep,
    declare_roles,
    load_token_user,
    request_token,
)
from viewer_api.errors import RoleDenied
from viewer_api.event_streams import HubFull, StreamHub, Subscription, TooManyStreams
from viewer_api.schemas import MAX_INT64, EventOut
from viewer_api.security import TokenClaims, decode_access_token, oauth2_scheme
from worklist import events
from worklist.models import ROLE_ADMIN, ROLE_CLINIC, ROLE_RADIOLOGIST, User

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/events", tags=["events"])

HEARTBEAT_SECONDS = 15.0
MAX_STREAM_SECONDS = 30 * 60
STREAM_ROLES = (ROLE_RADIOLOGIST, ROLE_ADMIN, ROLE_CLINIC)
TOO_MANY_RETRY_SECONDS = 30


def stop_streams(app: FastAPI) -> None:
    """End every open event stream of ``app`` and refuse new ones (call before stopping
    the server)."""
    hub: StreamHub = app.state.event_hub
    hub.stop()


@dataclass(frozen=True, slots=True)
class StreamCaller:
    user: User
    claims: TokenClaims
    scope: events.EventScope


def stream_caller(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    header_token: Annotated[str | None, Depends(oauth2_scheme)],
    access_token: Annotated[str | None, Query(max_length=4096)] = None,
) -> StreamCaller:
    """The caller, from the bearer header, the ``access_token`` query parameter or the web
    session's cookie, with the token's claims (its expiry ends the stream) and the events
    it may see."""
    token = request_token(request, header_token or access_token, settings)
    claims = decode_access_token(token, settings=settings)  # InvalidToken: 401
    user = load_token_user(session, claims, now)  # AccountRefused, SessionEnded: 401
    if user.role not in STREAM_ROLES:
        raise RoleDenied()
    return StreamCaller(user, claims, events.scope_for(session=session, viewer=user))


declare_roles(stream_caller, STREAM_ROLES)  # published as x-teleread-roles (viewer_api.access)
Caller = Annotated[StreamCaller, Depends(stream_caller)]


def _start_after(last_event_id: str | None, after: int | None, newest: int) -> int:
    if last_event_id is not None and last_event_id.strip():
        try:
            start = int(last_event_id.strip())
        except ValueError as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "Last-Event-ID must be an event id"
            ) from exc
        return min(max(0, start), MAX_INT64)
    if after is not None:
        return after
    return newest


async def _ended() -> AsyncIterator[str]:
    yield "retry: 3000\n\n"


async def _stream(hub: StreamHub, sub: Subscription, after: int) -> AsyncIterator[str]:
    ends = time.monotonic() + MAX_STREAM_SECONDS
    reason = "client gone"
    try:
        yield "retry: 3000\n\n"
        while after < sub.live_from and sub.closed is None:  # what it missed: from the table
            page = await run_in_threadpool(hub.backfill, sub, after)
            if not page:
                break
            for item in page:
                yield item.text
            after = page[-1].id
        while True:
            left = min(sub.seconds_left(), ends - time.monotonic())
            if left <= 0:
                reason = "token expired" if sub.seconds_left() <= 0 else "stream too old"
                break
            items = await sub.next(min(HEARTBEAT_SECONDS, left))
            if items is None:
                reason = sub.closed or "closed"
                break
            if not items:
                if min(sub.seconds_left(), ends - time.monotonic()) > 0:
                    yield ": heartbeat\n\n"
                continue
            for item in items:
                if item.id > after:
                    yield item.text
                    after = item.id
    finally:
        hub.close(sub)
        logger.info(
            "event stream closed",
            extra={"action": "events_stream_closed", "after": after, "reason": reason},
        )


@router.get(
    "",
    response_class=StreamingResponse,
    responses={
        status.HTTP_429_TOO_MANY_REQUESTS: {"description": "Too many streams for this account"},
        status.HTTP_503_SERVICE_UNAVAILABLE: {"description": "Too many streams on this server"},
    },
)
async def stream(
    request: Request,
    caller: Caller,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_INT64)] = None,
) -> StreamingResponse:
    """The event stream (``text/event-stream``)."""
    hub: StreamHub = request.app.state.event_hub
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if hub.stopped:  # shutting down: end at once; EventSource retries (another replica)
        return StreamingResponse(_ended(), media_type="text/event-stream", headers=headers)
    await run_in_threadpool(hub.ensure_started)
    try:
        sub = hub.open(user_id=caller.user.id, claims=caller.claims, scope=caller.scope)
    except TooManyStreams:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "Too many event streams open for this account; close one (another tab?)",
            {"Retry-After": str(TOO_MANY_RETRY_SECONDS)},
        ) from None
    except HubFull:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Too many event streams open on this server",
            {"Retry-After": str(TOO_MANY_RETRY_SECONDS)},
        ) from None
    start = _start_after(last_event_id, after, sub.live_from)
    logger.info(
        "event stream opened",
        extra={"action": "events_stream_opened", "user_id": caller.user.id, "after": start},
    )
    return StreamingResponse(
        _stream(hub, sub, start), media_type="text/event-stream", headers=headers
    )


@router.get("/recent", response_model=list[EventOut])
def recent(
    session: SessionDep,
    caller: Caller,
    after: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
    limit: Annotated[int, Query(ge=1, le=events.MAX_PAGE)] = 100,
) -> list[EventOut]:
    """Events after ``after``, oldest first (for clients that poll)."""
    rows = events.list_after(session=session, after_id=after, scope=caller.scope, limit=limit)
    return [EventOut.model_validate(events.as_dict(e)) for e in rows]
