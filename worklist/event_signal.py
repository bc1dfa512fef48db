"""Knowing at once that events were committed, without polling the table per reader.

A ``CommitSignal`` calls its subscribers (cheap callbacks: set a ``threading.Event``, or
schedule on an event loop) when new events may be in the ``events`` table:

- at once, after a commit of a session made by its ``sessionmaker`` that inserted events
  (``worklist.events.COMMITTED``);
- on PostgreSQL, on every ``NOTIFY`` of ``worklist.events.CHANNEL``, from any process: a
  thread holds one dedicated connection (outside the pool) that ``LISTEN``s, reconnects
  after an error and fires once after each (re)connection, to catch up;
- on a SQLite file, within ``SQLITE_WATCH_SECONDS`` of a commit by any other connection or
  process (the API's other worker processes, ``serve``'s gateway and housekeeping, a
  command): SQLite has no NOTIFY, so a thread reads ``PRAGMA data_version`` on one
  dedicated connection (outside the pool), which changes when another connection commits.
  It costs a few microseconds per read and wakes the readers for commits without events
  too (they then read nothing new).

Readers still wake every few seconds on their own (a commit by a process that did not
notify, a notification lost with a dropped connection): the signal makes them prompt, the
gap-safe ids (``worklist.events``) make them correct.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from worklist.events import CHANNEL, COMMITTED

logger = logging.getLogger(__name__)

# how often the listener checks whether it should stop: every API process listens from
# its start, so each one stopping (a test's app, a rolling restart) waits at most this long
LISTEN_POLL_SECONDS = 0.2
RECONNECT_SECONDS = 2.0
SQLITE_WATCH_SECONDS = 0.1  # how often a SQLite file's data_version is read


class CommitSignal:
    """Calls each subscriber when events were committed (see the module docstring).
    ``start`` begins listening; ``stop`` ends it and closes the connection."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory
        self._subscribers: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = False
        engine = factory.kw.get("bind")
        self._engine: Any = engine
        self.postgres = engine is not None and engine.dialect.name == "postgresql"
        database = engine.url.database if engine is not None else None
        self._sqlite_file = (
            database
            if engine is not None
            and engine.dialect.name == "sqlite"
            and database
            and database != ":memory:"
            and not database.startswith("file:")
            else None
        )

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on every signal (from any thread); returns the unsubscribe."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def fire(self) -> None:
        with self._lock:
            callbacks = list(self._subscribers)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("event signal subscriber failed")

    def _after_commit(self, session: Session) -> None:
        if session.info.get(COMMITTED):
            self.fire()

    def start(self) -> None:
        if self._listening:
            return
        self._listening = True
        event.listen(self._factory, "after_commit", self._after_commit)
        if self.postgres:
            self._thread = threading.Thread(target=self._listen, name="event-listen", daemon=True)
            self._thread.start()
        elif self._sqlite_file is not None:
            self._thread = threading.Thread(target=self._watch, name="event-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if not self._listening:
            return
        self._listening = False
        event.remove(self._factory, "after_commit", self._after_commit)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=LISTEN_POLL_SECONDS + 5)

    def _connect(self) -> psycopg.Connection[Any]:
        cargs, cparams = self._engine.dialect.create_connect_args(self._engine.url)
        return psycopg.connect(*cargs, **{**cparams, "autocommit": True})

    def _reconnecting(self, watch: Callable[[], None], errors: type[Exception]) -> None:
        """``watch`` (it returns when ``stop`` is set) again after each of ``errors``: its
        connection lost, a new one ``RECONNECT_SECONDS`` later."""
        while not self._stop.is_set():
            try:
                watch()
            except errors as exc:
                logger.warning(
                    "event signal lost its database connection; reconnecting",
                    extra={"action": "event_signal_failed", "error": type(exc).__name__},
                )
                self._stop.wait(RECONNECT_SECONDS)

    def _listen(self) -> None:
        self._reconnecting(self._listen_once, psycopg.Error)

    def _listen_once(self) -> None:
        with self._connect() as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.fire()  # whatever was committed while not listening
            while not self._stop.is_set():
                for _ in conn.notifies(timeout=LISTEN_POLL_SECONDS, stop_after=1):
                    self.fire()

    def _watch(self) -> None:
        self._reconnecting(self._watch_once, sqlite3.Error)

    def _watch_once(self) -> None:
        assert self._sqlite_file is not None
        conn = sqlite3.connect(self._sqlite_file, isolation_level=None)
        try:
            seen = conn.execute("PRAGMA data_version").fetchone()
            self.fire()  # whatever was committed before watching
            while not self._stop.wait(SQLITE_WATCH_SECONDS):
                now = conn.execute("PRAGMA data_version").fetchone()
                if now != seen:
                    seen = now
                    self.fire()
        finally:
            conn.close()


__all__ = ["CommitSignal"]
