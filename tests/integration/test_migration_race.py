"""Migrations run once however many processes start together: `teleread db upgrade` takes a
lock (PostgreSQL advisory lock, SQLite's write lock), and `teleread api` never migrates, it
waits for the schema. Two upgrades and two APIs started at once on an empty PostgreSQL: the
cluster test (tests/integration/test_cluster.py) starts that way."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from teleread.services import SchemaNotReady, wait_for_schema
from tests.processes import Proc, teleread_env
from tests.servers.postgres import PostgresServer
from worklist.db import make_engine, schema_revision, upgrade


@pytest.fixture
def empty_pg(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"empty_{uuid.uuid4().hex}"
    with postgres_server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.url(name).render_as_string(hide_password=False)
    finally:
        with postgres_server.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_an_api_does_not_migrate_and_gives_up_with_the_fix(empty_pg: str) -> None:
    engine = make_engine(empty_pg)
    try:
        with pytest.raises(SchemaNotReady, match=r"run `teleread db upgrade`"):
            wait_for_schema(engine, timeout=0.3, poll=0.1)
        assert schema_revision(engine) is None  # it did not migrate on its own
        upgrade(empty_pg)
        wait_for_schema(engine, timeout=0)
    finally:
        engine.dispose()


def test_concurrent_upgrades_on_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'teleread.db'}"
    upgrades = [
        Proc(["db", "upgrade", "--database-url", url], teleread_env(), tmp_path / f"u{i}.log")
        for i in range(2)
    ]
    try:
        for proc in upgrades:
            assert proc.wait(120) == 0, proc.output()
    finally:
        for proc in upgrades:
            proc.stop()
    outputs = [proc.output() for proc in upgrades]
    assert sum("database migrated from (empty)" in o for o in outputs) == 1, outputs
    assert not upgrade(url).changed
