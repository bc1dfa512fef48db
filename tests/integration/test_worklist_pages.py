"""Worklist pages read once per second and served to every reader who asks
(``viewer_api.worklist_pages``): never after a change to the studies this process committed,
never across sites, with the time left counted at each request and every view audited; a
change that went round every session shows within the cache's ``ttl``. On SQLite and
PostgreSQL."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage import FilesystemStore
from tests.integration.test_api_world import Study, World, build_world
from tests.integration.test_event_cluster import Stream
from tests.load_client import seed_accounts, seed_studies
from tests.processes import SECRET_KEY, api_replicas
from viewer_api.main import create_app
from viewer_api.settings import ApiSettings
from viewer_api.worklist_pages import Page, WorklistPages
from worklist import events
from worklist.audit import list_events
from worklist.db import make_engine, make_sessionmaker
from worklist.models import Study as StudyRow
from worklist.models import User

TTL = 0.5


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path, worklist_cache_seconds=TTL)


class StudyReads:
    """Counts the statements that read the ``studies`` table."""

    def __init__(self, world: World) -> None:
        self.count = 0
        self.engine = world.factory.kw["bind"]
        event.listen(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any) -> None:
        statement: str = args[2]
        if statement.lstrip().upper().startswith("SELECT") and "FROM studies" in statement:
            self.count += 1

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


@pytest.fixture
def reads(world: World) -> Iterator[StudyReads]:
    counter = StudyReads(world)
    yield counter
    counter.close()


def settle(world: World) -> None:
    """Until the app's event hub has read every event committed so far: then no event's
    ``notify`` can still drop a page this test is about to count."""
    hub = world.client.app.state.event_hub  # type: ignore[attr-defined]
    with world.factory() as session:
        newest = events.last_id(session=session)
    deadline = time.monotonic() + 30
    while hub.cursor < newest:
        assert time.monotonic() < deadline, "the event hub did not read the events"
        time.sleep(0.01)


def page(world: World, username: str, **params: Any) -> list[dict[str, Any]]:
    r = world.get(username, "/api/v1/worklist", params=params)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()
    return items


def announced(world: World, site: str = "TS01", description: str = "CT HEAD") -> Study:
    study = Study(site, "CT", description)
    assert world.announce(study, gateway="gw_all").status_code == 200
    return study


def test_a_page_is_read_once_for_every_reader_until_a_study_changes(
    world: World, reads: StudyReads
) -> None:
    study = announced(world)
    settle(world)
    first = page(world, "dr_li")
    assert [i["study_instance_uid"] for i in first] == [study.uid]
    before = reads.count
    # another radiologist, and the admin: the same studies, so the same page
    assert page(world, "dr_wang") == first
    assert page(world, "boss") == first
    assert reads.count == before
    # a claim (a conditional UPDATE through the session) is on the very next page
    assert world.post("dr_li", f"/api/v1/worklist/{study.uid}/claim").status_code == 200
    settle(world)
    before = reads.count
    (item,) = page(world, "dr_wang")
    assert item["claimed_by"] == "dr_li"
    assert reads.count == before + 1
    # a change made through another session of this process (an ORM flush)
    with world.factory.begin() as session:
        row = session.scalars(
            select(StudyRow).where(StudyRow.study_instance_uid == study.uid)
        ).one()
        row.study_description = "CT HEAD PLAIN"
    assert page(world, "dr_li")[0]["study_description"] == "CT HEAD PLAIN"
    # a new study: announced through the API, on the next page at once
    second = announced(world, description="DX CHEST")
    assert {i["study_instance_uid"] for i in page(world, "dr_wang")} == {study.uid, second.uid}
    # every view is audited, from the cache or not
    world.client.app.state.audit_writer.flush()  # type: ignore[attr-defined]
    with world.factory() as session:
        views = list_events(session=session, action="worklist_view")
    assert [e.username for e in reversed(views)] == [
        "dr_li",
        "dr_wang",
        "boss",
        "dr_wang",
        "dr_li",
        "dr_wang",
    ]


def test_clinics_of_two_sites_never_share_a_page(world: World) -> None:
    ts01 = announced(world, "TS01")
    ts02 = announced(world, "TS02")
    assert {i["study_instance_uid"] for i in page(world, "dr_li")} == {ts01.uid, ts02.uid}
    assert [i["study_instance_uid"] for i in page(world, "nurse_ts01")] == [ts01.uid]
    assert [i["study_instance_uid"] for i in page(world, "nurse_ts02")] == [ts02.uid]
    # filters and pages are keys of their own
    assert page(world, "dr_li", site="TS02")[0]["study_instance_uid"] == ts02.uid
    assert len(page(world, "dr_li", limit=1)) == 1
    assert page(world, "dr_li", offset=1, limit=1) != page(world, "dr_li", limit=1)


def test_the_time_left_is_counted_at_each_request(world: World, reads: StudyReads) -> None:
    announced(world)
    settle(world)
    (first,) = page(world, "dr_li")
    assert first["time_left_seconds"] is not None
    before = reads.count
    world.clock.tick(90)
    (again,) = page(world, "dr_li")
    assert reads.count == before  # the same rows
    assert again["time_left_seconds"] == first["time_left_seconds"] - 90


def test_the_total_of_a_cached_page_is_the_one_counted(world: World) -> None:
    for _ in range(3):
        announced(world)
    for _ in range(2):
        r = world.get("dr_li", "/api/v1/worklist", params={"limit": 2})
        assert r.headers["X-Total-Count"] == "3" and len(r.json()) == 2


def test_a_change_round_every_session_shows_within_the_ttl(world: World) -> None:
    """A write through a connection of its own (as a restore writes) is not seen by
    ``worklist.study_writes``: the page's age bounds how long it is served."""
    study = announced(world)
    assert page(world, "dr_li")[0]["study_description"] == "CT HEAD"
    engine = world.factory.kw["bind"]
    with engine.begin() as connection:
        connection.execute(
            update(StudyRow)
            .where(StudyRow.study_instance_uid == study.uid)
            .values(study_description="CT HEAD RESTORED")
        )
    time.sleep(TTL + 0.05)
    assert page(world, "dr_li")[0]["study_description"] == "CT HEAD RESTORED"


