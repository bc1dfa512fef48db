"""The durable spool: received files on disk plus an outbox table in SQLite.

An instance is acknowledged only once it is durable: the Part-10 file is written to a temp
file, fsynced, renamed to ``objects/<sha256>.dcm`` and the directory fsynced; then its outbox
row is committed (WAL, ``synchronous=NORMAL``: the commit survives kill -9 at once, and a power
cut once the WAL is next synced). The fsynced file is the durable record: its file meta carries
the calling and called AE titles and the site (``gateway.instance.encode_meta``), so at the
next open a file without a row (a power cut took the commit, or a crash came between the rename
and the commit) gets its row back from the file alone. Files the gateway did not write that
way (no spool information) are removed. One fsync of the file and one of the directory per
instance: the outbox commit's own fsync cost as much again and bought nothing the file lacks.
Marking rows announced (after which spool files are deleted) is committed with a full sync.

Instances up to a slot's size are written instead into a pre-written slot file
(``gateway.slots``, ``slot_count`` > 0): one ``O_DSYNC`` overwrite in place, no journal
commit; the slot's record (header with both sha256 + the Part-10 bytes) is the durable record
as the file is, ``_recover`` rebuilds rows from it the same way, and the announcement frees
the slot instead of deleting a file. The ``path`` column says which: ``objects/...`` or
``slots/<n>/<k>``; read the bytes through ``read_bytes``/``open``, not the path.

Row states: ``received`` -> ``uploaded`` (in the object store, sha256 verified) ->
``announced`` (the county API knows; the spool file is deleted, the row kept for dedup until
pruned). ``conflict``: same SOP Instance UID as an earlier instance with different bytes, kept
here and never uploaded over the first. ``missing``: the spool file vanished (reported).

Dedup is by the sha256 of the dataset bytes (not the file: its meta header carries the calling
AE title), among rows of the same SOP Instance UID; files are named by it. The sha256 of the
whole file (``sha256``, what the object store must hold) is filled in by the forwarder before
the upload, after it checked the file's dataset against the sha256 taken at receipt.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

from gateway import slots
from gateway.errors import SpoolError, SpoolFull
from gateway.instance import ReceivedInstance

logger = logging.getLogger(__name__)

RECEIVED, UPLOADED, ANNOUNCED = "received", "uploaded", "announced"
CONFLICT, MISSING = "conflict", "missing"
INVALID = "invalid"  # acknowledged, but its header turned out unreadable (kept, reported)
PENDING_STATES = (RECEIVED, UPLOADED)
HELD_STATES = (RECEIVED, UPLOADED, CONFLICT, INVALID)  # states whose file is still held
StoreOutcome = Literal["stored", "duplicate", "conflict"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sop_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    site TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    called_ae TEXT NOT NULL,
    object_key TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    dataset_sha256 TEXT NOT NULL,
    priority_rank INTEGER NOT NULL,
    category TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    received_at TEXT NOT NULL,
    received_ts REAL NOT NULL,
    uploaded_at REAL,
    announced_at REAL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_sop ON outbox (sop_instance_uid);
CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (state, priority_rank, received_ts, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# columns added after the first release: (name, SQL type); added to older spools at open
_ADDED_COLUMNS = (
    ("upload_size", "INTEGER"),  # what was uploaded when it is not the spooled file
    ("upload_sha256", "TEXT"),  # (lossless recompression, see gateway.recompress)
    ("upload_transfer_syntax", "TEXT"),
    ("upload_method", "TEXT"),
    # 0: only the UIDs are known yet (the header is read after the C-STORE response, see
    # ``index_pending``); not uploaded until 1
    ("indexed", "INTEGER NOT NULL DEFAULT 1"),
)
# monotonic counters kept in outbox.db (so they survive restarts and add up across acceptor
# processes); gateway.metrics exposes them
COUNTERS = (
    "instances_received",
    "instances_stored",
    "instances_duplicate",
    "instances_conflict",
    "instances_refused_spool_full",
    "uploads",
    "upload_failures",
    "announce_failures",
    "instances_announced",
    "bytes_uploaded",
    "bytes_saved_recompression",
)
_COLUMNS = (
    "id, sop_instance_uid, series_instance_uid, study_instance_uid, site, calling_ae, "
    "called_ae, object_key, path, size, sha256, priority_rank, category, state, attempts, "
    "next_attempt_at, last_error, received_at, payload, upload_size, upload_sha256, "
    "upload_transfer_syntax, upload_method, dataset_sha256"
)
_ORDER = "ORDER BY priority_rank, received_ts, id"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    site: str
    calling_ae: str
    called_ae: str
    object_key: str
    path: str
    size: int
    sha256: str
    priority_rank: int
    category: str | None
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    received_at: str
    payload: str
    upload_size: int | None = None
    upload_sha256: str | None = None
    upload_transfer_syntax: str | None = None
    upload_method: str | None = None
    dataset_sha256: str = ""

    def announcement(self) -> dict[str, Any]:
        """The ingest JSON's per-instance object: size and sha256 of the uploaded object."""
        item: dict[str, Any] = json.loads(self.payload)
        item.update(
            size=self.upload_size if self.upload_sha256 else self.size,
            sha256=self.upload_sha256 or self.sha256,
            received_at=self.received_at,
        )
        if self.upload_sha256 and self.upload_transfer_syntax:
            item["transfer_syntax_uid"] = self.upload_transfer_syntax
        return item


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The spool directory: ``objects/`` and ``outbox.db``. Thread-safe."""

    def __init__(
        self,
        root: Path | str,
        *,
        max_bytes: int = 0,
        min_free_bytes: int = 0,
        slot_count: int = 0,
        slot_size: int | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        # pre-written slot files (gateway.slots) for instances that fit; 0: files only
        self.slot_count = slot_count
        self.slot_size = slots.DEFAULT_SIZE if slot_size is None else slot_size
        self._pool: slots.SlotPool | None = None
        self.objects = self.root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.new_work = threading.Event()  # set whenever a row becomes due
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.root / "outbox.db", check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # the spool file is the durable record
        self._db.executescript(_SCHEMA)
        have = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
        for name, sql_type in _ADDED_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE outbox ADD COLUMN {name} {sql_type}")
        self._db.execute(  # to_index runs once per forwarder step: a few rows, not a scan
            "CREATE INDEX IF NOT EXISTS outbox_unindexed ON outbox (priority_rank, id) "
            "WHERE indexed = 0"
        )
        self._bytes = 0
        self._recover()
        if self.slot_count:  # after recovery: it decided which slots hold records
            try:
                self._pool = slots.SlotPool(self.root, count=self.slot_count, size=self.slot_size)
            except OSError as exc:
                logger.error(
                    "slot pool not available, spooling to files",
                    extra={"action": "slot_pool_failed", "error": repr(exc)},
                )

    # -- start-up ------------------------------------------------------------------------

    def _recover(self) -> None:
        """Drop temp and orphan files; flag rows whose file is gone; count held bytes."""
        with self._lock:
            held_sha = dict(
                self._db.execute(
                    f"SELECT path, dataset_sha256 FROM outbox WHERE state IN {HELD_STATES}"
                )
            )
            held = dict.fromkeys(held_sha, RECEIVED)
            present = self._recover_slots(held_sha)
            orphans = []
            for entry in os.scandir(self.objects):
                rel = f"objects/{entry.name}"
                if rel not in held:
                    if entry.name.startswith(".tmp-") or not self._reindex(Path(entry.path)):
                        os.unlink(entry.path)
                        logger.info(
                            "orphan spool file removed",
                            extra={"action": "spool_orphan_removed", "path": rel},
                        )
                    else:
                        orphans.append(rel)
            held.update(dict.fromkeys(orphans, RECEIVED))
            for path in held:
                if path.startswith("slots/") and path in present:
                    continue
                if path.startswith("slots/") or not (self.root / path).exists():
                    self._db.execute(
                        "UPDATE outbox SET state = ?, last_error = ? WHERE path = ? "
                        f"AND state IN {HELD_STATES}",
                        (MISSING, "spool file missing at start", path),
                    )
                    logger.error(
                        "spool file missing", extra={"action": "spool_file_missing", "path": path}
                    )
            (total,) = self._db.execute(
                f"SELECT COALESCE(SUM(size), 0) FROM outbox WHERE state IN {HELD_STATES}"
            ).fetchone()
            self._bytes = int(total)

    def _recover_slots(self, held_sha: dict[str, str]) -> set[str]:
        """Slots holding a record: kept when their row holds them, else the row rebuilt (or
        the slot freed: a duplicate of a row, e.g. announced before the slot was freed)."""
        present: set[str] = set()
        base = self.root / "slots"
        if not base.is_dir():
            return present
        for directory in sorted(p for p in base.iterdir() if p.is_dir()):
            for entry in sorted(directory.iterdir()):
                if entry.name.startswith(".tmp-"):
                    entry.unlink(missing_ok=True)
                    continue
                rel = f"slots/{directory.name}/{entry.name}"
                record = slots.read_record(entry)
                if record is None:
                    if slots.has_magic(entry):  # a torn write: never acknowledged
                        slots.invalidate(entry)
                    continue
                if held_sha.get(rel) == record.dataset_sha256:
                    present.add(rel)
                elif self._reindex_data(record.data, record.received_ts, rel, slot=rel):
                    present.add(rel)
                else:
                    slots.invalidate(entry)
        return present

    def _reindex(self, path: Path) -> bool:
        """Give a spool file without an outbox row its row back; False: not ours, remove it."""
        try:
            data = path.read_bytes()
            mtime = path.stat().st_mtime
        except OSError:
            return False
        return self._reindex_data(data, mtime, str(path))

    def _reindex_data(self, data: bytes, now: float, where: str, slot: str | None = None) -> bool:
        from pydicom import dcmread

        from gateway.instance import read_instance, spool_info_of

        try:
            meta = dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
            info = spool_info_of(meta)
            if info is None:
                return False
            called = str(getattr(meta, "ReceivingApplicationEntityTitle", "") or "").strip()
            category = info.get("category")
            inst = read_instance(
                data,
                meta,
                site=str(info.get("site", "")),
                calling_ae=str(getattr(meta, "SourceApplicationEntityTitle", "")).strip(),
                called_ae=called,
                urgent_called_aes={called: category} if category else {},
            )
            offset = 144 + int.from_bytes(data[140:144], "little")
            outcome, row_id = self.store(
                inst, data, dataset_offset=offset, now=now, recovery=True, slot=slot
            )
        except Exception as exc:
            logger.error(
                "spool file without outbox row not recoverable",
                extra={"action": "spool_reindex_failed", "path": where, "error": repr(exc)},
            )
            return False
        logger.warning(
            "outbox row rebuilt from its spool file",
            extra={"action": "spool_row_rebuilt", "row_id": row_id, "outcome": outcome},
        )
        return outcome != "duplicate"  # a duplicate's row holds the bytes already

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
            self._db.close()

    # -- counters ------------------------------------------------------------------------

    def _count_sql(self, counts: dict[str, int]) -> None:
        """Add to counters; call inside the caller's transaction (or alone: autocommit)."""
        self._db.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            [(k, v) for k, v in counts.items() if v],
        )

    def count(self, **counts: int) -> None:
        """Add to the spool's monotonic counters (``COUNTERS``)."""
        with self._lock:
            try:
                self._count_sql(counts)
            except sqlite3.Error as exc:  # a counter must never fail the real work
                logger.warning(
                    "counter not updated", extra={"action": "counter_failed", "error": str(exc)}
                )

    def counters(self) -> dict[str, int]:
        with self._lock:
            rows = dict(self._db.execute("SELECT name, value FROM counters"))
        return {name: int(rows.get(name, 0)) for name in COUNTERS}

    # -- receiving -----------------------------------------------------------------------

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def _admit(self, size: int) -> None:
        if self.max_bytes and self._bytes + size > self.max_bytes:
            raise SpoolFull(f"spool holds {self._bytes} bytes, limit {self.max_bytes}")
        free = shutil.disk_usage(self.root).free
        if free - size < self.min_free_bytes:
            raise SpoolFull(f"{free} bytes free on the spool disk, minimum {self.min_free_bytes}")

    def _same_sop(self, sop: str) -> list[tuple[int, str, str]]:
        return list(
            self._db.execute(
                "SELECT id, dataset_sha256, state FROM outbox "
                "WHERE sop_instance_uid = ? AND state != ?",
                (sop, MISSING),
            )
        )

    def _write_file(self, data: bytes, dataset_sha256: str) -> str:
        rel = f"objects/{dataset_sha256}.dcm"
        tmp = self.objects / f".tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.root / rel)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.objects)
        return rel

    def store(
        self,
        inst: ReceivedInstance,
        data: bytes,
        *,
        dataset_offset: int,
        now: float | None = None,
        recovery: bool = False,
        slot: str | None = None,
    ) -> tuple[StoreOutcome, int]:
        """Make one received instance durable; return what happened and the row id.

        Raises ``SpoolFull`` when there is no room, ``SpoolError`` when the disk fails.
        Dedup is decided inside the insert's write transaction, so two acceptor processes
        storing the same instance at once make one row. ``slot``: (recovery) the slot that
        already holds these bytes.
        """
        now = time.time() if now is None else now
        dataset_sha = hashlib.sha256(memoryview(data)[dataset_offset:]).hexdigest()
        with self._lock:
            for row_id, sha, _state in self._same_sop(inst.sop_instance_uid):
                if sha == dataset_sha:
                    self.count(instances_received=1, instances_duplicate=1)
                    return "duplicate", row_id
            if not recovery:
                try:
                    self._admit(len(data))
                except SpoolFull:
                    self.count(instances_received=1, instances_refused_spool_full=1)
                    raise
        # the whole file's sha256 (what the object store will hold) is the forwarder's to
        # compute, off this critical path, after checking the dataset's against the file
        taken = None if recovery else self._take_slot(len(data))
        try:
            if taken is not None:
                head = slots.header(data, dataset_offset, dataset_sha, now)
                self._slot_pool().write(taken, head, data)
                rel = taken
            else:
                rel = slot or self._write_file(data, dataset_sha)
        except OSError as exc:
            if taken is not None:
                self._slot_pool().give_back(taken)
            raise SpoolError(f"cannot write spool file: {exc}") from exc
        try:
            outcome, row_id = self._insert(inst, data, rel, dataset_sha, now)
        except BaseException:
            if taken is not None:
                self._slot_pool().give_back(taken)
            raise
        if taken is not None:
            if outcome == "duplicate":
                self._slot_pool().give_back(taken)
            else:
                self._slot_pool().kept(taken)
        elif slot is not None and outcome == "duplicate":
            slots.invalidate(self.root / slot)
        return outcome, row_id

    def _slot_pool(self) -> slots.SlotPool:
        assert self._pool is not None
        return self._pool

    def _take_slot(self, length: int) -> str | None:
        return None if self._pool is None else self._pool.take(length)

    def fill_slots(self) -> None:
        """Create every slot of the pool now instead of as needed (first start, tests)."""
        if self._pool is not None:
            self._pool.fill()

    def _insert(
        self, inst: ReceivedInstance, data: bytes, rel: str, dataset_sha: str, now: float
    ) -> tuple[StoreOutcome, int]:
        sha256 = ""
        received_at = datetime.fromtimestamp(now, UTC).isoformat()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")  # dedup and insert: one writer at a time
                same = self._same_sop(inst.sop_instance_uid)
                dup = next(((i, st) for i, sha, st in same if sha == dataset_sha), None)
                if dup is not None:  # a concurrent association stored it first
                    self._count_sql({"instances_received": 1, "instances_duplicate": 1})
                    self._db.execute("COMMIT")
                    if dup[1] not in HELD_STATES and rel.startswith("objects/"):
                        (self.root / rel).unlink(missing_ok=True)  # its file (same name) gone
                    return "duplicate", dup[0]
                state = CONFLICT if same else RECEIVED
                cur = self._db.execute(
                    "INSERT INTO outbox (sop_instance_uid, series_instance_uid, "
                    "study_instance_uid, sop_class_uid, site, calling_ae, called_ae, object_key, "
                    "path, size, sha256, dataset_sha256, priority_rank, category, state, "
                    "next_attempt_at, last_error, received_at, received_ts, payload, indexed) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        inst.sop_instance_uid,
                        inst.series_instance_uid,
                        inst.study_instance_uid,
                        inst.sop_class_uid,
                        inst.site,
                        inst.calling_ae,
                        inst.called_ae,
                        inst.object_key,
                        rel,
                        len(data),
                        sha256,
                        dataset_sha,
                        inst.priority_rank,
                        inst.category,
                        state,
                        now,
                        f"conflicts with outbox row {same[0][0]}" if same else None,
                        received_at,
                        now,
                        json.dumps(inst.payload, ensure_ascii=False),
                        int(inst.indexed),
                    ),
                )
                outcome = "instances_stored" if state == RECEIVED else "instances_conflict"
                self._count_sql({"instances_received": 1, outcome: 1})
                self._db.execute("COMMIT")  # row and counters: one transaction
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise SpoolError(f"cannot record outbox row: {exc}") from exc
            self._bytes += len(data)
            row_id = int(cur.lastrowid or 0)
        if state == RECEIVED:
            self.new_work.set()
            return "stored", row_id
        return "conflict", row_id

    # -- forwarding ----------------------------------------------------------------------

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[OutboxRow]:
        with self._lock:
            return [OutboxRow(*r) for r in self._db.execute(sql, params)]

    def to_index(self, limit: int) -> list[OutboxRow]:
        """Rows whose header is still to be read, urgent-by-called-AE first, then arrival."""
        return self._rows(
            f"SELECT {_COLUMNS} FROM outbox INDEXED BY outbox_unindexed "
            f"WHERE indexed = 0 AND state IN {HELD_STATES} ORDER BY priority_rank, id LIMIT ?",
            (limit,),
        )

    def set_indexed(self, done: list[tuple[int, ReceivedInstance, str]]) -> None:
        """Headers read after the response, ``(row id, instance, file sha256)``: triage,
        announcement fields, the file's sha256; one write transaction for the batch (the
        acceptors wait for the write lock meanwhile)."""
        if not done:
            return
        with self._lock:
            self._db.executemany(
                "UPDATE outbox SET priority_rank = ?, category = ?, payload = ?, sha256 = ?, "
                "indexed = 1 WHERE id = ?",
                [
                    (
                        inst.priority_rank,
                        inst.category,
                        json.dumps(inst.payload, ensure_ascii=False),
                        sha256,
                        row_id,
                    )
                    for row_id, inst, sha256 in done
                ],
            )
        self.new_work.set()

    def set_invalid(self, row_id: int, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET state = ?, last_error = ?, indexed = 1 WHERE id = ?",
                (INVALID, error[:500], row_id),
            )

    def next_to_upload(self, now: float) -> OutboxRow | None:
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM outbox WHERE state = ? AND next_attempt_at <= ? "
            f"AND indexed = 1 {_ORDER} LIMIT 1",
            (RECEIVED, now),
        )
        return rows[0] if rows else None

    def to_announce(self, now: float, limit: int) -> list[OutboxRow]:
        """Due uploaded rows of the most urgent row's (site, calling AE, called AE)."""
        head = self._rows(
            f"SELECT {_COLUMNS} FROM outbox WHERE state = ? AND next_attempt_at <= ? "
            f"{_ORDER} LIMIT 1",
            (UPLOADED, now),
        )
        if not head:
            return []
        h = head[0]
        return self._rows(
            f"SELECT {_COLUMNS} FROM outbox WHERE state = ? AND next_attempt_at <= ? "
            f"AND site = ? AND calling_ae = ? AND called_ae = ? {_ORDER} LIMIT ?",
            (UPLOADED, now, h.site, h.calling_ae, h.called_ae, limit),
        )

    def uploaded_backlog(self) -> tuple[int, float | None]:
        """(uploaded rows waiting for announcement, the oldest one's upload time)."""
        with self._lock:
            count, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(uploaded_at) FROM outbox WHERE state = ?", (UPLOADED,)
            ).fetchone()
        return int(count), oldest

    def next_due_at(self) -> float | None:
        with self._lock:
            (due,) = self._db.execute(
                f"SELECT MIN(next_attempt_at) FROM outbox WHERE state IN {PENDING_STATES}"
            ).fetchone()
        return due

    def set_sha256(self, row_id: int, sha256: str) -> None:
        """Record the spooled file's sha256 (computed by the forwarder before its upload)."""
        with self._lock:
            self._db.execute("UPDATE outbox SET sha256 = ? WHERE id = ?", (sha256, row_id))

    def set_upload(
        self, row_id: int, *, size: int, sha256: str, transfer_syntax: str, method: str
    ) -> None:
        """Record, before the upload, that other bytes than the spooled file go up (a
        recompressed copy): after a crash the object found in the store is recognised."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET upload_size = ?, upload_sha256 = ?, "
                "upload_transfer_syntax = ?, upload_method = ? WHERE id = ?",
                (size, sha256, transfer_syntax, method, row_id),
            )

    def mark_uploaded(
        self, row_id: int, now: float, *, uploaded_bytes: int = 0, saved_bytes: int = 0
    ) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "UPDATE outbox SET state = ?, uploaded_at = ?, next_attempt_at = ?, "
                    "last_error = NULL WHERE id = ? AND state = ?",
                    (UPLOADED, now, now, row_id, RECEIVED),
                )
                if cur.rowcount:
                    self._count_sql(
                        {
                            "uploads": 1,
                            "bytes_uploaded": uploaded_bytes,
                            "bytes_saved_recompression": saved_bytes,
                        }
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def mark_announced(self, rows: list[OutboxRow], now: float) -> None:
        """Announced: record it, then delete the spool files (the rows stay for dedup)."""
        with self._lock:
            # durable before the spool files go (synchronous cannot change mid-transaction)
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._mark_announced(rows, now)
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")
            for r in rows:
                if r.path.startswith("slots/"):
                    slots.invalidate(self.root / r.path)  # the owner's pool takes it back
                else:
                    (self.root / r.path).unlink(missing_ok=True)
                self._bytes -= r.size

    def _mark_announced(self, rows: list[OutboxRow], now: float) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # one durable commit for the whole batch
            try:
                self._db.executemany(
                    "UPDATE outbox SET state = ?, announced_at = ?, last_error = NULL "
                    "WHERE id = ? AND state = ?",
                    [(ANNOUNCED, now, r.id, UPLOADED) for r in rows],
                )
                self._count_sql({"instances_announced": len(rows)})
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def mark_failed(self, rows: list[OutboxRow], error: str, retry_at: float) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
                "WHERE id = ?",
                [(error[:500], retry_at, r.id) for r in rows],
            )

    def mark_state(self, row: OutboxRow, state: str, error: str) -> None:
        """Take a row out of the queue (``conflict``, ``missing``) with the reason."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET state = ?, last_error = ? WHERE id = ?",
                (state, error[:500], row.id),
            )
            if state == MISSING:
                self._bytes -= row.size

    def prune(self, older_than: float) -> int:
        """Forget announced rows announced before ``older_than`` (unix time)."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM outbox WHERE state = ? AND announced_at < ?", (ANNOUNCED, older_than)
            )
        return cur.rowcount

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read-only access for status reports."""
        with self._lock:
            return list(self._db.execute(sql, params))

    def path_of(self, row: OutboxRow) -> Path:
        return self.root / row.path

    def read_bytes(self, row: OutboxRow) -> bytes:
        """The spooled Part-10 bytes (a file's, or a slot's record); FileNotFoundError when
        gone."""
        return self.read_at(row.path)

    def read_at(self, path: str) -> bytes:
        """``read_bytes`` by the outbox's ``path`` column."""
        if path.startswith("slots/"):
            return slots.read_payload(self.root / path)
        return (self.root / path).read_bytes()

    def holds(self, row: OutboxRow) -> bool:
        try:
            if row.path.startswith("slots/"):
                slots.read_payload(self.root / row.path)
                return True
            return (self.root / row.path).exists()
        except FileNotFoundError:
            return False

    def open(self, row: OutboxRow) -> BinaryIO:
        """The spooled Part-10 bytes as a binary stream (close it)."""
        if row.path.startswith("slots/"):
            return io.BytesIO(slots.read_payload(self.root / row.path))
        return open(self.root / row.path, "rb")
