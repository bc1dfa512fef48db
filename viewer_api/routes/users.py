"""Accounts, for admins: list and create them, disable and enable, reset a password, revoke
tokens (for a township gateway's credential: a fresh password too, shown once).

Every change is audited. A revocation takes effect at once in this API process (its
account cache forgets the user) and within ``TELEREAD_API_USER_CACHE_SECONDS`` in the
others.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from viewer_api.auditing import Auditor
from viewer_api.deps import AdminUser, Audit, NowDep, SessionDep
from viewer_api.errors import CannotDisableSelf, UserNotFound
from viewer_api.schemas import Input
from viewer_api.security import UserCache
from worklist import accounts
from worklist.audit import AuditAction
from worklist.models import User

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/users", tags=["users"])

MIN_PASSWORD = 8
MAX_PASSWORD = 128
# any name an account may have (``teleread users add`` is less strict than the API), but
# no control characters: PostgreSQL refuses NUL
Username = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]


def _storable(value: str) -> str:
    """Text a database and argon2 accept: no NUL, no unpaired surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode") from exc
    return value


Text = Annotated[str, AfterValidator(_storable)]


class UserOut(BaseModel):
    username: str
    display_name: str
    title: str
    role: str
    site: str | None
    is_active: bool
    created_at: datetime
    # tokens issued at or before this are refused (None: never revoked)
    tokens_valid_after: datetime | None

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            username=user.username,
            display_name=user.display_name,
            title=user.title,
            role=user.role,
            site=user.site.code if user.site is not None else None,
            is_active=user.is_active,
            created_at=user.created_at,
            tokens_valid_after=user.tokens_valid_after,
        )


class UserCreateIn(Input):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: Text = Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)
    role: Literal["radiologist", "clinic", "admin", "gateway"]
    # clinic accounts need one; a township gateway is bound to one (none: every site)
    site: Text | None = Field(default=None, min_length=1, max_length=32)
    display_name: Text = Field(default="", max_length=200)
    # professional title printed under the signer's name on reports ("主治医师")
    title: Text = Field(default="", max_length=100)


class PasswordIn(Input):
    model_config = ConfigDict(extra="forbid")

    password: Text = Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)


class RevokeOut(BaseModel):
    user: UserOut
    # a gateway credential's new password, shown this once (None for a person's account)
    new_password: str | None


def _find(session: Session, username: str) -> User:
    user = accounts.get_user_by_username(session=session, username=username)
    if user is None:
        raise UserNotFound(f"No user {username!r}")
    return user


def _audit(audit: Auditor, action: AuditAction, target: User, **detail: object) -> None:
    audit(action, object_id=target.username, detail={"role": target.role, **detail})


def _commit_and_forget(request: Request, session: Session, user: User) -> None:
    """Commit first, then drop the account from this process's cache, so no request can
    cache the old account again in between."""
    session.commit()
    cache: UserCache = request.app.state.user_cache
    cache.discard_user(user.id)


@router.get("", response_model=list[UserOut])
def list_accounts(session: SessionDep, admin: AdminUser) -> list[UserOut]:
    return [UserOut.of(u) for u in accounts.list_users(session=session)]


@router.post("", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def create_account(
    body: UserCreateIn,
    session: SessionDep,
    admin: AdminUser,
    audit: Audit,
    now: NowDep,
) -> UserOut:
    """A new account (409 if the name is taken; 422 for an unknown site, or a clinic
    account without one)."""
    user = accounts.create_user(
        session=session,
        username=body.username,
        password=body.password,
        role=body.role,
        site_code=body.site,
        display_name=body.display_name,
        title=body.title,
        now=now,
    )
    _audit(audit, AuditAction.USER_CREATED, user, site=body.site)
    return UserOut.of(user)


@router.get("/{username}", response_model=UserOut)
def get_account(username: Username, session: SessionDep, admin: AdminUser) -> UserOut:
    return UserOut.of(_find(session, username))


@router.post("/{username}/disable", response_model=UserOut)
def disable_account(
    username: Username,
    request: Request,
    session: SessionDep,
    admin: AdminUser,
    audit: Audit,
    now: NowDep,
) -> UserOut:
    """The account can no longer log in and its tokens are refused."""
    user = _find(session, username)
    if user.id == admin.id:
        raise CannotDisableSelf()
    accounts.disable_user(session=session, user=user, now=now)
    _audit(audit, AuditAction.USER_DISABLED, user)
    out = UserOut.of(user)
    _commit_and_forget(request, session, user)
    return out


@router.post("/{username}/enable", response_model=UserOut)
def enable_account(
    username: Username,
    session: SessionDep,
    admin: AdminUser,
    audit: Audit,
    now: NowDep,
) -> UserOut:
    """The account can log in again (the tokens it had stay refused)."""
    user = _find(session, username)
    accounts.enable_user(session=session, user=user, now=now)
    _audit(audit, AuditAction.USER_ENABLED, user)
    return UserOut.of(user)


@router.post("/{username}/password", response_model=UserOut)
def reset_account_password(
    username: Username,
    body: PasswordIn,
    request: Request,
    session: SessionDep,
    admin: AdminUser,
    audit: Audit,
    now: NowDep,
) -> UserOut:
    """Set a new password; the account's tokens issued so far are refused."""
    user = _find(session, username)
    accounts.reset_password(session=session, user=user, password=body.password, now=now)
    _audit(audit, AuditAction.USER_PASSWORD_RESET, user)
    out = UserOut.of(user)
    _commit_and_forget(request, session, user)
    return out


@router.post("/{username}/revoke", response_model=RevokeOut)
def revoke_account(
    username: Username,
    request: Request,
    session: SessionDep,
    admin: AdminUser,
    audit: Audit,
    now: NowDep,
) -> RevokeOut:
    """Refuse every token the account holds. A gateway credential also gets a fresh random
    password (in the answer, this once): the township gateway must be given it to send
    again."""
    user = _find(session, username)
    new_password = accounts.revoke_credential(session=session, user=user, now=now)
    action = (
        AuditAction.USER_TOKENS_REVOKED
        if new_password is None
        else AuditAction.GATEWAY_CREDENTIAL_REVOKED
    )
    _audit(audit, action, user)
    out = RevokeOut(user=UserOut.of(user), new_password=new_password)
    _commit_and_forget(request, session, user)
    return out


__all__ = ["router"]
