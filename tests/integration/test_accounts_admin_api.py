"""Accounts through the real API on SQLite and PostgreSQL: an admin disables and enables
users, resets passwords and revokes tokens (a gateway credential gets a new password);
failed log-ins are throttled; the 0004 migration; the ``teleread users`` commands."""

from __future__ import annotations

import io
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from teleread.cli import main
from tests.integration.test_api_world import PASSWORDS, SECRET, World, build_world
from tests.servers.postgres import PostgresServer
from viewer_api.main import create_app
from viewer_api.security import create_access_token
from viewer_api.settings import ApiSettings
from worklist.audit import list_events
from worklist.db import make_engine, make_sessionmaker, upgrade
from worklist.models import User
from worklist.settings import WorklistSettings


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    # the account cache on (its default): revocations must take effect at once anyway
    yield from build_world(session_factory, tmp_path, login_max_failures=3)


def _login(world: World, username: str, password: str) -> tuple[int, str | None]:
    r = world.client.post("/api/v1/auth/token", data={"username": username, "password": password})
    return r.status_code, (r.json()["access_token"] if r.status_code == 200 else None)


def _get(world: World, token: str, path: str = "/api/v1/worklist") -> int:
    return world.client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code


def _actions(world: World, action: str) -> list[tuple[str, str, str]]:
    with world.factory() as session:
        return [
            (e.username, e.object_id, e.outcome)
            for e in list_events(session=session, action=action)
        ]


