"""viewer_api's settings (env prefix ``TELEREAD_API_``)."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from viewer_api.client_address import parse_trusted_proxies
from viewer_api.errors import InsecureSecretKey

DEFAULT_TOKEN_TTL_SECONDS = 8 * 3600
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
# every body but a gateway's announcement is a small JSON document or form
DEFAULT_MAX_JSON_BYTES = 1024 * 1024
# a body larger than this needs a valid bearer token before a byte of it is read
DEFAULT_UNAUTHENTICATED_BODY_BYTES = 64 * 1024
# concurrency (viewer_api.limits.RequestGate): requests handled at once per group; the rest
# wait up to QUEUE_SECONDS, then 503 + Retry-After. The API's routes are CPU work under one
# GIL: more threads add no throughput, and each one more takes turns on the GIL from the
# event loop (every request's parsing and routing, /healthz). bench/load.py, 200 clients,
# SQLite, 2 cores: 8 API slots against 16 gave /healthz p99 1.1 s against 3.6 s and 10 %
# more requests answered; then 4 + 3 against 8 + 6, each pair on the same machine state
# (load 2-3): /healthz p99 118 against 192 ms and 114 against 98 requests/s (and 94
# against 163 ms, 102 against 96/s, on a busier machine)
DEFAULT_API_CONCURRENCY = 4
DEFAULT_IMAGE_CONCURRENCY = 3
DEFAULT_QUEUE_SECONDS = 3.0
# threads beyond the admitted requests: event-stream set-up, readiness, a route's second hop
SPARE_THREADS = 6
# database connections beyond the threads: housekeeping, webhooks, the event notifier, the
# audit writer (viewer_api.auditing.AuditWriter)
SPARE_CONNECTIONS = 5
# how long an account checked for one token is trusted without reloading it (security.UserCache)
DEFAULT_USER_CACHE_SECONDS = 2.0
# how long a worklist page read is served again to whoever asks for it (worklist_pages)
DEFAULT_WORKLIST_CACHE_SECONDS = 1.0
# failed log-ins (security.LoginThrottle): an account is locked after this many, for 30 s,
# then twice as long after each further failure, up to 15 min; its failures are forgotten a
# day after the last one (or at its next log-in)
DEFAULT_LOGIN_MAX_FAILURES = 5
DEFAULT_LOGIN_LOCKOUT_SECONDS = 30.0
DEFAULT_LOGIN_LOCKOUT_MAX_SECONDS = 900.0
DEFAULT_LOGIN_FORGET_SECONDS = 86_400.0
# an address with this many failures within the window (a clinic's NAT: dozens of people,
# each mistyping now and then) holds back the names that fail from it
DEFAULT_LOGIN_MAX_FAILURES_PER_ADDRESS = 200
DEFAULT_LOGIN_WINDOW_SECONDS = 600.0
# API worker processes (teleread.api_workers) when TELEREAD_API_WORKERS is unset: one per
# CPU this process may run on, at least 2 (bench/load.py, 200 clients, SQLite, 2 cores: one
# process is GIL-bound at ~218 requests/s and worklist p99 2.3 s; two answer the ~340/s the
# clients ask), at most 4: each holds its own database pool (``database_connections``), and
# two compose replicas of 4 fill PostgreSQL's default 100 connections
MIN_DEFAULT_WORKERS = 2
MAX_DEFAULT_WORKERS = 4
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
    # rendered images of native greyscale instances read their frame straight from the
    # stored object's tail, by the header the index holds (``dicomweb.pixels``), instead
    # of a pydicom parse; false: every frame through pydicom
    native_frames: bool = True
    # 0 turns the cache off; more than a few seconds would let a disabled account linger
    user_cache_seconds: float = Field(DEFAULT_USER_CACHE_SECONDS, ge=0, le=10)
    # a worklist page read is served again for this long unless studies changed
    # (``viewer_api.worklist_pages``); 0 turns the cache off; more would show other
    # replicas' quiet changes (a routine study's arrival) that much later
    worklist_cache_seconds: float = Field(DEFAULT_WORKLIST_CACHE_SECONDS, ge=0, le=5)
    # failed log-ins (security.LoginThrottle; 0 turns a limit off): an account's failures
    # before it is locked out, the first lock-out (doubling with each further failure) and
    # the longest, and how long after its last failure an account's count is forgotten;
    # an address's failures within the window before the names that fail from it are held.
    # Counted in each API process: with N processes (workers x replicas) an account gets
    # up to N times as many
    login_max_failures: int = Field(DEFAULT_LOGIN_MAX_FAILURES, ge=0, le=1000)
    login_lockout_seconds: float = Field(DEFAULT_LOGIN_LOCKOUT_SECONDS, gt=0, le=86_400)
    login_lockout_max_seconds: float = Field(DEFAULT_LOGIN_LOCKOUT_MAX_SECONDS, gt=0, le=86_400)
    login_forget_seconds: float = Field(DEFAULT_LOGIN_FORGET_SECONDS, gt=0, le=30 * 86_400)
    login_max_failures_per_address: int = Field(
        DEFAULT_LOGIN_MAX_FAILURES_PER_ADDRESS, ge=0, le=100_000
    )
    login_window_seconds: float = Field(DEFAULT_LOGIN_WINDOW_SECONDS, gt=0, le=86_400)
    login_throttle_max_entries: int = Field(10_000, ge=100, le=1_000_000)
    # GET /metrics (viewer_api.metrics): "Authorization: Bearer <this>" or an admin's token,
    # from any address; unset, only admins may scrape
    metrics_token: SecretStr | None = None
    # the OHIF build served at /ohif/ (``teleread ohif install --dest``); unset:
    # viewer_api/web/ohif, where ``./dev`` and the Docker image put it
    ohif_dir: Path | None = None
    # origins (scheme://host[:port]) whose pages may call the API and DICOMweb from the
    # browser (CORS), e.g. an OHIF hosted elsewhere; empty: none (the default)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # addresses (or networks, "10.0.0.0/8") of the reverse proxies whose X-Forwarded-For and
    # X-Forwarded-Proto are believed (viewer_api.client_address): the client address of audit
    # events and log-in limits comes from the header only when the connection comes from one
    # of them, and only when it is an IP address. Comma-separated; "" believes no one; "*"
    # everyone (never with a port open to clients)
    trusted_proxies: str = "127.0.0.1,::1"
    # --- load: processes, concurrency, queueing and slow clients (viewer_api.limits) ---
    # API processes sharing the listening socket (teleread.api_workers); 1: the API runs in
    # the process of `teleread api` / `serve` itself. Everything below is per process
    workers: int = Field(default_factory=lambda: default_workers(), ge=1, le=64)
    # requests handled at once: DICOMweb (images, metadata, QIDO) and the rest of the API
    api_concurrency: int = Field(DEFAULT_API_CONCURRENCY, ge=1, le=1000)
    image_concurrency: int = Field(DEFAULT_IMAGE_CONCURRENCY, ge=1, le=1000)
    # how long a request waits for a slot before 503 + Retry-After, and how many may wait
    queue_seconds: float = Field(DEFAULT_QUEUE_SECONDS, gt=0, le=60)
    queue_depth: int = Field(512, ge=0, le=100_000)
    max_json_bytes: int = Field(DEFAULT_MAX_JSON_BYTES, ge=1024)
    # keys in one JSON body, counted before it is parsed: any route but the ingest ones
    # (no form of ours has more than a few dozen), and the ingest ones (a gateway's batch of
    # 1000 announced instances, headers included, has about 200 000)
    max_json_keys: int = Field(5_000, ge=100)
    max_ingest_json_keys: int = Field(500_000, ge=1000)
    unauthenticated_body_bytes: int = Field(DEFAULT_UNAUTHENTICATED_BODY_BYTES, ge=0)
    # a client that sends nothing for this long while its request body is due gets 408;
    # one that has not finished its request line and headers this long after it started
    # them is disconnected (viewer_api.slow_clients)
    body_idle_seconds: float = Field(15.0, gt=0, le=600)
    header_timeout_seconds: float = Field(10.0, ge=0, le=600)
    # event streams (viewer_api.event_streams): open at once per account and in all, in
    # each API process: with W workers (and R replicas) an account may hold up to W x R x
    # max_streams_per_account streams, each process at most max_streams
    max_streams_per_account: int = Field(10, ge=1, le=10_000)
    max_streams: int = Field(2000, ge=1, le=100_000)

    @property
    def worker_threads(self) -> int:
        """The thread pool: one per admitted request, plus the spare ones."""
        return self.api_concurrency + self.image_concurrency + SPARE_THREADS

    @property
    def database_connections(self) -> int:
        """The database pool: a connection for every thread that may hold one at once."""
        return self.worker_threads + SPARE_CONNECTIONS

    @field_validator("secret_key", mode="after")
    @classmethod
    def _refuse_default_secret(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw.strip().lower() in _KNOWN_DEFAULTS or len(raw) < MIN_SECRET_KEY_LENGTH:
            # not a ValueError: pydantic lets it through unwrapped, so start-up fails with
            # this message rather than a generic validation error
            raise InsecureSecretKey()
        return value

    @field_validator("trusted_proxies", mode="after")
    @classmethod
    def _proxies(cls, value: str) -> str:
        parse_trusted_proxies(value)  # ValueError: not an address or network
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


def default_workers() -> int:
    """The CPUs this process may run on (its affinity: a container's cpuset), between
    ``MIN_DEFAULT_WORKERS`` and ``MAX_DEFAULT_WORKERS``."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every CPU
    cpus = len(affinity(0)) if affinity else (os.cpu_count() or 1)
    return min(MAX_DEFAULT_WORKERS, max(MIN_DEFAULT_WORKERS, cpus))


@lru_cache(maxsize=1)
def get_settings() -> ApiSettings:
    return ApiSettings()


__all__ = ["ApiSettings", "default_workers", "get_settings"]
