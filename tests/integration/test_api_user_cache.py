"""The account cache behind ``CurrentUser``: a disabled account, or one given another role,
loses access within ``user_cache_seconds``; with the cache off, at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_api_world import World, build_world
from viewer_api.security import TokenClaims, UserCache
from worklist.audit import list_events
from worklist.db import utcnow
from worklist.models import ROLE_CLINIC, User

TTL = 0.3


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path, user_cache_seconds=TTL)


@pytest.fixture
def uncached(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path, user_cache_seconds=0)


def _change(world: World, username: str, **values: object) -> None:
    with world.factory.begin() as session:
        user = session.scalars(select(User).where(User.username == username)).one()
        for name, value in values.items():
            setattr(user, name, value)


def _eventually_refused(world: World, username: str) -> None:
    deadline = time.monotonic() + TTL + 0.1
    time.sleep(TTL + 0.05)
    r = world.get(username, "/api/v1/worklist")
    assert r.status_code == 401, (r.status_code, time.monotonic() - deadline)
    assert r.headers["www-authenticate"] == "Bearer"


def test_a_disabled_account_is_refused_within_the_cache_ttl(world: World) -> None:
    assert world.get("dr_li", "/api/v1/worklist").status_code == 200  # now cached
    assert world.get("dr_li", "/api/v1/worklist").status_code == 200  # served from the cache
    _change(world, "dr_li", is_active=False)
    _eventually_refused(world, "dr_li")


def test_a_role_change_is_refused_within_the_cache_ttl(world: World) -> None:
    assert world.get("dr_li", "/api/v1/worklist").status_code == 200
    _change(world, "dr_li", role=ROLE_CLINIC)
    _eventually_refused(world, "dr_li")


def test_without_the_cache_a_disabled_account_is_refused_at_once(uncached: World) -> None:
    assert uncached.get("dr_li", "/api/v1/worklist").status_code == 200
    _change(uncached, "dr_li", is_active=False)
    assert uncached.get("dr_li", "/api/v1/worklist").status_code == 401


def test_a_cached_account_can_write(world: World) -> None:
    """The cached copy is merged into each request's session: a route that records the
    caller (an audit row, a claim) works on a cache hit as on a miss."""
    for _ in range(3):
        assert world.get("boss", "/api/v1/audit").status_code == 200
    with world.factory() as session:
        events = list_events(session=session, action="audit_viewed")
    assert [e.username for e in events] == ["boss"] * 3
    assert len({e.user_id for e in events}) == 1


def _user(**values: object) -> User:
    base: dict[str, object] = {
        "id": 7,
        "username": "u7",
        "display_name": "",
        "password_hash": "x",
        "role": "radiologist",
        "site_id": None,
        "is_active": True,
        "created_at": utcnow(),
    }
    base.update(values)
    return User(**base)


def test_cache_honours_the_token_expiry_and_its_size() -> None:
    cache = UserCache(60, max_entries=2)
    now = utcnow()
    cache.put("expired", _user(), TokenClaims(7, "radiologist", now - timedelta(seconds=1)))
    assert cache.get("expired") is None
    live = TokenClaims(7, "radiologist", now + timedelta(hours=1))
    for token in ("a", "b", "c"):
        cache.put(token, _user(), live)
    assert cache.get("a") is None  # the oldest went
    got = cache.get("c")
    assert got is not None and got.id == 7 and got.role == "radiologist"
    assert UserCache(0).get("c") is None


def test_cache_expires_entries() -> None:
    cache = UserCache(0.05)
    cache.put("t", _user(), TokenClaims(7, "radiologist", utcnow() + timedelta(hours=1)))
    assert cache.get("t") is not None
    time.sleep(0.06)
    assert cache.get("t") is None
