"""Engines, sessions and schema migrations for the county index."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, exc, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, StaticPool

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# how long a session waits for a pooled connection before ``sqlalchemy.exc.TimeoutError``:
# the API sizes its pool to its threads, so only a database that stopped answering waits
POOL_TIMEOUT_SECONDS = 10.0
# a pooled PostgreSQL connection back in the pool longer than this is pinged before it is
# handed out again (``_ping_if_idle``)
PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "teleread_idle_since"


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def normalise_url(url: str | URL) -> URL:
    """Parse ``url``; plain ``postgresql://`` / ``postgres://`` URLs get the psycopg 3 driver."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_file(parsed: URL) -> Path | None:
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _private_file(path: Path) -> None:
    """The SQLite file readable by its owner only (0600), made so before SQLite opens it
    (its -wal and -shm files take the database file's mode); an existing one is tightened."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(candidate.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(candidate, 0o600)
            logger.warning(
                "database file was readable by other users; made private (0600)",
                extra={"action": "db_file_made_private", "file": candidate.name},
            )


def _on_sqlite_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA synchronous = NORMAL")
        row = cur.execute("PRAGMA journal_mode").fetchone()
        if row is not None and str(row[0]).lower() not in ("wal", "memory"):
            cur.execute("PRAGMA journal_mode = WAL")
    finally:
        cur.close()


def _stamp_idle(_dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
    record.info[_IDLE_SINCE] = time.monotonic()


def _ping_if_idle(engine: Engine) -> Any:
    """A ``checkout`` listener: ping a connection that has been idle in the pool for more
    than ``PING_AFTER_IDLE_SECONDS``; a dead one is replaced (``DisconnectionError``: the
    pool connects anew, SQLAlchemy's recipe for pessimistic disconnect handling).

    Written here rather than ``pool_pre_ping``, which pings on every checkout: under a
    county's load that is one more round trip for every request (a worklist page was BEGIN,
    the ping, its SELECT, COMMIT), while a connection used a moment ago has just answered. One that
    died since (the database restarted) fails its query, and SQLAlchemy then invalidates
    the whole pool: the request gets 503 with Retry-After, the next ones new connections."""

    def listener(
        dbapi_conn: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return  # just connected, or back in the pool a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as error:
            raise exc.DisconnectionError(str(error)) from error

    return listener


def make_engine(
    url: str | URL,
    *,
    pool_size: int = 10,
    max_overflow: int = 20,
    pool_timeout: float = POOL_TIMEOUT_SECONDS,
) -> Engine:
    """An engine for ``url`` with at most ``pool_size + max_overflow`` connections.

    SQLite: usable across threads, WAL journal, foreign keys on, a busy timeout, and the
    database file's parent directory created. PostgreSQL: psycopg 3; a connection idle in
    the pool for a while is pinged before use (``_ping_if_idle``).
    The county API passes its ``ApiSettings.database_connections`` (one per thread that
    may hold one); one-shot commands pass 1.
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None:
            _private_file(path)
        kwargs: dict[str, Any] = {
            "connect_args": {
                "check_same_thread": False,
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            }
        }
        if path is not None:
            kwargs.update(pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout)
        else:  # one in-memory database shared by every thread
            kwargs["poolclass"] = StaticPool
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    engine = create_engine(
        parsed, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout
    )
    event.listen(engine, "checkin", _stamp_idle)
    event.listen(engine, "checkout", _ping_if_idle(engine))
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after ``commit()``."""
    return sessionmaker(bind=engine, expire_on_commit=False)


class ReadOnlySession(RuntimeError):
    """A session of ``make_read_sessionmaker`` was asked to write: the route that opened it
    must use a session that writes."""


def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise ReadOnlySession("this request's session only reads; it was asked to write")


def make_read_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions for work that only reads (a worklist page, a study, a DICOMweb search or
    frame): they refuse to flush (``ReadOnlySession``), and on PostgreSQL their connection
    runs in autocommit, so their queries go out with no ``BEGIN`` before them and no
    ``COMMIT`` after: two round trips of a request's four or five. Under PostgreSQL's
    READ COMMITTED each statement sees its own snapshot inside a transaction too, so the
    reads see what they did before. (SQLite's driver opens no transaction for a read, so
    there the engine is used as it is.)"""
    if engine.dialect.name == "postgresql":
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    factory = make_sessionmaker(engine)
    event.listen(factory, "before_flush", _refuse_flush)
    return factory


def alembic_config() -> Config:
    """Alembic configuration pointing at the migrations shipped inside this package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


# pg_advisory_xact_lock key held by every migration run on PostgreSQL ("teleread" in ASCII)
MIGRATION_LOCK_KEY = 0x74656C6572656164


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What one ``upgrade`` did: the revision it found (``None``: an empty database) and the
    one it left."""

    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _driver_autocommit(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    dbapi_conn.isolation_level = None


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _migration_engine(url: str | URL) -> Engine:
    """One connection whose transaction holds the database's migration lock: on PostgreSQL
    the caller takes an advisory lock; on SQLite the transaction starts with ``BEGIN
    IMMEDIATE`` (the file's write lock), which also makes the DDL transactional."""
    engine = make_engine(url, pool_size=1, max_overflow=0)
    if engine.dialect.name == "sqlite":
        # pysqlite would otherwise begin no transaction before DDL: let SQLAlchemy's begin
        # emit it (SQLAlchemy's documented recipe for transactional DDL on pysqlite)
        event.listen(engine, "connect", _driver_autocommit)
        event.listen(engine, "begin", _begin_immediate)
    return engine


def upgrade(url: str | URL, revision: str = "head") -> Upgrade:
    """Bring the database at ``url`` to ``revision`` (Alembic; default head), one run at a
    time: any number of processes may call this at once (API replicas, a ``migrate`` job,
    ``teleread db upgrade`` by hand); the first migrates, the others wait for it and then
    find nothing to do. The lock is held by the migrating transaction and dies with it."""
    engine = _migration_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            before = MigrationContext.configure(connection).get_current_revision()
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
            after = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    done = Upgrade(before, after)
    logger.info(
        "database upgraded" if done.changed else "database already at the requested migration",
        extra={
            "action": "db_upgrade",
            "backend": engine.dialect.name,
            "from_revision": before,
            "to_revision": after,
        },
    )
    return done


def head_revision() -> str:
    """The newest migration this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise RuntimeError(f"no migrations under {MIGRATIONS_DIR}")
    return head


def schema_revision(engine: Engine) -> str | None:
    """The migration the database at ``engine`` is at (``None``: none applied yet)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


__all__ = [
    "MIGRATION_LOCK_KEY",
    "Upgrade",
    "alembic_config",
    "head_revision",
    "make_engine",
    "make_sessionmaker",
    "normalise_url",
    "schema_revision",
    "upgrade",
    "utcnow",
]
