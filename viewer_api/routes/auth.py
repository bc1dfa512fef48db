"""Log-in: the OAuth2 password flow."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordRequestForm

from viewer_api.deps import ClientAddr, NowDep, SessionDep, SettingsDep
from viewer_api.schemas import Token
from viewer_api.security import create_access_token
from worklist import audit
from worklist.accounts import authenticate

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@router.post(
    "/token",
    response_model=Token,
    responses={status.HTTP_401_UNAUTHORIZED: {"description": "Wrong user name or password"}},
)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    client_addr: ClientAddr,
) -> Token | JSONResponse:
    user = authenticate(session=session, username=form.username, password=form.password)
    if user is None:
        # returned, not raised, so the failed attempt's audit event is committed
        audit.record(
            session=session,
            actor=None,
            action="login",
            object_type="user",
            object_id=form.username[:128],
            client_addr=client_addr,
            outcome="denied",
            now=now,
        )
        logger.info("login refused", extra={"action": "login_refused"})
        return JSONResponse(
            {"detail": "Incorrect username or password"},
            status_code=status.HTTP_401_UNAUTHORIZED,
            headers={"WWW-Authenticate": "Bearer"},
        )
    audit.record(
        session=session,
        actor=user,
        action="login",
        object_type="user",
        object_id=str(user.id),
        client_addr=client_addr,
        now=now,
    )
    return Token(
        access_token=create_access_token(user=user, settings=settings, now=now),
        expires_in=settings.token_ttl_seconds,
        role=user.role,
        site=user.site.code if user.site is not None else None,
    )