def test_admin_creates_lists_and_shows_accounts(world: World) -> None:
    body = {"username": "nurse_x", "password": "x-password-9", "role": "clinic", "site": "TS01"}
    r = world.post("boss", "/api/v1/users", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["site"] == "TS01" and created["is_active"] is True
    assert "password" not in r.text and "hash" not in r.text
    assert world.post("boss", "/api/v1/users", json=body).status_code == 409
    no_site = {**body, "username": "nurse_y", "site": None}
    assert world.post("boss", "/api/v1/users", json=no_site).status_code == 422
    short = {**body, "username": "nurse_z", "password": "short"}
    assert world.post("boss", "/api/v1/users", json=short).status_code == 422
    names = [u["username"] for u in world.get("boss", "/api/v1/users").json()]
    assert "nurse_x" in names and names == sorted(names)
    assert world.get("boss", "/api/v1/users/nurse_x").json()["role"] == "clinic"
    assert world.get("boss", "/api/v1/users/nobody").status_code == 404
    assert world.get("boss", "/api/v1/users/a%00b").status_code in (400, 422)
    nul = {**body, "username": "nurse_n", "display_name": "a\x00b"}
    assert world.post("boss", "/api/v1/users", json=nul).status_code == 422
    assert _login(world, "nurse_x", "x-password-9")[0] == 200
    assert _actions(world, "user_created") == [("boss", "nurse_x", "success")]


def test_a_disabled_account_is_refused_at_once_and_stays_logged_out(world: World) -> None:
    token = world.tokens["dr_li"]
    assert _get(world, token) == 200  # now in the account cache
    world.clock.tick(0.01)
    r = world.post("boss", "/api/v1/users/dr_li/disable")
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert _get(world, token) == 401  # this process forgot the cached account
    assert _get(world, token, "/api/v1/events/recent") == 401
    assert _login(world, "dr_li", PASSWORDS["dr_li"])[0] == 401
    # an admin cannot lock themself out
    assert world.post("boss", "/api/v1/users/boss/disable").status_code == 409
    world.clock.tick(0.01)
    assert world.post("boss", "/api/v1/users/dr_li/enable").json()["is_active"] is True
    assert _get(world, token) == 401  # the old token stays dead
    world.clock.tick(0.01)
    status, fresh = _login(world, "dr_li", PASSWORDS["dr_li"])
    assert status == 200 and fresh is not None
    assert _get(world, fresh) == 200
    assert _actions(world, "user_disabled") == [("boss", "dr_li", "success")]
    assert _actions(world, "user_enabled") == [("boss", "dr_li", "success")]


def test_reset_password_and_revoke_a_persons_tokens(world: World) -> None:
    token = world.tokens["nurse_ts01"]
    assert _get(world, token) == 200
    world.clock.tick(0.01)
    r = world.post("boss", "/api/v1/users/nurse_ts01/revoke")
    assert r.status_code == 200 and r.json()["new_password"] is None
    assert _get(world, token) == 401
    world.clock.tick(0.01)
    status, fresh = _login(world, "nurse_ts01", PASSWORDS["nurse_ts01"])  # password unchanged
    assert status == 200 and fresh is not None and _get(world, fresh) == 200

    world.clock.tick(0.01)
    body = {"password": "brand-new-password"}
    assert world.post("boss", "/api/v1/users/nurse_ts01/password", json=body).status_code == 200
    assert _get(world, fresh) == 401
    assert _login(world, "nurse_ts01", PASSWORDS["nurse_ts01"])[0] == 401
    world.clock.tick(0.01)
    assert _login(world, "nurse_ts01", "brand-new-password")[0] == 200
    assert _actions(world, "user_tokens_revoked") == [("boss", "nurse_ts01", "success")]
    assert _actions(world, "user_password_reset") == [("boss", "nurse_ts01", "success")]


def test_revoking_a_gateway_credential_rotates_its_password(world: World) -> None:
    old_token = world.tokens["gw_ts01"]
    assert _get(world, old_token, "/api/v1/gateway/config") == 200
    world.clock.tick(0.01)
    r = world.post("boss", "/api/v1/users/gw_ts01/revoke")
    assert r.status_code == 200, r.text
    new_password = r.json()["new_password"]
    assert isinstance(new_password, str) and len(new_password) >= 24
    assert _get(world, old_token, "/api/v1/gateway/config") == 401
    assert _login(world, "gw_ts01", PASSWORDS["gw_ts01"])[0] == 401
    world.clock.tick(0.01)
    status, fresh = _login(world, "gw_ts01", new_password)
    assert status == 200 and fresh is not None
    assert _get(world, fresh, "/api/v1/gateway/config") == 200
    events = _actions(world, "gateway_credential_revoked")
    assert events == [("boss", "gw_ts01", "success")]
    with world.factory() as session:
        assert new_password not in str(
            [e.detail for e in list_events(session=session, action="gateway_credential_revoked")]
        )


def test_another_replica_honours_a_revocation_within_the_cache_ttl(world: World) -> None:
    """Each API process caches accounts for ``user_cache_seconds``: the one that revokes
    forgets at once, another replica over the same database within that bound."""
    settings = ApiSettings(secret_key=SECRET, user_cache_seconds=0.3)
    replica = create_app(
        session_factory=world.factory,
        store=world.store,
        settings=settings,
        clock=world.clock,
        worklist_settings=WorklistSettings(stable_seconds=60),
    )
    from fastapi.testclient import TestClient

    token = world.tokens["dr_wang"]
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(replica) as other:
        assert other.get("/api/v1/worklist", headers=headers).status_code == 200
        world.clock.tick(0.01)
        assert world.post("boss", "/api/v1/users/dr_wang/revoke").status_code == 200
        assert _get(world, token) == 401
        deadline_ok = other.get("/api/v1/worklist", headers=headers).status_code
        assert deadline_ok in (200, 401)  # cached: may still pass, for at most the TTL
        threading.Event().wait(0.35)
        assert other.get("/api/v1/worklist", headers=headers).status_code == 401


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # in-process: one database is enough
def test_failed_logins_lock_the_account_out_with_back_off(world: World) -> None:
    password = PASSWORDS["dr_li"]
    for _ in range(2):
        assert _login(world, "dr_li", "wrong")[0] == 401
    assert _login(world, "dr_li", password)[0] == 200  # a success clears the count
    for _ in range(3):
        assert _login(world, "dr_li", "wrong")[0] == 401
    r = world.client.post("/api/v1/auth/token", data={"username": "DR_LI ", "password": password})
    assert r.status_code == 429  # even the right password, and the name as typed otherwise
    assert r.headers["retry-after"] == "30"  # TELEREAD_API_LOGIN_LOCKOUT_SECONDS
    assert _login(world, "dr_wang", PASSWORDS["dr_wang"])[0] == 200  # another name is fine
    world.clock.tick(31)
    assert _login(world, "dr_li", "wrong")[0] == 401  # one more failure: twice as long
    r = world.client.post("/api/v1/auth/token", data={"username": "dr_li", "password": password})
    assert r.status_code == 429 and r.headers["retry-after"] == "60"
    world.clock.tick(61)
    assert _login(world, "dr_li", password)[0] == 200
    outcomes = [o for _, _, o in _actions(world, "login")]
    assert outcomes.count("throttled") == 2 and outcomes.count("denied") == 6


def test_a_token_minted_before_revocation_in_the_same_second_is_refused(world: World) -> None:
    """``iat`` carries milliseconds: a revocation refuses a token from a moment earlier
    (the same second), and one from a moment later works."""
    world.clock.now = world.clock.now.replace(microsecond=100_000)
    with world.factory() as session:
        user = session.scalars(select(User).where(User.username == "dr_wang")).one()
        before = create_access_token(user=user, settings=world.settings, now=world.clock.now)
    world.clock.now = world.clock.now.replace(microsecond=400_000)
    assert world.post("boss", "/api/v1/users/dr_wang/revoke").status_code == 200
    world.clock.now = world.clock.now.replace(microsecond=800_000)
    with world.factory() as session:
        user = session.scalars(select(User).where(User.username == "dr_wang")).one()
        after = create_access_token(user=user, settings=world.settings, now=world.clock.now)
    assert _get(world, before) == 401
    assert _get(world, after) == 200


# --- the migration ---------------------------------------------------------------------------


def _migrate_0003_to_0004(url: str) -> None:
    upgrade(url, "0003")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (username, display_name, password_hash, role, is_active,"
                    " created_at) VALUES ('old', '', 'x', 'admin', :t, CURRENT_TIMESTAMP)"
                ),
                {"t": True},
            )
        upgrade(url, "0004")
        columns = {c["name"] for c in inspect(engine).get_columns("users")}
        assert "tokens_valid_after" in columns
        with engine.connect() as conn:  # SQL, not the model: it has later columns
            found = conn.execute(text("SELECT tokens_valid_after FROM users WHERE username='old'"))
            assert found.one() == (None,)
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"
    finally:
        engine.dispose()


