"""Log-in: the OAuth2 password flow, with failed attempts throttled (``LoginThrottle``:
too many for one name from one address, or from one address at all, answer 429 with
``Retry-After`` before the password is checked)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordRequestForm

from viewer_api.auditing import Auditor
from viewer_api.deps import AnonymousAudit, SessionDep, SettingsDep
from viewer_api.errors import BEARER, CODES_BY_STATUS, InvalidText, answer
from viewer_api.schemas import Token, text_problem
from viewer_api.security import LoginThrottle, create_access_token
from worklist.accounts import authenticate
from worklist.audit import AuditAction

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@router.post(
    "/token",
    response_model=Token,
    responses={
        status.HTTP_401_UNAUTHORIZED: {"description": "Wrong user name or password"},
        status.HTTP_429_TOO_MANY_REQUESTS: {"description": "Too many failed log-ins; wait"},
    },
)
def login(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
    audit: AnonymousAudit,
) -> Token | JSONResponse:
    for field, value in (("username", form.username), ("password", form.password)):
        problem = text_problem(value)
        if problem is not None:  # before any database work: PostgreSQL refuses NUL in text
            raise InvalidText(f"{field}: text {problem}")
    throttle: LoginThrottle = request.app.state.login_throttle
    client_addr, at = audit.client_addr, audit.now.timestamp()
    wait = throttle.retry_after(form.username, client_addr, at)
    if wait:
        logger.warning(
            "login throttled", extra={"action": "login_throttled", "client_addr": client_addr}
        )
        return _refused(
            audit,
            username=form.username,
            outcome="throttled",
            detail={"retry_after": wait},
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            message="Too many failed log-ins; try again later",
            headers={"Retry-After": str(wait)},
        )
    user = authenticate(session=session, username=form.username, password=form.password)
    if user is None:
        throttle.failed(form.username, client_addr, at)
        logger.info("login refused", extra={"action": "login_refused"})
        return _refused(
            audit,
            username=form.username,
            outcome="denied",
            detail=None,
            status_code=status.HTTP_401_UNAUTHORIZED,
            message="Incorrect username or password",
            headers=BEARER,
        )
    throttle.succeeded(form.username, client_addr)
    audit.by(user)(AuditAction.LOGIN, object_id=str(user.id))
    return Token(
        access_token=create_access_token(user=user, settings=settings, now=audit.now),
        expires_in=settings.token_ttl_seconds,
        role=user.role,
        site=user.site.code if user.site is not None else None,
    )


def _refused(
    audit: Auditor,
    *,
    username: str,
    outcome: str,
    detail: dict[str, Any] | None,
    status_code: int,
    message: str,
    headers: dict[str, str],
) -> JSONResponse:
    """A refused log-in: audited, then answered (returned, not raised, so the audit event is
    committed with the request)."""
    audit(AuditAction.LOGIN, object_id=username[:128], outcome=outcome, detail=detail)
    return answer(status_code, CODES_BY_STATUS[status_code], message, headers)
