"""Log-in: the OAuth2 password flow for API clients (``/token``) and the web pages' session
(``/session``: a cookie every tab of a browser shares, ended at log-out), with failed
attempts throttled (``LoginThrottle``: a locked-out account, or a name held at an address
that failed too often, answers 429 with ``Retry-After`` before the password is checked)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy.orm import Session

from viewer_api.access import capabilities
from viewer_api.auditing import Auditor
from viewer_api.deps import AnonymousAudit, Audit, CurrentUser, SessionDep, SettingsDep
from viewer_api.errors import BEARER, CODES_BY_STATUS, InvalidText, InvalidToken, answer
from viewer_api.schemas import SessionOut, Token, text_problem
from viewer_api.security import (
    SESSION_COOKIE,
    LoginThrottle,
    UserCache,
    create_access_token,
    csrf_token,
    decode_access_token,
)
from worklist.accounts import authenticate, end_web_session, start_web_session
from worklist.audit import AuditAction
from worklist.models import User

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

_LOGIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    status.HTTP_401_UNAUTHORIZED: {"description": "Wrong user name or password"},
    status.HTTP_429_TOO_MANY_REQUESTS: {"description": "Too many failed log-ins; wait"},
}
Form = Annotated[OAuth2PasswordRequestForm, Depends()]


@router.post("/token", response_model=Token, responses=_LOGIN_RESPONSES)
def login(
    request: Request,
    form: Form,
    session: SessionDep,
    settings: SettingsDep,
    audit: AnonymousAudit,
) -> Token | JSONResponse:
    """A bearer token for API clients."""
    user = _log_in(request, form, session, audit)
    if isinstance(user, JSONResponse):
        return user
    return Token(
        access_token=create_access_token(user=user, settings=settings, now=audit.now),
        expires_in=settings.token_ttl_seconds,
        role=user.role,
        site=user.site.code if user.site is not None else None,
    )


@router.post("/session", response_model=SessionOut, responses=_LOGIN_RESPONSES)
def start_session(
    request: Request,
    response: Response,
    form: Form,
    session: SessionDep,
    settings: SettingsDep,
    audit: AnonymousAudit,
) -> SessionOut | JSONResponse:
    """Log a browser in: a web session whose token goes in an HttpOnly, SameSite=Strict
    cookie (every tab of the browser shares it; the pages never see it), and the CSRF token
    that state-changing requests must send in ``X-CSRF-Token``."""
    user = _log_in(request, form, session, audit)
    if isinstance(user, JSONResponse):
        return user
    ttl = timedelta(seconds=settings.token_ttl_seconds)
    web = start_web_session(session=session, user=user, now=audit.now, ttl=ttl)
    token = create_access_token(user=user, settings=settings, now=audit.now, session_id=web.id)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.token_ttl_seconds,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return _session_out(request, user, csrf_token(token, settings=settings))


@router.get("/session", response_model=SessionOut)
def current_session(request: Request, user: CurrentUser, settings: SettingsDep) -> SessionOut:
    """The signed-in account and what the web pages may offer it (with the CSRF token when
    the request came with the session cookie)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    bearer = request.headers.get("authorization")
    csrf = csrf_token(cookie, settings=settings) if cookie and not bearer else None
    return _session_out(request, user, csrf)


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT)
def end_session(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    audit: Audit,
) -> Response:
    """Log the browser out: its web session ends (in every tab, and for anyone holding a
    copy of the cookie) and the cookie is cleared."""
    cookie = request.cookies.get(SESSION_COOKIE)
    session_id = None
    if cookie:
        try:
            session_id = decode_access_token(cookie, settings=settings).session_id
        except InvalidToken:
            session_id = None
    if cookie and session_id is not None:
        end_web_session(session=session, session_id=session_id, now=audit.now)
        cache: UserCache = request.app.state.user_cache
        cache.discard(cookie)
        audit(AuditAction.LOGOUT, object_id=str(user.id))
    done = Response(status_code=status.HTTP_204_NO_CONTENT)
    done.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return done


def _session_out(request: Request, user: User, csrf: str | None) -> SessionOut:
    return SessionOut(
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        site=user.site.code if user.site is not None else None,
        capabilities=capabilities(request.app, user.role),
        csrf_token=csrf,
    )


def _log_in(
    request: Request, form: OAuth2PasswordRequestForm, session: Session, audit: Auditor
) -> User | JSONResponse:
    """The account ``form`` names, its log-in audited; or the refusal to answer with
    (throttled: 429; wrong name or password: 401), audited too."""
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
    return user


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
