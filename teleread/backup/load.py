"""Restoring: checks against the backup and the target database, then every table loaded in
one transaction (PostgreSQL: COPY FROM STDIN; others: batched INSERTs) and PostgreSQL
sequences moved past the restored ids.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    MetaData,
    Table,
    delete,
    func,
    insert,
    select,
    text,
)

from teleread.backup.archive import (
    BATCH_ROWS,
    BackupCorrupt,
    DatabaseNotEmpty,
    RevisionMismatch,
    code_head,
    column_kind,
    current_revision,
    decode_value,
    one_connection_engine,
    table_lines,
    tables,
    verify,
)

# -- restore -----------------------------------------------------------------------------


@dataclass
class RestoreSummary:
    revision: str
    source_dialect: str
    rows: dict[str, int]
    seconds: float


def restore(url: str, path: Path, *, force: bool = False) -> RestoreSummary:
    """Load the backup at ``path`` into the database at ``url``, which must be at the
    backup's migration revision and empty (``force``: its rows are deleted first), in one
    transaction."""
    started = time.monotonic()
    manifest = verify(path)
    by_name = {t.name: t for t in tables()}
    revision = manifest["revision"]
    head = code_head()
    if revision != head:
        raise RevisionMismatch(
            f"the backup is from migration {revision}, this teleread is at {head}: restore it "
            "with the teleread version that made it (then upgrade), or take a new backup"
        )
    for entry in manifest["tables"]:
        table = by_name.get(entry["name"])
        if table is None:
            raise RevisionMismatch(f"the backup has a table {entry['name']} this teleread lacks")
        if list(entry["columns"]) != [c.name for c in table.columns]:
            raise RevisionMismatch(f"the columns of table {entry['name']} differ from the backup")
    engine = one_connection_engine(url)
    counts: dict[str, int] = {}
    try:
        with engine.begin() as conn:
            current = current_revision(conn)
            if current != revision:
                raise RevisionMismatch(
                    f"the target database is at migration {current or '(none: empty)'}, the "
                    f"backup at {revision}: run `teleread db upgrade` on the target first"
                )
            nonempty = [
                t.name
                for t in tables()
                if conn.execute(select(func.count()).select_from(t)).scalar()
            ]
            if nonempty and not force:
                raise DatabaseNotEmpty(
                    f"the target database already holds rows ({', '.join(nonempty)}): restore "
                    "into a new, migrated database, or pass --force to replace its contents"
                )
            for t in reversed(tables()):
                if nonempty:
                    conn.execute(delete(t))
            with tarfile.open(path, mode="r:gz") as tar:
                for entry in manifest["tables"]:
                    table = by_name[entry["name"]]
                    counts[table.name] = _load_table(conn, table, entry, tar)
            if conn.dialect.name == "postgresql":
                _fix_sequences(conn)
    finally:
        engine.dispose()
    return RestoreSummary(revision, manifest["dialect"], counts, time.monotonic() - started)


def _load_table(conn: Connection, table: Table, entry: dict[str, Any], tar: tarfile.TarFile) -> int:
    kinds = list(entry["columns"].values())
    names = [c.name for c in table.columns]
    digest = hashlib.sha256()
    rows = 0

    def decoded() -> Iterator[list[Any]]:
        nonlocal rows
        for line in table_lines(tar, table.name):
            digest.update(line)
            rows += 1
            yield [decode_value(k, v) for k, v in zip(kinds, json.loads(line), strict=True)]

    if conn.dialect.name == "postgresql":
        _copy_rows(conn, table, kinds, decoded())
    else:
        stmt = insert(_loading_table(table))
        batch: list[dict[str, Any]] = []
        for values in decoded():
            batch.append(dict(zip(names, values, strict=True)))
            if len(batch) >= BATCH_ROWS:
                conn.execute(stmt, batch)
                batch = []
        if batch:
            conn.execute(stmt, batch)
    if digest.hexdigest() != entry["sha256"] or rows != entry["rows"]:
        raise BackupCorrupt(f"table {table.name} changed while it was being restored")
    return rows


def _copy_rows(conn: Connection, table: Table, kinds: list[str], rows: Iterator[list[Any]]) -> None:
    """PostgreSQL: COPY FROM STDIN on the transaction's own connection (several times faster
    than INSERTs). Values go through SQLAlchemy's bind processing first (UTC datetimes), JSON
    through psycopg's Json (SQL NULL stays None, a JSON null becomes ``null``)."""
    from psycopg.types.json import Json

    processors = [
        None if kind == "json" else c.type.bind_processor(conn.dialect)
        for c, kind in zip(table.columns, kinds, strict=True)
    ]
    cols = ", ".join(f'"{c.name}"' for c in table.columns)
    dbapi: Any = conn.connection.dbapi_connection  # psycopg's, inside this transaction
    sql = f'COPY "{table.name}" ({cols}) FROM STDIN'
    with dbapi.cursor() as cur, cur.copy(sql) as copy:
        for values in rows:
            out: list[Any] = []
            for value, kind, proc in zip(values, kinds, processors, strict=True):
                if kind == "json":
                    null = value is JSON.NULL
                    out.append(None if value is None else Json(None if null else value))
                else:
                    out.append(proc(value) if proc and value is not None else value)
            copy.write_row(out)


def _loading_table(table: Table) -> Table:
    """A bare copy of ``table`` to insert through: JSON columns keep SQL NULL (None) apart
    from a JSON null (``JSON.NULL``), as they were stored; a plain ``insert`` lets
    SQLAlchemy batch the rows into multi-row INSERTs."""
    columns = [
        Column(
            c.name,
            JSON(none_as_null=True) if column_kind(c) == "json" else c.type,
            primary_key=c.primary_key,
            autoincrement=False,
        )
        for c in table.columns
    ]
    return Table(table.name, MetaData(), *columns)


def _fix_sequences(conn: Connection) -> None:
    """Move each serial / identity sequence past the largest restored id."""
    for table in tables():
        for column in table.primary_key.columns:
            if column_kind(column) != "int":
                continue
            seq = conn.execute(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": column.name}
            ).scalar()
            if seq is None:
                continue
            conn.execute(
                text(
                    f'SELECT setval(:seq, COALESCE((SELECT MAX("{column.name}") FROM '
                    f'"{table.name}"), 0) + 1, false)'
                ),
                {"seq": seq},
            )
