"""Engines and migrations (SQLite here; PostgreSQL in the integration tests)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from worklist.db import (
    ReadOnlySession,
    make_engine,
    make_read_sessionmaker,
    make_sessionmaker,
    upgrade,
    utcnow,
)
from worklist.models import Base, Site


def test_utcnow_is_aware() -> None:
    assert utcnow().tzinfo is not None
    assert utcnow().utcoffset() == timedelta(0)


def test_make_engine_creates_parent_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "teleread.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() >= 1000
        assert path.parent.is_dir()
    finally:
        engine.dispose()


def test_upgrade_matches_models_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    upgrade(url)  # idempotent
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()


def test_datetimes_come_back_aware_utc(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tz.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        factory = make_sessionmaker(engine)
        east8 = timezone(timedelta(hours=8))
        local = datetime(2026, 11, 25, 18, 0, tzinfo=east8)
        with factory() as s:
            s.add(Site(code="TS01", name="x", created_at=local))
            s.commit()
        with factory() as s:
            got = s.scalars(select(Site)).one().created_at
            assert got == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
            assert got.tzinfo is not None
    finally:
        engine.dispose()


def test_upgrade_does_not_depend_on_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    upgrade("sqlite:///relative/teleread.db")
    assert (elsewhere / "relative" / "teleread.db").is_file()


def test_memory_database_is_shared_across_threads() -> None:
    engine = make_engine("sqlite://")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        result: list[int] = []

        def read() -> None:
            with engine.connect() as conn:
                result.append(conn.execute(text("SELECT x FROM t")).scalar_one())

        th = threading.Thread(target=read)
        th.start()
        th.join()
        assert result == [1]
    finally:
        engine.dispose()


def test_a_read_session_reads_and_refuses_to_write_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'teleread.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine).begin() as s:
            s.add(Site(code="TS01", name="x", created_at=utcnow()))
        with make_read_sessionmaker(engine)() as s:
            site = s.scalars(select(Site)).one()
            site.name = "changed"
            with pytest.raises(ReadOnlySession):
                s.commit()
        with make_sessionmaker(engine)() as s:
            assert s.scalars(select(Site.name)).one() == "x"
    finally:
        engine.dispose()
