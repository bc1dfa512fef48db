"""viewer_api's settings (env prefix ``TELEREAD_API_``)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from viewer_api.errors import InsecureSecretKey

DEFAULT_TOKEN_TTL_SECONDS = 8 * 3600
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
# how long an account checked for one token is trusted without reloading it (security.UserCache)
DEFAULT_USER_CACHE_SECONDS = 2.0
# failed log-ins (security.LoginThrottle): per user name and client address, per address
DEFAULT_LOGIN_MAX_FAILURES = 5
DEFAULT_LOGIN_MAX_FAILURES_PER_ADDRESS = 50
DEFAULT_LOGIN_WINDOW_SECONDS = 300.0
# HS256 wants a key at least as long as its 256-bit output (RFC 7518 3.2)
MIN_SECRET_KEY_LENGTH = 32
_ORIGIN = re.compile(r"https?://[^/\s?#]+")
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
    # failed log-ins allowed within the window before 429 (0 turns a limit off); counted in
    # each API process, so with N replicas an address gets up to N times as many tries
    login_max_failures: int = Field(DEFAULT_LOGIN_MAX_FAILURES, ge=0, le=1000)
    login_max_failures_per_address: int = Field(
        DEFAULT_LOGIN_MAX_FAILURES_PER_ADDRESS, ge=0, le=100_000
    )
    login_window_seconds: float = Field(DEFAULT_LOGIN_WINDOW_SECONDS, gt=0, le=86_400)
    login_throttle_max_entries: int = Field(10_000, ge=100, le=1_000_000)
    # GET /metrics (viewer_api.metrics): unset, loopback clients and admins may scrape; set,
    # only "Authorization: Bearer <this>" and admins may
    metrics_token: SecretStr | None = None
    # the OHIF build served at /ohif/ (``teleread ohif install --dest``); unset:
    # viewer_api/web/ohif, where ``./dev`` and the Docker image put it
    ohif_dir: Path | None = None
    # origins (scheme://host[:port]) whose pages may call the API and DICOMweb from the
    # browser (CORS), e.g. an OHIF hosted elsewhere; empty: none (the default)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # addresses (or networks, "10.0.0.0/8") of the reverse proxies whose X-Forwarded-For and
    # X-Forwarded-Proto are believed: the client address of audit events, log-in limits and
    # /metrics comes from the header only when the connection comes from one of them.
    # Comma-separated; "" believes no one; "*" everyone (never with a port open to clients)
    trusted_proxies: str = "127.0.0.1,::1"

    @field_validator("secret_key", mode="after")
    @classmethod
    def _refuse_default_secret(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw.strip().lower() in _KNOWN_DEFAULTS or len(raw) < MIN_SECRET_KEY_LENGTH:
            # not a ValueError: pydantic lets it through unwrapped, so start-up fails with
            # this message rather than a generic validation error
            raise InsecureSecretKey()
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        """A comma- or space-separated list (``TELEREAD_API_CORS_ORIGINS``), or a list."""
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if isinstance(value, list):
            for origin in value:
                if not (isinstance(origin, str) and _ORIGIN.fullmatch(origin)):
                    raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
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
