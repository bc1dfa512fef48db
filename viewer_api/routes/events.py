"""Push: a server-sent-events stream of worklist events, and the same feed as JSON.

``GET /api/v1/events`` (``text/event-stream``): each event is ``id: <event id>``,
``event: <kind>``, ``data: <JSON>``. The stream starts after ``Last-Event-ID`` (the header a
reconnecting EventSource sends), else after ``?after=N``, else at the newest event. It polls
the ``events`` table, so it works whichever API replica wrote the event. A comment line
every ``HEARTBEAT_SECONDS`` keeps proxies from closing an idle stream. The stream ends when
the client goes away, when ``stop_streams(app)`` is called (shutdown), or after
``MAX_STREAM_SECONDS`` (EventSource then reconnects with ``Last-Event-ID``, losing nothing).

EventSource cannot set headers: the web pages' stream is authenticated by their session
cookie, and a token may come as ``?access_token=`` as well as in ``Authorization: Bearer``.
``GET /api/v1/events/recent?after=N`` returns the same events as
JSON for polling clients. Radiologists and admins receive every event (all active readers
count as on shift); clinic users their own site's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from viewer_api.deps import (
    NowDep,
    SessionDep,
    SettingsDep,
    declare_roles,
    load_token_user,
    request_token,
)
from viewer_api.errors import RoleDenied
from viewer_api.schemas import MAX_INT64, EventOut
from viewer_api.security import decode_access_token, oauth2_scheme
from worklist import events
from worklist.accounts import get_user
from worklist.models import ROLE_ADMIN, ROLE_CLINIC, ROLE_RADIOLOGIST, User

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/events", tags=["events"])

POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 15.0
MAX_STREAM_SECONDS = 30 * 60
BATCH = 100
STREAM_ROLES = (ROLE_RADIOLOGIST, ROLE_ADMIN, ROLE_CLINIC)
_UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}


def _stop_event(app: FastAPI) -> threading.Event:
    stop: threading.Event | None = getattr(app.state, "event_streams_stop", None)
    if stop is None:
        stop = threading.Event()
        app.state.event_streams_stop = stop
    return stop


def stop_streams(app: FastAPI) -> None:
    """End every open event stream of ``app`` (call before stopping the server)."""
    _stop_event(app).set()


def stream_user(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    header_token: Annotated[str | None, Depends(oauth2_scheme)],
    access_token: Annotated[str | None, Query(max_length=4096)] = None,
) -> User:
    """The caller, from the bearer header, the ``access_token`` query parameter or the web
    session's cookie."""
    token = request_token(request, header_token or access_token, settings)
    claims = decode_access_token(token, settings=settings)  # InvalidToken: 401
    user = load_token_user(session, claims, now)  # AccountRefused, SessionEnded: 401
    if user.role not in STREAM_ROLES:
        raise RoleDenied()
    return user


declare_roles(stream_user, STREAM_ROLES)  # published as x-teleread-roles (viewer_api.access)
StreamUser = Annotated[User, Depends(stream_user)]


def _start_after(session: Session, last_event_id: str | None, after: int | None) -> int:
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
    return events.last_id(session=session)


def format_event(event: EventOut) -> str:
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n"


def _poll(
    factory: sessionmaker[Session], user_id: int, after: int, opened_at: datetime
) -> list[EventOut] | None:
    """Events after ``after`` for the user; None when the account is no longer allowed
    (disabled, another role, or its tokens revoked since the stream opened)."""
    with factory() as session:
        user = get_user(session=session, user_id=user_id)
        if user is None or not user.is_active or user.role not in STREAM_ROLES:
            return None
        if user.tokens_valid_after is not None and user.tokens_valid_after > opened_at:
            return None
        rows = events.list_since(session=session, after_id=after, viewer=user, limit=BATCH)
        return [EventOut.model_validate(events.as_dict(e)) for e in rows]


async def _stream(request: Request, user_id: int, after: int) -> AsyncIterator[str]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    stop = _stop_event(request.app)
    poll_seconds: float = getattr(request.app.state, "event_poll_seconds", POLL_SECONDS)
    started = last_sent = time.monotonic()
    opened_at: datetime = request.app.state.clock()  # the token was checked just now
    yield "retry: 3000\n\n"
    while not stop.is_set():
        batch = await asyncio.to_thread(_poll, factory, user_id, after, opened_at)
        if batch is None:
            break
        for event in batch:
            after = event.id
            yield format_event(event)
            last_sent = time.monotonic()
        if len(batch) == BATCH:
            continue  # more waiting: no sleep
        now = time.monotonic()
        if now - last_sent >= HEARTBEAT_SECONDS:
            yield ": heartbeat\n\n"
            last_sent = now
        if now - started >= MAX_STREAM_SECONDS or await request.is_disconnected():
            break
        await asyncio.sleep(poll_seconds)
    logger.info("event stream closed", extra={"action": "events_stream_closed", "after": after})


@router.get("", response_class=StreamingResponse)
def stream(
    request: Request,
    session: SessionDep,
    user: StreamUser,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_INT64)] = None,
) -> StreamingResponse:
    """The event stream (``text/event-stream``)."""
    start = _start_after(session, last_event_id, after)
    logger.info(
        "event stream opened",
        extra={"action": "events_stream_opened", "user_id": user.id, "after": start},
    )
    return StreamingResponse(
        _stream(request, user.id, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/recent", response_model=list[EventOut])
def recent(
    session: SessionDep,
    user: StreamUser,
    after: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
    limit: Annotated[int, Query(ge=1, le=events.MAX_PAGE)] = 100,
) -> list[EventOut]:
    """Events after ``after``, oldest first (for clients that poll)."""
    rows = events.list_since(session=session, after_id=after, viewer=user, limit=limit)
    return [EventOut.model_validate(events.as_dict(e)) for e in rows]
