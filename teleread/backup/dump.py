"""Backing up: the consistent read snapshot, each table dumped as JSON lines, and the
archive written atomically (temporary file, fsync, rename, directory fsync).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    Text,
    cast,
    select,
)

from teleread.backup.archive import (
    BATCH_ROWS,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    BackupError,
    RevisionMismatch,
    code_head,
    column_kind,
    current_revision,
    encode_value,
    one_connection_engine,
    tables,
)


@dataclass(frozen=True, slots=True)
class TableSummary:
    name: str
    rows: int
    sha256: str


@dataclass
class BackupSummary:
    path: Path
    revision: str
    dialect: str
    tables: list[TableSummary] = field(default_factory=list)
    seconds: float = 0.0
    size: int = 0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


# -- backup ------------------------------------------------------------------------------


@contextlib.contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection inside one read transaction that sees one consistent snapshot."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        ) as conn:
            with conn.begin():
                yield conn
        return
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # pysqlite opens transactions only before writes: begin one ourselves, and read
            # once so SQLite takes its WAL snapshot now, not at the first table
            conn.exec_driver_sql("BEGIN")
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").all()
        try:
            yield conn
        finally:
            conn.rollback()


def _select_columns(table: Table) -> list[Any]:
    cols: list[Any] = []
    for c in table.columns:
        if column_kind(c) == "json":
            # the stored text: keeps SQL NULL and JSON null apart, and skips the driver's
            # own JSON parsing (psycopg)
            cols.append(cast(c, Text).label(c.name))
        else:
            cols.append(c)
    return cols


def backup(url: str, path: Path) -> BackupSummary:
    """Dump the database at ``url`` to ``path`` (atomically); refuses a database that is not
    at this teleread's migration head."""
    started = time.monotonic()
    path = Path(path)
    _require_existing_sqlite(url)
    engine = one_connection_engine(url)
    head = code_head()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".teleread-backup-") as tmp:
            work = Path(tmp)
            with snapshot(engine) as conn:
                revision = current_revision(conn)
                if revision != head:
                    raise RevisionMismatch(
                        f"the database is at migration {revision or '(none)'}, this teleread "
                        f"at {head}: run `teleread db upgrade` first, then back up"
                    )
                dumped = [_dump_table(conn, table, work) for table in tables()]
            summary = BackupSummary(path, head, engine.dialect.name)
            entries: list[dict[str, Any]] = []
            manifest: dict[str, Any] = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "revision": head,
                "dialect": engine.dialect.name,
                "created_at": datetime.now(UTC).isoformat(),
                "tables": entries,
            }
            for table, rows, digest in dumped:
                summary.tables.append(TableSummary(table.name, rows, digest))
                entries.append(
                    {
                        "name": table.name,
                        "rows": rows,
                        "sha256": digest,
                        "columns": {c.name: column_kind(c) for c in table.columns},
                    }
                )
            _write_archive(path, manifest, work)
    finally:
        engine.dispose()
    summary.size = path.stat().st_size
    summary.seconds = time.monotonic() - started
    return summary


def _require_existing_sqlite(url: str) -> None:
    """Opening a missing SQLite file would create an empty database: say so instead."""
    from worklist.db import normalise_url

    parsed = normalise_url(url)
    db = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and db and db != ":memory:":
        if not db.startswith("file:") and not Path(db).is_file():
            raise BackupError(f"there is no database at {db}: check --database-url / --data-dir")


def _dump_table(conn: Connection, table: Table, work: Path) -> tuple[Table, int, str]:
    kinds = [column_kind(c) for c in table.columns]
    pk = list(table.primary_key.columns) or list(table.columns)
    stmt = select(*_select_columns(table)).order_by(*pk)
    digest = hashlib.sha256()
    rows = 0
    with open(work / f"{table.name}.jsonl", "wb") as out:
        result = conn.execution_options(yield_per=BATCH_ROWS).execute(stmt)
        for row in result:
            values = [encode_value(k, v) for k, v in zip(kinds, row, strict=True)]
            line = (json.dumps(values, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
            digest.update(line)
            out.write(line)
            rows += 1
    return table, rows, digest.hexdigest()


def _write_archive(path: Path, manifest: dict[str, Any], work: Path) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            with (
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz,
                tarfile.open(fileobj=gz, mode="w") as tar,
            ):
                body = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size = len(body)
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(body))
                for entry in manifest["tables"]:
                    member = work / f"{entry['name']}.jsonl"
                    tar.add(member, arcname=f"tables/{entry['name']}.jsonl")
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o600)  # patient data
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
