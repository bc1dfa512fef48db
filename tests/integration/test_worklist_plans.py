"""The worklist reads its partial index in queue order, on SQLite and PostgreSQL: the open
studies of a county's whole history, not a scan and a sort of every study it ever had."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_worklist_claims import add
from tests.integration.test_worklist_ingest import NOW, fast_user, seed
from worklist.models import User
from worklist.repository import list_worklist


def _plan(session: Session, viewer: User) -> str:
    """The plan of the worklist's query, as the database would run it again and again (on
    PostgreSQL the generic plan of a prepared statement, with sequential scans off so that
    a usable index is used however few rows the test has)."""
    sent: list[tuple[str, Any]] = []
    connection = session.connection()

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        sent.append((statement, params))

    event.listen(connection, "before_cursor_execute", capture)
    try:
        list_worklist(session=session, viewer=viewer, now=NOW, limit=50)
    finally:
        event.remove(connection, "before_cursor_execute", capture)
    statement, params = sent[-1]
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
        return "\n".join(str(row[-1]) for row in rows)
    names: dict[str, str] = {}
    numbered = re.sub(
        r"%\((\w+)\)s", lambda m: names.setdefault(m[1], f"${len(names) + 1}"), statement
    )
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    rows = connection.exec_driver_sql("EXPLAIN (GENERIC_PLAN) " + numbered.replace("%%", "%"))
    return "\n".join(str(row[0]) for row in rows)


def test_the_worklist_walks_the_open_queue_index(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seed(s)
        reader = fast_user(s, "a", "radiologist")
        clinic = fast_user(s, "c1", "clinic", "TS01")
        for i in range(4):
            add(s, f"2.{i}", minutes=i, site="TS01" if i % 2 else "TS02")
        s.flush()
        assert "ix_studies_open_queue" in _plan(s, reader)
        assert "ix_studies_open_site_queue" in _plan(s, clinic)
