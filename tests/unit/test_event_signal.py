"""``worklist.event_signal.CommitSignal`` on a SQLite file: a commit by another connection
(another process's, here another engine's) wakes the subscribers without the readers' poll."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import text

from worklist.db import make_engine, make_sessionmaker
from worklist.event_signal import CommitSignal


def test_a_commit_by_another_connection_wakes_the_subscribers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    writer = make_engine(url, pool_size=1, max_overflow=0)
    reader = make_engine(url, pool_size=1, max_overflow=0)
    with writer.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    signal = CommitSignal(make_sessionmaker(reader))
    woke = threading.Event()
    signal.subscribe(woke.set)
    signal.start()
    try:
        assert woke.wait(10), "the watcher fires once when it starts (to catch up)"
        woke.clear()
        assert not woke.wait(0.5), "nothing committed: no wake"
        with writer.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
        assert woke.wait(10), "another connection's commit wakes the subscribers"
    finally:
        signal.stop()
        writer.dispose()
        reader.dispose()


def test_an_in_memory_database_has_no_watcher() -> None:
    signal = CommitSignal(make_sessionmaker(make_engine("sqlite://")))
    signal.start()
    try:
        assert not any(t.name == "event-watch" for t in threading.enumerate())
    finally:
        signal.stop()
