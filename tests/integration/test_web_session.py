"""The web pages' session: an HttpOnly cookie every tab of a browser shares, with a CSRF
token for state-changing requests, ended at log-out; who is signed in and which features
their role may use, read from the routes' own role declarations."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import StarletteDeprecationWarning

from tests.integration.test_api_world import PASSWORDS, Study, World, build_world
from viewer_api.access import FEATURES
from viewer_api.security import CSRF_HEADER, SESSION_COOKIE
from worklist.models import AuditEvent

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


def test_the_session_names_the_account_and_what_its_role_may_do(world: World) -> None:
    assert world.get(None, "/api/v1/auth/session").status_code == 401
    me = world.get("nurse_ts01", "/api/v1/auth/session").json()
    assert me["username"] == "nurse_ts01" and me["role"] == "clinic" and me["site"] == "TS01"
    assert "flag" in me["capabilities"] and "pdf" in me["capabilities"]
    assert "assign" not in me["capabilities"] and "template" not in me["capabilities"]
    admin = world.get("boss", "/api/v1/auth/session").json()
    assert {"assign", "cancel", "events", "template"} <= set(admin["capabilities"])
    assert admin["site"] is None
    reader = set(world.get("dr_li", "/api/v1/auth/session").json()["capabilities"])
    assert {"template", "critical", "addenda", "events", "receipt"} <= reader
    assert not reader & {"assign", "cancel"}
    assert world.get("gw_ts01", "/api/v1/auth/session").json()["capabilities"] == []


def test_every_feature_names_a_route(world: World) -> None:
    paths = world.client.get("/openapi.json").json()["paths"]
    for name, (method, path) in FEATURES.items():
        assert method.lower() in paths.get(path, {}), name


def _log_in(world: World, username: str = "dr_li") -> tuple[httpx.Client, str]:
    """A browser of its own (cookie jar) signed in as ``username``; its CSRF token."""
    browser = TestClient(world.client.app)
    r = browser.post(
        "/api/v1/auth/session", data={"username": username, "password": PASSWORDS[username]}
    )
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert r.json()["username"] == username and r.json()["csrf_token"]
    return browser, r.json()["csrf_token"]


def test_a_session_cookie_signs_in_every_tab_and_log_out_ends_it(world: World) -> None:
    browser, csrf = _log_in(world)
    # another tab of the same browser: the same cookie jar, no token of its own
    me = browser.get("/api/v1/auth/session").json()
    assert me["username"] == "dr_li" and me["csrf_token"] == csrf
    assert browser.get("/api/v1/worklist").status_code == 200
    cookie = browser.cookies[SESSION_COOKIE]

    assert browser.delete("/api/v1/auth/session", headers={CSRF_HEADER: csrf}).status_code == 204
    assert SESSION_COOKIE not in browser.cookies
    assert browser.get("/api/v1/worklist").status_code == 401
    # a copy of the cookie is worth nothing either: the session ended on the server
    copy = TestClient(world.client.app, cookies={SESSION_COOKIE: cookie})
    assert copy.get("/api/v1/auth/session").status_code == 401
    assert copy.get("/api/v1/worklist", headers=world.headers(None)).status_code == 401
    actions = [e.action for e in _audit(world) if e.action in ("login", "logout")]
    assert actions == ["login", "logout"]


def test_a_state_changing_request_needs_the_sessions_csrf_token(world: World) -> None:
    study = Study(site="TS01", modality="CT", description="头颅CT平扫")
    assert world.announce(study).status_code == 200
    browser, csrf = _log_in(world)
    claim = f"/api/v1/worklist/{study.uid}/claim"
    assert browser.post(claim).status_code == 403
    assert browser.post(claim, headers={CSRF_HEADER: "0" * 64}).status_code == 403
    _other, other_csrf = _log_in(world, "dr_wang")
    assert browser.post(claim, headers={CSRF_HEADER: other_csrf}).status_code == 403
    assert browser.post(claim, headers={CSRF_HEADER: csrf}).status_code == 200
    # a bearer token needs none (it is never sent by a browser on its own)
    release = f"/api/v1/worklist/{study.uid}/release"
    assert world.post("dr_li", release).status_code == 200


def test_a_wrong_password_sets_no_cookie(world: World) -> None:
    browser = TestClient(world.client.app)
    r = browser.post("/api/v1/auth/session", data={"username": "dr_li", "password": "wrong"})
    assert r.status_code == 401 and "set-cookie" not in r.headers
    assert browser.get("/api/v1/auth/session").status_code == 401


def _audit(world: World) -> list[AuditEvent]:
    with world.factory() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
