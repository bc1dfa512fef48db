"""Access tokens: HS256 JWTs carrying the user id (``sub``), the role and an expiry; and
the short-lived cache of the accounts that valid tokens name."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import make_transient_to_detached

from viewer_api.errors import InvalidToken
from viewer_api.settings import ApiSettings
from worklist.models import User

ALGORITHM = "HS256"
TOKEN_URL = "/api/v1/auth/token"

oauth2_scheme = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    role: str
    expires_at: datetime


def create_access_token(*, user: User, settings: ApiSettings, now: datetime) -> str:
    """A signed token for ``user`` valid for ``settings.token_ttl_seconds`` from ``now``."""
    payload = {
        "sub": str(user.id),
        "role": user.role,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=settings.token_ttl_seconds)).timestamp()),
    }
    return jwt.encode(payload, settings.secret_key.get_secret_value(), algorithm=ALGORITHM)


def decode_access_token(token: str, *, settings: ApiSettings) -> TokenClaims:
    """The claims of a valid, unexpired token; ``InvalidToken`` otherwise."""
    try:
        payload = jwt.decode(
            token,
            settings.secret_key.get_secret_value(),
            algorithms=[ALGORITHM],
            options={"require": ["sub", "exp"]},
        )
        user_id = int(payload["sub"])
        role = str(payload.get("role", ""))
        expires_at = datetime.fromtimestamp(int(payload["exp"]), UTC)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise InvalidToken() from exc
    return TokenClaims(user_id=user_id, role=role, expires_at=expires_at)


class UserCache:
    """Token -> a detached copy of the active account it names, trusted for ``ttl`` seconds.

    Saves decoding the token and loading the account on every request. The price: an
    account disabled, or given another role or site, keeps working with a token it already
    used for at most ``ttl`` seconds in each API process (``TELEREAD_API_USER_CACHE_SECONDS``,
    2 s by default; 0 turns the cache off). Keyed by the whole token, so a new token (new
    ``iat``, role) is always checked against the database first; a token's expiry is checked
    on every hit. Holds at most ``max_entries`` tokens (the oldest go first).
    """

    def __init__(self, ttl: float, *, max_entries: int = 4096) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[User, float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> User | None:
        """The cached account (detached: ``session.merge(user, load=False)`` it), or None."""
        if self.ttl <= 0:
            return None
        with self._lock:
            item = self._items.get(token)
            if item is None:
                return None
            user, fresh_until, expires_at = item
            if time.monotonic() >= fresh_until or time.time() >= expires_at:
                del self._items[token]
                return None
            return user

    def put(self, token: str, user: User, claims: TokenClaims) -> None:
        """Remember ``user`` (already checked active, with the token's role) for ``token``."""
        if self.ttl <= 0:
            return
        copy = User(
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            password_hash=user.password_hash,
            role=user.role,
            site_id=user.site_id,
            is_active=user.is_active,
            created_at=user.created_at,
        )
        make_transient_to_detached(copy)
        entry = (copy, time.monotonic() + self.ttl, claims.expires_at.timestamp())
        with self._lock:
            self._items[token] = entry
            self._items.move_to_end(token)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


__all__ = [
    "ALGORITHM",
    "TOKEN_URL",
    "TokenClaims",
    "UserCache",
    "create_access_token",
    "decode_access_token",
    "oauth2_scheme",
]
