"""What routes receive: the request's database session, the caller, the store, the clock,
the request's audit trail (``Audit``) and a study the caller may see (``VisibleStudy``).

The dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency
in its thread pool, and each such hop costs more than these functions do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from storage.base import ObjectStore
from viewer_api.auditing import REFUSED, Auditor, AuditWriter
from viewer_api.errors import (
    AccountRefused,
    CsrfRefused,
    NotAuthenticated,
    RoleDenied,
    SessionEnded,
)
from viewer_api.security import (
    CSRF_HEADER,
    SESSION_COOKIE,
    TokenClaims,
    UserCache,
    account_accepts,
    csrf_matches,
    decode_access_token,
    oauth2_scheme,
)
from viewer_api.settings import ApiSettings
from worklist import repository
from worklist.accounts import get_user, web_session_open
from worklist.audit import AuditAction, PendingEvent
from worklist.errors import StudyNotFound
from worklist.models import (
    ROLE_ADMIN,
    ROLE_CLINIC,
    ROLE_GATEWAY,
    ROLE_RADIOLOGIST,
    ROLES,
    Study,
    User,
)
from worklist.settings import WorklistSettings


def _commit(session: Session) -> None:
    try:
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _rollback(session: Session) -> None:
    try:
        session.rollback()
    finally:
        session.close()


async def _in_thread(work: Callable[[Session], None], session: Session) -> None:
    """Database I/O off the event loop, finished even when the request is cancelled."""
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(work, session)


# the attribute ``reads_only`` sets on a route's endpoint
READS_ONLY_ATTRIBUTE = "teleread_reads_only"

F = TypeVar("F", bound=Callable[..., Any])


def reads_only(endpoint: F) -> F:
    """Mark a route whose every request only reads (views audited through
    ``Auditor.view``): ``get_db`` then gives it a read session (``app.state.
    read_session_factory``, ``worklist.db.make_read_sessionmaker``), which sends no
    ``BEGIN`` and no ``COMMIT`` on PostgreSQL and raises ``ReadOnlySession`` if asked to
    write. Put it under the ``@router.get``."""
    setattr(endpoint, READS_ONLY_ATTRIBUTE, True)
    return endpoint


async def get_db(request: Request) -> AsyncIterator[Session]:
    """One session per request: committed when the route returns normally, rolled back when
    it raises (a mapped ``WorklistError`` or an ``HTTPException`` included). Opening a
    session does no I/O; committing and rolling back run in the thread pool. A hot route
    may ``session.commit()`` itself when done with the database (its connection goes back
    to the pool sooner, and this saves the hop). A route marked ``reads_only`` gets a read
    session; every dependency of the request shares the one session either way."""
    state = request.app.state
    reads = getattr(request.scope.get("endpoint"), READS_ONLY_ATTRIBUTE, False)
    factory: sessionmaker[Session] = state.read_session_factory if reads else state.session_factory
    session = factory()
    try:
        yield session
    except BaseException:
        await _in_thread(_rollback, session)
        raise
    if session.in_transaction() or session.new or session.dirty or session.deleted:
        await _in_thread(_commit, session)
    else:  # the route committed itself, in its own thread: no I/O is left, so no hop
        session.close()


# scope="function": the commit runs when the route returns, before the response goes out,
# so a client never sees 200 for work that then fails to commit.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]


async def get_settings_dep(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


async def get_store(request: Request) -> ObjectStore:
    store: ObjectStore = request.app.state.store
    return store


async def get_worklist_settings(request: Request) -> WorklistSettings:
    settings: WorklistSettings = request.app.state.worklist_settings
    return settings


async def get_now(request: Request) -> datetime:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock()


def client_addr_of(request: Request) -> str:
    return request.client.host if request.client is not None else ""


async def get_client_addr(request: Request) -> str:
    return client_addr_of(request)


SettingsDep = Annotated[ApiSettings, Depends(get_settings_dep)]
WorklistSettingsDep = Annotated[WorklistSettings, Depends(get_worklist_settings)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
NowDep = Annotated[datetime, Depends(get_now)]
ClientAddr = Annotated[str, Depends(get_client_addr)]


# requests that change nothing: a session cookie alone authenticates them
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def request_token(request: Request, bearer: str | None, settings: ApiSettings) -> str:
    """The request's credential: the bearer token, else the web session's cookie (then a
    state-changing request must carry the session's CSRF token in ``X-CSRF-Token``:
    ``CsrfRefused``, 403, otherwise); ``NotAuthenticated`` (401) when there is neither."""
    if bearer:
        return bearer
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise NotAuthenticated()
    given = request.headers.get(CSRF_HEADER)
    if request.method not in SAFE_METHODS and not csrf_matches(cookie, given, settings=settings):
        raise CsrfRefused()
    return cookie


async def get_current_user(
    request: Request,
    session: SessionDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> User:
    """The active user the bearer token (or the web session's cookie, ``request_token``)
    names; 401 otherwise. A token whose role no longer matches the account (the role was
    changed), issued before the account's tokens were revoked (``User.tokens_valid_after``),
    or of a web session that ended (log-out), is refused too.

    A token checked in the last ``settings.user_cache_seconds`` is not checked again: its
    account comes from the app's ``UserCache``, merged into this request's session without
    a query (see ``UserCache`` for what that allows). Every request of every route meets
    this: the settings are read off the app, not resolved as one more dependency."""
    settings: ApiSettings = request.app.state.settings
    token = request_token(request, token, settings)
    cache: UserCache = request.app.state.user_cache
    cached = cache.get(token)
    if cached is not None:
        return session.merge(cached, load=False)
    claims = decode_access_token(token, settings=settings)  # InvalidToken: 401
    now: datetime = request.app.state.clock()
    user = await run_in_threadpool(load_token_user, session, claims, now)
    cache.put(token, user, claims)
    return user


def load_token_user(session: Session, claims: TokenClaims, now: datetime) -> User:
    """The account a valid token names, if it still honours the token
    (``AccountRefused`` otherwise) and the token's web session, if it has one, is open
    (``SessionEnded`` otherwise)."""
    user = get_user(session=session, user_id=claims.user_id)
    if user is None or not account_accepts(user, claims):
        raise AccountRefused()
    if claims.session_id is not None and not web_session_open(
        session=session, session_id=claims.session_id, user_id=user.id, now=now
    ):
        raise SessionEnded()
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


# the attribute a guard dependency carries: the roles it lets through (viewer_api.access
# reads it to publish each route's roles in the OpenAPI schema as ``x-teleread-roles``)
ROLES_ATTRIBUTE = "teleread_roles"


def require_roles(*roles: str) -> Callable[[User], Coroutine[Any, Any, User]]:
    """A dependency that lets only ``roles`` through (``RoleDenied``, 403, for the others)."""

    async def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise RoleDenied()
        return user

    setattr(check, ROLES_ATTRIBUTE, frozenset(roles))
    return check


def declare_roles(dependency: Callable[..., Any], roles: Sequence[str]) -> None:
    """Mark a guard written by hand (not with ``require_roles``) with the roles it admits."""
    setattr(dependency, ROLES_ATTRIBUTE, frozenset(roles))


# any active account, whatever its role
declare_roles(get_current_user, ROLES)


# read studies and reports (a clinic only its own site's: the repository filters)
VIEWER_ROLES = (ROLE_RADIOLOGIST, ROLE_ADMIN, ROLE_CLINIC)
ViewerUser = Annotated[User, Depends(require_roles(*VIEWER_ROLES))]
# claim studies, write and sign reports
ReaderUser = Annotated[User, Depends(require_roles(ROLE_RADIOLOGIST, ROLE_ADMIN))]
# announce arrived instances, read the gateway configuration
GatewayUser = Annotated[User, Depends(require_roles(ROLE_GATEWAY))]
# add addenda and record critical results: radiologists only (medical content)
RadiologistUser = Annotated[User, Depends(require_roles(ROLE_RADIOLOGIST))]
# manage accounts, see the audit trail and the statistics
AdminUser = Annotated[User, Depends(require_roles(ROLE_ADMIN))]


async def get_audit(
    request: Request, session: SessionDep, user: CurrentUser, now: NowDep
) -> Auditor:
    """The request's audit trail, the caller as actor. ``user`` is the guard's own (FastAPI
    resolves ``get_current_user`` once per request), so this adds no work and no check."""
    writer: AuditWriter = request.app.state.audit_writer
    return Auditor(
        session=session, actor=user, client_addr=client_addr_of(request), now=now, writer=writer
    )


async def get_anonymous_audit(
    request: Request, session: SessionDep, now: NowDep, client_addr: ClientAddr
) -> Auditor:
    """The audit trail of a route without a logged-in caller (the log-in itself, a share
    link): no actor until ``Auditor.by`` names one."""
    writer: AuditWriter = request.app.state.audit_writer
    return Auditor(session=session, actor=None, client_addr=client_addr, now=now, writer=writer)


# record what the caller did: ``audit(AuditAction.STUDY_CLAIMED, object_id=uid)``
Audit = Annotated[Auditor, Depends(get_audit)]
AnonymousAudit = Annotated[Auditor, Depends(get_anonymous_audit)]


def get_visible_study(
    study_uid: str, request: Request, session: SessionDep, user: CurrentUser, now: NowDep
) -> Study:
    """The study of the path's ``study_uid`` if the caller may see it; ``StudyNotFound``
    (404) otherwise, so a clinic cannot even learn that another site's study exists (the
    attempt on another site's study is audited, ``study_access_refused``, off the request
    path: the request's own transaction is rolled back). Declare it after the route's
    guard: a caller of the wrong role gets 403 first. The views opened most often (a study,
    its report) call it in their own body instead, after the same guard: one trip to the
    thread pool per request instead of two."""
    study = repository.get_study(session=session, study_uid=study_uid, viewer=user)
    if study is None:
        if repository.study_exists(session=session, study_uid=study_uid):
            writer: AuditWriter = request.app.state.audit_writer
            writer.add(
                PendingEvent.of(
                    actor=user,
                    action=AuditAction.STUDY_ACCESS_REFUSED,
                    object_id=study_uid,
                    client_addr=client_addr_of(request),
                    outcome=REFUSED,
                    detail={"via": "api", "path": request.url.path[:256]},
                    now=now,
                )
            )
        raise StudyNotFound()
    return study


VisibleStudy = Annotated[Study, Depends(get_visible_study)]


__all__ = [
    "ROLES_ATTRIBUTE",
    "VIEWER_ROLES",
    "AdminUser",
    "AnonymousAudit",
    "Audit",
    "ClientAddr",
    "CurrentUser",
    "GatewayUser",
    "NowDep",
    "RadiologistUser",
    "ReaderUser",
    "SessionDep",
    "SettingsDep",
    "StoreDep",
    "ViewerUser",
    "VisibleStudy",
    "WorklistSettingsDep",
    "client_addr_of",
    "declare_roles",
    "get_db",
    "get_visible_study",
    "load_token_user",
    "reads_only",
    "request_token",
    "require_roles",
]
