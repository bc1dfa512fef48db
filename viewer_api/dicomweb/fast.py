"""What the plain Starlette routes of ``FAST_ROUTES`` share: the checks the documented
FastAPI routes get from their dependencies, in the same order, and the one thread hop.

A viewer scrolling a series asks for one image per slice; FastAPI's per-request parameter
and dependency machinery costs about as much as serving it. These routes skip it:

    session = request.app.state.session_factory()
    try:
        user = await viewer(request, session)  # URL rules 422/400, token 401, role 403
        ...parameters (400)...
        return await in_thread(session, lambda: work(session, user))  # 404, 406, audit
    finally:
        session.close()
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from viewer_api.deps import VIEWER_ROLES, get_current_user
from viewer_api.errors import RoleDenied
from viewer_api.limits import check_url_inputs
from viewer_api.security import oauth2_scheme
from worklist.models import User


async def viewer(request: Request, session: Session) -> User:
    """``check_url_inputs`` (NUL 400, UID grammar 422), the bearer token (401), then a
    viewer role (403): what ``ViewerUser`` and the app-wide dependency do."""
    await check_url_inputs(request)
    token = await oauth2_scheme(request)
    user = await get_current_user(request, session, request.app.state.settings, token)
    if user.role not in VIEWER_ROLES:
        raise RoleDenied()
    return user


async def in_thread(session: Session, work: Callable[[], Response]) -> Response:
    """``work`` in the thread pool, with ``session`` rolled back if it raises (nothing to
    undo once it has committed) and closed either way, even when the request is cancelled."""

    def run() -> Response:
        try:
            return work()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    with anyio.CancelScope(shield=True):
        response = await run_in_threadpool(run)
    return response


__all__ = ["in_thread", "viewer"]
