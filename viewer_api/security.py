"""Access tokens: HS256 JWTs carrying the user id (``sub``), the role and an expiry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from fastapi.security import OAuth2PasswordBearer

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


__all__ = [
    "ALGORITHM",
    "TOKEN_URL",
    "TokenClaims",
    "create_access_token",
    "decode_access_token",
    "oauth2_scheme",
]
