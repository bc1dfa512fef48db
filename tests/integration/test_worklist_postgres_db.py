"""Migrations and engines against a real PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from psycopg.pq import TransactionStatus
from sqlalchemy import select, text

from worklist.db import (
    PING_AFTER_IDLE_SECONDS,
    ReadOnlySession,
    make_engine,
    make_read_sessionmaker,
    make_sessionmaker,
)
from worklist.models import Base, Site

pytestmark = pytest.mark.postgres


def test_upgrade_matches_models_postgres(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()


def test_datetimes_come_back_utc(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        factory = make_sessionmaker(engine)
        local = datetime(2026, 11, 25, 18, 0, tzinfo=timezone(timedelta(hours=8)))
        with factory() as s:
            s.add(Site(code="TS01", name="x", created_at=local))
            s.commit()
        with factory() as s:
            got = s.scalars(select(Site)).one().created_at
        assert got == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
        assert got.utcoffset() == timedelta(0)
    finally:
        engine.dispose()


def test_a_read_session_sends_no_begin_and_refuses_to_write(pg_url: str) -> None:
    """A read session's queries run outside a transaction (no BEGIN before them, no COMMIT
    after: two round trips of a worklist request's three); asked to write, it raises."""
    engine = make_engine(pg_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            s.add(Site(code="TS08", name="y", created_at=datetime.now(UTC)))
        reads = make_read_sessionmaker(engine)
        with reads() as s:
            assert s.scalars(select(Site.code)).all() == ["TS08"]
            raw = s.connection().connection.dbapi_connection
            assert raw is not None
            assert raw.info.transaction_status == TransactionStatus.IDLE  # no BEGIN went out
            s.add(Site(code="TS07", name="z", created_at=datetime.now(UTC)))
            with pytest.raises(ReadOnlySession):
                s.flush()
        # its connection went back to the pool as a writer's: the next transaction is one
        with make_sessionmaker(engine)() as s:
            s.scalar(select(Site.id).limit(1))
            raw = s.connection().connection.dbapi_connection
            assert raw is not None
            assert raw.info.transaction_status == TransactionStatus.INTRANS
    finally:
        engine.dispose()


def test_a_connection_that_died_while_idle_is_replaced_unseen(pg_url: str) -> None:
    """The pool pings a connection back from idle (not one used a moment ago): one whose
    server process was ended meanwhile is replaced, and the request never sees it."""
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        factory = make_sessionmaker(engine)
        with factory() as s:
            victim = s.scalar(text("SELECT pg_backend_pid()"))
        killer = make_engine(pg_url, pool_size=1, max_overflow=0)
        with killer.begin() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
        killer.dispose()
        time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)  # idle long enough to be pinged
        with factory() as s:
            assert s.scalar(text("SELECT pg_backend_pid()")) != victim
    finally:
        engine.dispose()
