"""viewer_api parts that need no database: settings, tokens, error mapping."""

from __future__ import annotations

import os
import re
import warnings
from datetime import timedelta

import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import exc as sa_exc
from starlette.exceptions import StarletteDeprecationWarning

from storage import errors as storage_errors
from viewer_api import errors
from viewer_api.errors import ERRORS, InsecureSecretKey, InvalidToken, status_for
from viewer_api.security import create_access_token, decode_access_token
from viewer_api.settings import ApiSettings
from worklist import errors as wl
from worklist.db import utcnow
from worklist.models import User

with warnings.catch_warnings():
    # starlette 1.x prefers the httpx2 package and warns when it falls back to httpx
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SECRET = "unit-test-secret-key-0123456789-abcdefgh"


@pytest.mark.parametrize("secret", ["", "changethis", "CHANGETHIS", "secret", "short-key"])
def test_settings_refuse_a_default_or_weak_secret(secret: str) -> None:
    with pytest.raises(InsecureSecretKey, match="TELEREAD_API_SECRET_KEY"):
        ApiSettings(secret_key=secret)


def test_settings_refuse_a_missing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEREAD_API_SECRET_KEY", raising=False)
    with pytest.raises(InsecureSecretKey):
        ApiSettings()


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEREAD_API_SECRET_KEY", SECRET)
    monkeypatch.setenv("TELEREAD_API_TOKEN_TTL_SECONDS", "60")
    monkeypatch.setenv("TELEREAD_API_PORT", "9000")
    settings = ApiSettings()
    assert settings.secret_key.get_secret_value() == SECRET
    assert settings.token_ttl_seconds == 60 and settings.port == 9000
    assert SECRET not in repr(settings)


def test_api_workers_default_to_the_cpus_at_least_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEREAD_API_WORKERS", raising=False)
    cpus = len(os.sched_getaffinity(0))
    assert ApiSettings(secret_key=SECRET).workers == min(4, max(2, cpus))
    monkeypatch.setenv("TELEREAD_API_WORKERS", "1")
    assert ApiSettings(secret_key=SECRET).workers == 1  # the API in the command's process
    monkeypatch.setenv("TELEREAD_API_WORKERS", "0")
    with pytest.raises(ValueError):
        ApiSettings(secret_key=SECRET)


def test_default_token_lifetime_is_a_working_day() -> None:
    assert ApiSettings(secret_key=SECRET).token_ttl_seconds == 8 * 3600


def _user() -> User:
    return User(id=7, username="dr_li", role="radiologist", password_hash="x")


def test_token_round_trip() -> None:
    settings = ApiSettings(secret_key=SECRET)
    token = create_access_token(user=_user(), settings=settings, now=utcnow())
    claims = decode_access_token(token, settings=settings)
    assert claims.user_id == 7 and claims.role == "radiologist"
    assert claims.expires_at > utcnow() + timedelta(hours=7)


def test_expired_tampered_and_foreign_tokens_are_refused() -> None:
    settings = ApiSettings(secret_key=SECRET, token_ttl_seconds=60)
    expired = create_access_token(
        user=_user(), settings=settings, now=utcnow() - timedelta(minutes=5)
    )
    with pytest.raises(InvalidToken):
        decode_access_token(expired, settings=settings)
    other = ApiSettings(secret_key=SECRET + "-other")
    with pytest.raises(InvalidToken):
        decode_access_token(
            create_access_token(user=_user(), settings=other, now=utcnow()), settings=settings
        )
    unsigned = jwt.encode({"sub": "7", "role": "admin", "exp": 2**40}, key=None, algorithm="none")
    with pytest.raises(InvalidToken):
        decode_access_token(unsigned, settings=settings)
    no_sub = jwt.encode({"exp": 2**40}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken):
        decode_access_token(no_sub, settings=settings)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (wl.StudyNotFound(), 404),
        (wl.NoReport(), 404),
        (wl.ClaimConflict(), 409),
        (wl.NotClaimable(), 409),
        (wl.ReportSigned(), 409),
        (wl.ConflictAlreadyResolved(), 409),
        (wl.NotClaimHolder(), 403),
        (wl.NotAReader(), 403),
        (wl.UnknownSite(), 422),
        (wl.WorklistError(), 400),
        (storage_errors.ObjectNotFound(), 404),
        (storage_errors.StoreUnavailable(), 503),
        (sa_exc.IntegrityError("INSERT", {}, Exception("race")), 503),
        (RuntimeError(), 500),
    ],
)
def test_errors_map_to_statuses(exc: Exception, code: int) -> None:
    assert status_for(exc) == code


def test_every_error_answers_with_a_stable_code() -> None:
    """One table: each error class has a status and a snake_case code, and the answer is
    ``{"detail", "code"}`` whether a route raised ours, the worklist's or the framework's."""
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", p.code) for p in ERRORS.values())
    app = FastAPI()
    errors.install(app)

    @app.get("/study")
    def study() -> None:
        raise wl.StudyNotFound()

    @app.get("/role")
    def role() -> None:
        raise errors.RoleDenied()

    with TestClient(app) as client:
        assert client.get("/study").json() == {
            "detail": "No such study (or it is not visible to you).",
            "code": "study_not_found",
        }
        r = client.get("/role")
        assert (r.status_code, r.json()["code"]) == (403, "role_denied")
        r = client.get("/nowhere")
        assert (r.status_code, r.json()["code"]) == (404, "not_found")
        r = client.post("/study")
        assert (r.status_code, r.json()["code"]) == (405, "method_not_allowed")
