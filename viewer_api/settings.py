"""viewer_api's settings (env prefix ``TELEREAD_API_``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from viewer_api.errors import InsecureSecretKey

DEFAULT_TOKEN_TTL_SECONDS = 8 * 3600
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
# how long an account checked for one token is trusted without reloading it (security.UserCache)
DEFAULT_USER_CACHE_SECONDS = 2.0
# HS256 wants a key at least as long as its 256-bit output (RFC 7518 3.2)
MIN_SECRET_KEY_LENGTH = 32
_KNOWN_DEFAULTS = frozenset(
    {"", "changethis", "changeme", "change-me", "secret", "secret-key", "secretkey", "default"}
)


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TELEREAD_API_", extra="ignore")

    secret_key: SecretStr = SecretStr("")
    token_ttl_seconds: int = DEFAULT_TOKEN_TTL_SECONDS
    host: str = "127.0.0.1"
    port: int = 8000
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # 0 turns the cache off; more than a few seconds would let a disabled account linger
    user_cache_seconds: float = Field(DEFAULT_USER_CACHE_SECONDS, ge=0, le=10)

    @field_validator("secret_key", mode="after")
    @classmethod
    def _refuse_default_secret(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw.strip().lower() in _KNOWN_DEFAULTS or len(raw) < MIN_SECRET_KEY_LENGTH:
            # not a ValueError: pydantic lets it through unwrapped, so start-up fails with
            # this message rather than a generic validation error
            raise InsecureSecretKey()
        return value

    @field_validator("token_ttl_seconds", "max_request_bytes", mode="after")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be positive")
        return value


@lru_cache(maxsize=1)
def get_settings() -> ApiSettings:
    return ApiSettings()


__all__ = ["ApiSettings", "get_settings"]
