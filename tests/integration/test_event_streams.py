"""Event streams on a real uvicorn (SQLite and PostgreSQL): they end when their token
expires or their account is disabled, an account may hold only so many (then 429 with
Retry-After), idle streams hold no thread or database connection, and a stream that
reconnects with Last-Event-ID gets what it missed exactly once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_api_world import PASSWORDS, Study, World, build_world
from tests.integration.test_workflow_support import LiveServer
from viewer_api.routes.events import stop_streams
from viewer_api.security import (
    CSRF_HEADER,
    SESSION_COOKIE,
    create_access_token,
    decode_access_token,
)
from viewer_api.settings import ApiSettings
from worklist.accounts import revoke_tokens
from worklist.db import utcnow
from worklist.models import User

TIMEOUT = httpx.Timeout(20.0)
# the expiry and the per-account cap are the API's own: one database is enough for them
SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path, max_streams_per_account=3)


@pytest.fixture
def live(world: World) -> Iterator[LiveServer]:
    app: Any = world.client.app
    with LiveServer(app) as server:
        yield server
        stop_streams(app)  # open streams would hold uvicorn's shutdown


class Reader:
    """One stream read in a thread: its messages (id, data) and when it ended."""

    def __init__(self, base_url: str, params: dict[str, str], headers: dict[str, str]) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.status = 0
        self.opened = threading.Event()
        self.ended_at: float | None = None
        self._args = (base_url, params, headers)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.opened.wait(20), "the stream did not open"

    def _run(self) -> None:
        base_url, params, headers = self._args
        with (
            httpx.Client(base_url=base_url, timeout=TIMEOUT) as client,
            client.stream("GET", "/api/v1/events", params=params, headers=headers) as response,
        ):
            self.status = response.status_code
            self.headers = response.headers
            self.opened.set()
            fields: dict[str, str] = {}
            for line in response.iter_lines():
                if not line:
                    if "data" in fields:
                        self.messages.append((fields.get("id", ""), json.loads(fields["data"])))
                    fields = {}
                elif not line.startswith(":") and ":" in line:
                    name, _, value = line.partition(":")
                    fields[name] = value.lstrip(" ")
        self.ended_at = time.time()

    def wait_end(self, seconds: float) -> bool:
        self.thread.join(seconds)
        return not self.thread.is_alive()


def short_token(world: World, username: str, seconds: int) -> str:
    settings = ApiSettings(secret_key=world.settings.secret_key, token_ttl_seconds=seconds)
    with world.factory() as session:
        user = session.scalars(select(User).where(User.username == username)).one()
        return create_access_token(user=user, settings=settings, now=utcnow())


def wait_for(condition: Any, seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.05)


@SQLITE
def test_a_stream_ends_when_its_token_expires(world: World, live: LiveServer) -> None:
    token = short_token(world, "dr_li", 5)
    expires_at = decode_access_token(token, settings=world.settings).expires_at.timestamp()
    reader = Reader(live.base_url, {"access_token": token}, {})
    assert reader.status == 200
    assert reader.wait_end(15), "the stream outlived its token"
    assert reader.ended_at is not None
    assert reader.ended_at <= expires_at + 2  # closed within 2 s of the expiry


def test_a_disabled_account_loses_its_stream(world: World, live: LiveServer) -> None:
    reader = Reader(live.base_url, {}, world.headers("nurse_ts01"))
    assert reader.status == 200
    with world.factory.begin() as session:
        session.execute(update(User).where(User.username == "nurse_ts01").values(is_active=False))
    assert reader.wait_end(15), "a disabled account kept its stream"


@SQLITE
def test_revoking_an_accounts_tokens_ends_its_open_stream(world: World, live: LiveServer) -> None:
    """`teleread users revoke` (tokens_valid_after): a stream opened before it ends."""
    reader = Reader(live.base_url, {}, world.headers("dr_li"))
    assert reader.status == 200
    with world.factory.begin() as session:
        user = session.scalars(select(User).where(User.username == "dr_li")).one()
        revoke_tokens(session=session, user=user, now=utcnow())
    assert reader.wait_end(15), "a stream outlived the revocation of its token"


@SQLITE
def test_an_account_may_hold_only_so_many_streams(world: World, live: LiveServer) -> None:
    app: Any = world.client.app
    readers = [Reader(live.base_url, {}, world.headers("dr_wang")) for _ in range(3)]
    assert [r.status for r in readers] == [200, 200, 200]
    with httpx.Client(base_url=live.base_url, timeout=TIMEOUT) as client:
        r = client.get("/api/v1/events", headers=world.headers("dr_wang"))
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert "stream" in r.json()["detail"]
    other = Reader(live.base_url, {}, world.headers("dr_li"))  # another account may
    assert other.status == 200
    hub = app.state.event_hub
    assert hub.open_count() == 4
    # idle streams: no worker thread, no database connection held
    engine = world.factory.kw["bind"]
    threads = threading.active_count()
    time.sleep(0.5)
    assert engine.pool.checkedout() == 0
    assert threading.active_count() <= threads


def test_every_event_once_across_a_reconnect(world: World, live: LiveServer) -> None:
    first = Reader(live.base_url, {"after": "0"}, world.headers("dr_li"))
    studies = [Study("TS01", "CT", "头颅CT平扫 急性脑卒中", count=1) for _ in range(4)]
    for study in studies[:2]:
        assert world.announce(study).status_code == 200
    wait_for(lambda: len(first.messages) >= 2)
    last_id = first.messages[-1][0]
    for study in studies[2:]:
        assert world.announce(study).status_code == 200
    # a reconnect after the second event gets the third and fourth, once each
    second = Reader(live.base_url, {}, {**world.headers("dr_li"), "Last-Event-ID": last_id})
    wait_for(lambda: len(second.messages) >= 2 and len(first.messages) >= 4)
    time.sleep(0.3)
    assert [d["study_uid"] for _, d in first.messages] == [s.uid for s in studies]
    assert [d["study_uid"] for _, d in second.messages] == [s.uid for s in studies[2:]]
    # the other site's clinic sees none of them; the own site's clinic every one
    ts02 = Reader(live.base_url, {"after": "0"}, world.headers("nurse_ts02"))
    ts01 = Reader(live.base_url, {"after": "0"}, world.headers("nurse_ts01"))
    wait_for(lambda: len(ts01.messages) >= 4)
    time.sleep(0.3)
    assert ts02.messages == []
    assert [d["study_uid"] for _, d in ts01.messages] == [s.uid for s in studies]


@SQLITE
def test_logging_out_ends_the_web_pages_stream(world: World, live: LiveServer) -> None:
    with httpx.Client(base_url=live.base_url, timeout=TIMEOUT) as browser:
        form = {"username": "nurse_ts01", "password": PASSWORDS["nurse_ts01"]}
        r = browser.post("/api/v1/auth/session", data=form)
        assert r.status_code == 200, r.text
        csrf, cookie = r.json()["csrf_token"], browser.cookies[SESSION_COOKIE]
        reader = Reader(live.base_url, {}, {"Cookie": f"{SESSION_COOKIE}={cookie}"})
        assert reader.status == 200
        r = browser.delete("/api/v1/auth/session", headers={CSRF_HEADER: csrf})
        assert r.status_code == 204
    assert reader.wait_end(15), "a logged-out session kept its stream"
