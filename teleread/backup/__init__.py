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

Layout: ``archive`` (the file format, errors, reading and verifying), ``dump`` (the
snapshot and ``backup``), ``load`` (``restore``: COPY / INSERT, PostgreSQL sequences).
"""

from __future__ import annotations

from teleread.backup.archive import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    BackupCorrupt,
    BackupError,
    DatabaseNotEmpty,
    RevisionMismatch,
    code_head,
    column_kind,
    current_revision,
    default_backup_name,
    read_manifest,
    tables,
    verify,
)
from teleread.backup.dump import BackupSummary, TableSummary, backup, snapshot
from teleread.backup.load import RestoreSummary, restore

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "BackupCorrupt",
    "BackupError",
    "BackupSummary",
    "DatabaseNotEmpty",
    "RestoreSummary",
    "RevisionMismatch",
    "TableSummary",
    "backup",
    "code_head",
    "column_kind",
    "current_revision",
    "default_backup_name",
    "read_manifest",
    "restore",
    "snapshot",
    "tables",
    "verify",
]
