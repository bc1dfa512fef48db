"""The backup file: its format (manifest, column kinds, how values are written), the
errors, reading and verifying an archive, and what both directions ask of the database
(its tables, the code's migration head, the database's revision).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import tarfile
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
    Numeric,
    Table,
    Time,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

FORMAT = "teleread-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BATCH_ROWS = 1000
# what opening or reading a damaged (or foreign) gzip'd tar raises
_UNREADABLE = (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile)


class BackupError(Exception):
    """The backup or restore could not be done."""


class BackupCorrupt(BackupError):
    """The backup file is damaged (a table's checksum or row count does not match)."""


class RevisionMismatch(BackupError):
    """The backup and the database are at different migration revisions."""


class DatabaseNotEmpty(BackupError):
    """The target database already holds rows."""


# -- column kinds ------------------------------------------------------------------------


# the first match wins: the order matters where one type subclasses another (Float, Numeric)
_KINDS: tuple[tuple[type[TypeEngine[Any]], str], ...] = (
    (JSON, "json"),
    (DateTime, "datetime"),
    (Date, "date"),
    (Time, "time"),
    (Boolean, "bool"),
    (Integer, "int"),
    (Float, "float"),
    (Numeric, "decimal"),
    (LargeBinary, "bytes"),
)


def column_kind(column: Column[Any]) -> str:
    t: TypeEngine[Any] = column.type
    if isinstance(t, TypeDecorator):
        t = t.impl if isinstance(t.impl, TypeEngine) else t.impl_instance
    return next((kind for cls, kind in _KINDS if isinstance(t, cls)), "str")


def encode_value(kind: str, value: Any) -> Any:
    """A column value of ``kind`` (``column_kind``) as JSON holds it in a backup."""
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


def decode_value(kind: str, value: Any) -> Any:
    """``encode_value`` undone."""
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


def one_connection_engine(url: str) -> Engine:
    """An engine of one pooled connection, for a backup or a restore."""
    from worklist.db import make_engine

    return make_engine(url, pool_size=1, max_overflow=0)


# -- reading a backup --------------------------------------------------------------------


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            return _manifest(tar)
    except _UNREADABLE as exc:
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


def table_lines(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    """Table ``name``'s rows in the archive, one JSON line each (``BackupCorrupt`` if none)."""
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
                for line in table_lines(tar, entry["name"]):
                    digest.update(line)
                    rows += 1
                if digest.hexdigest() != entry["sha256"] or rows != entry["rows"]:
                    raise BackupCorrupt(
                        f"table {entry['name']} in {path} is damaged (checksum or row count "
                        "differs from the manifest): do not restore from this file"
                    )
    except (*_UNREADABLE, ValueError) as exc:
        raise BackupCorrupt(f"{path} is damaged: {exc}") from exc
    return manifest


def default_backup_name(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"teleread-{now:%Y%m%dT%H%M%SZ}.tar.gz"
