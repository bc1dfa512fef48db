"""Who may scrape ``GET /metrics``: the metrics token or an admin's bearer token, from any
address (loopback included); otherwise 401 or 403 (see ``viewer_api.metrics``)."""

from __future__ import annotations

import hmac

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from viewer_api.errors import InvalidToken, NotAuthenticated, RoleDenied
from viewer_api.security import UserCache, account_accepts, decode_access_token
from viewer_api.settings import ApiSettings
from worklist.accounts import get_user
from worklist.models import ROLE_ADMIN

_DENIED = "Metrics need the metrics token or an admin's token"


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _metrics_token(settings: ApiSettings) -> str | None:
    secret = settings.metrics_token
    raw = secret.get_secret_value() if secret is not None else ""
    return raw or None


async def authorize(request: Request) -> None:
    """Let the scrape through, or raise 401 / 403 (see the module docstring)."""
    settings: ApiSettings = request.app.state.settings
    expected = _metrics_token(settings)
    token = _bearer(request)
    if token is None:
        raise NotAuthenticated(_DENIED)
    if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
        return
    if not await _is_admin(request, token, settings):
        raise RoleDenied(_DENIED)


async def _is_admin(request: Request, token: str, settings: ApiSettings) -> bool:
    cache: UserCache = request.app.state.user_cache
    cached = cache.get(token)
    if cached is not None:
        return cached.role == ROLE_ADMIN
    try:
        claims = decode_access_token(token, settings=settings)
    except InvalidToken as exc:
        raise NotAuthenticated(_DENIED) from exc
    if claims.role != ROLE_ADMIN:
        return False
    factory: sessionmaker[Session] = request.app.state.session_factory

    def load() -> bool:
        with factory() as session:
            user = get_user(session=session, user_id=claims.user_id)
            return user is not None and account_accepts(user, claims)  # role admin: above

    if not await run_in_threadpool(load):
        raise NotAuthenticated(_DENIED)
    return True