def test_a_signal_from_another_process_drops_every_page(world: World) -> None:
    pages: WorklistPages = world.client.app.state.worklist_pages  # type: ignore[attr-defined]
    reads: list[int] = []

    def read() -> Page:
        reads.append(1)
        return Page([], len(reads))

    def ask(read_page: Callable[[], Page] = read) -> Page:
        return pages.page(viewer, {}, limit=10, offset=0, fresh=False, read=read_page)

    with world.factory() as session:
        viewer = session.scalars(select(User).where(User.username == "dr_li")).one()
    settle(world)
    assert ask().total == 1 and ask().total == 1  # read once, then kept
    pages.notify()  # the event hub read another process's events
    assert ask().total == 2

    def read_while_a_signal_comes() -> Page:
        pages.notify()
        return read()

    pages.notify()
    assert ask(read_while_a_signal_comes).total == 3
    assert ask().total == 4  # the page read while the signal came was not kept


def test_no_cache_asks_for_a_fresh_read(world: World, reads: StudyReads) -> None:
    """The reading room's reload after the user's own claim or release says
    ``Cache-Control: no-cache``: another worker process may not have heard of it yet."""
    announced(world)
    settle(world)
    page(world, "dr_li")
    before = reads.count
    headers = {**world.headers("dr_li"), "Cache-Control": "no-cache"}
    r = world.client.get("/api/v1/worklist", headers=headers)
    assert r.status_code == 200 and reads.count == before + 1
    page(world, "dr_wang")  # the fresh read is kept for the others
    assert reads.count == before + 1


def test_the_cache_is_off_at_zero(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    for world in build_world(session_factory, tmp_path, worklist_cache_seconds=0):
        counter = StudyReads(world)
        announced(world)
        page(world, "dr_li")
        before = counter.count
        page(world, "dr_li")
        assert counter.count == before + 1
        counter.close()


@pytest.mark.postgres
def test_a_claim_on_one_replica_is_on_the_other_replicas_next_page(
    pg_url: str, tmp_path: Path
) -> None:
    """Two ``teleread api`` processes on one PostgreSQL, pages kept 5 s: the other replica
    drops its page when its event hub hears the claim's ``NOTIFY``, before it streams the
    claim's event, so the page asked for after that event shows the claim."""
    engine = make_engine(pg_url, pool_size=2, max_overflow=0)
    factory = make_sessionmaker(engine)
    readers, _, _, gateway = seed_accounts(
        factory, ApiSettings(secret_key=SECRET_KEY), readers=2, clinics_per_site=0, streamers=0
    )
    objects = tmp_path / "objects"
    env = {
        "TELEREAD_STORAGE_BACKEND": "filesystem",
        "TELEREAD_STORAGE_ROOT": str(objects),
        "TELEREAD_API_WORKERS": "1",
        "TELEREAD_API_WORKLIST_CACHE_SECONDS": "5",
    }
    try:
        with api_replicas(database_url=pg_url, env=env, logs=tmp_path) as bases:
            (study, *_) = seed_studies(
                bases[0],
                FilesystemStore(objects),
                gateway,
                tmp_path / "dicom",
                studies_per_site=1,
                instances=1,
                size=16,
            )
            with factory() as session:
                start = events.last_id(session=session)
            stream = Stream(bases[1], readers[1], start)
            a, b = (
                httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
                for base, token in zip(bases, readers, strict=True)
            )
            with a, b:

                def claimed_by() -> str | None:
                    r = b.get("/api/v1/worklist", params={"limit": 50})
                    assert r.status_code == 200, r.text
                    return {i["study_instance_uid"]: i["claimed_by"] for i in r.json()}[study.study]

                assert claimed_by() is None and claimed_by() is None  # the page is kept
                assert a.post(f"/api/v1/worklist/{study.study}/claim").status_code == 200
                deadline = time.monotonic() + 30
                while not stream.ids and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert stream.ids, "the claim's event did not reach the other replica"
                assert claimed_by() == "dr_000"
    finally:
        engine.dispose()


def test_the_api_starts_while_its_database_does_not_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The event hub starts with the app (it reads the newest event id); a database that
    does not answer then (here: one never migrated) leaves it to the first stream, and
    the API still starts and answers."""
    factory = make_sessionmaker(make_engine(f"sqlite:///{tmp_path / 'not-migrated.db'}"))
    app = create_app(
        session_factory=factory,
        store=FilesystemStore(tmp_path / "objects"),
        settings=ApiSettings(secret_key=SECRET_KEY),
    )
    with caplog.at_level(logging.WARNING), TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
    assert [r.action for r in caplog.records if hasattr(r, "action")] == [  # type: ignore[attr-defined]
        "event_hub_start_failed"
    ]
