"""Migrations and engines against a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from worklist.db import make_engine, make_sessionmaker
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
