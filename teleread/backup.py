"""`teleread backup` / `teleread restore`: a logical database backup that works the same on
SQLite and PostgreSQL (and moves a county from one to the other).

The file is a gzip'd tar archive:

- ``manifest.json`` (first): format and version, the Alembic revision, the source dialect,
  the time, and per table its columns (name and kind), row count and the sha256 of its data
  member;
- ``tables/<name>.jsonl``: one JSON array per row, values typed by the column's kind
  (``datetime``: ISO 8601 with offset; ``json``: the stored JSON text or null; ``bytes``:
  base64; others as JSON numbers, strings, booleans).

Every table of ``worklist.models.Base.metadata`` is dumped in dependency order, inside one
read transaction (REPEATABLE READ on PostgreSQL; a deferred ``BEGIN`` on SQLite, whose WAL
then serves one snapshot), so the backup is consistent while the county keeps working.
The archive is written to a temporary file next to the target, fsynced, then renamed.

Restore goes into a database at the same migration head, empty unless ``force``; all in one
transaction; PostgreSQL sequences are then moved past the restored ids.
"""

from __future__ import annotations

import base64
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
from datetime import UTC, date, datetime
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    Table,
    Text,
    Time,
    cast,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

FORMAT = "teleread-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BATCH_ROWS = 1000


class BackupError(Exception):
    """The backup or restore could not be done."""


class BackupCorrupt(BackupError):
    """The backup file is damaged (a table's checksum or row count does not match)."""


class RevisionMismatch(BackupError):
    """The backup and the database are at different migration revisions."""


class DatabaseNotEmpty(BackupError):
    """The target database already holds rows."""


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


# -- column kinds ------------------------------------------------------------------------


def column_kind(column: Column[Any]) -> str:
    t: TypeEngine[Any] = column.type
    if isinstance(t, TypeDecorator):
        t = t.impl if isinstance(t.impl, TypeEngine) else t.impl_instance
    if isinstance(t, JSON):
        return "json"
    if isinstance(t, DateTime):
        return "datetime"
    if isinstance(t, Date):
        return "date"
    if isinstance(t, Time):
        return "time"
    if isinstance(t, Boolean):
        return "bool"
    if isinstance(t, Integer):
        return "int"
    if isinstance(t, Float):
        return "float"
    if isinstance(t, Numeric):
        return "decimal"
    if isinstance(t, LargeBinary):
        return "bytes"
    return "str"


def _encode(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "datetime":
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.isoformat()
    if kind in ("date", "time"):
        return value.isoformat()
    if kind == "decimal":
        return str(value)
    if kind == "bytes":
        return base64.b64encode(bytes(value)).decode("ascii")
    return value  # json (already text), bool, int, float, str


def _decode(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "datetime":
        return datetime.fromisoformat(value)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "time":
        return dtime.fromisoformat(value)
    if kind == "decimal":
        return Decimal(value)
    if kind == "bytes":
        return base64.b64decode(value)
    if kind == "json":
        loaded = json.loads(value)
        return JSON.NULL if loaded is None else loaded
    return value


def tables() -> list[Table]:
    """Every table of the county index, parents before children."""
    from worklist.models import Base

    return list(Base.metadata.sorted_tables)


def code_head() -> str:
    from alembic.script import ScriptDirectory

    from worklist.db import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


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
    from worklist.db import make_engine

    started = time.monotonic()
    path = Path(path)
    _require_existing_sqlite(url)
    engine = make_engine(url, pool_size=1, max_overflow=0)
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
            values = [_encode(k, v) for k, v in zip(kinds, row, strict=True)]
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


# -- reading a backup --------------------------------------------------------------------


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            return _manifest(tar)
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
        raise BackupCorrupt(f"{path} is not a teleread backup (or is damaged): {exc}") from exc


def _manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    member = tar.extractfile(MANIFEST)
    if member is None:
        raise BackupCorrupt("the backup has no manifest.json")
    try:
        manifest: dict[str, Any] = json.loads(member.read())
    except ValueError as exc:
        raise BackupCorrupt(f"the backup's manifest is not JSON: {exc}") from exc
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise BackupCorrupt(
            f"not a teleread backup of format version {FORMAT_VERSION}: "
            f"{manifest.get('format')!r} version {manifest.get('version')!r}"
        )
    return manifest


def _lines(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    try:
        member = tar.extractfile(f"tables/{name}.jsonl")
    except KeyError:
        member = None
    if member is None:
        raise BackupCorrupt(f"the backup has no data for table {name}")
    return member


def verify(path: Path) -> dict[str, Any]:
    """Check every table's sha256 and row count against the manifest; return the manifest."""
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            manifest = _manifest(tar)
            for entry in manifest["tables"]:
                digest = hashlib.sha256()
                rows = 0
                for line in _lines(tar, entry["name"]):
                    digest.update(line)
                    rows += 1
                if digest.hexdigest() != entry["sha256"] or rows != entry["rows"]:
                    raise BackupCorrupt(
                        f"table {entry['name']} in {path} is damaged (checksum or row count "
                        "differs from the manifest): do not restore from this file"
                    )
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile, ValueError) as exc:
        raise BackupCorrupt(f"{path} is damaged: {exc}") from exc
    return manifest


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
    from worklist.db import make_engine

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
    engine = make_engine(url, pool_size=1, max_overflow=0)
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
        for line in _lines(tar, table.name):
            digest.update(line)
            rows += 1
            yield [_decode(k, v) for k, v in zip(kinds, json.loads(line), strict=True)]

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


def default_backup_name(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"teleread-{now:%Y%m%dT%H%M%SZ}.tar.gz"


__all__ = [
    "BackupCorrupt",
    "BackupError",
    "BackupSummary",
    "DatabaseNotEmpty",
    "RestoreSummary",
    "RevisionMismatch",
    "backup",
    "column_kind",
    "default_backup_name",
    "read_manifest",
    "restore",
    "tables",
    "verify",
]