def test_migration_0004_upgrades_sqlite(tmp_path: Path) -> None:
    _migrate_0003_to_0004(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_migration_0004_upgrades_postgresql(postgres_server: PostgresServer) -> None:
    name = f"m_{uuid.uuid4().hex}"
    with postgres_server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        _migrate_0003_to_0004(postgres_server.url(name).render_as_string(hide_password=False))
    finally:
        with postgres_server.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the command line ------------------------------------------------------------------------


def test_users_disable_enable_revoke_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    db = ["--database-url", url]
    assert main(["sites", "add", "TS09", "--name", "九号镇", "--ae", "CT_TS09", *db]) == 0
    for name, role in (("gw9", "gateway"), ("dr9", "radiologist")):
        monkeypatch.setattr(sys, "stdin", io.StringIO("a-long-password\n"))
        args = ["users", "add", name, "--role", role, "--password-stdin", *db]
        assert main([*args, "--site", "TS09"] if role == "gateway" else args) == 0
    capsys.readouterr()
    assert main(["users", "disable", "dr9", *db]) == 0
    assert "disabled" in capsys.readouterr().out
    assert main(["users", "enable", "dr9", *db]) == 0
    assert main(["users", "revoke", "gw9", *db]) == 0
    assert "new password" in capsys.readouterr().out
    assert main(["users", "revoke", "nobody", *db]) == 1
    assert "no user" in capsys.readouterr().err
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            events = {e.action: e for e in list_events(session=session)}
            gw = session.scalars(select(User).where(User.username == "gw9")).one()
            dr = session.scalars(select(User).where(User.username == "dr9")).one()
    finally:
        engine.dispose()
    assert gw.tokens_valid_after is not None and dr.is_active
    assert {"user_disabled", "user_enabled", "gateway_credential_revoked"} <= set(events)
    assert events["user_disabled"].detail == {"role": "radiologist", "via": "cli"}
