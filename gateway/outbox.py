"""The spool's outbox table (``outbox.db``): schema, row states, the row type, the counters,
and ``Outbox``, the one object that reads and writes it (the spool composes one; the
forwarder, the MPPS completion thread and the status report use its public methods).

Row states: ``received`` -> ``uploaded`` (in the object store, sha256 verified) ->
``announced`` (the county API knows; the spool file is deleted, the row kept for dedup until
pruned). A re-send with other bytes under a SOP Instance UID already received is queued like
any instance, under its own key (``storage.keys.version_key``: the first version is never
overwritten); the county's re-send policy decides which version it serves. ``conflict``: the
county held the instance (or kept the first version), kept here and listed by the status
report. ``missing``: the spool file vanished (reported).
``invalid``: acknowledged, but its header turned out unreadable (kept, reported).

The connection is WAL with ``synchronous=NORMAL`` (the spool file is the durable record, see
``gateway.spool``); marking rows announced is committed with a full sync. Several processes
(acceptor processes, the gateway process) open the same file: every write is one
transaction, serialised by SQLite's busy timeout.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from gateway.errors import SpoolError
from gateway.private_files import private_file
from gateway.received import ReceivedInstance
from storage.keys import version_key
from worklist.triage import patients_differ

logger = logging.getLogger(__name__)

RECEIVED, UPLOADED, ANNOUNCED = "received", "uploaded", "announced"
CONFLICT, MISSING = "conflict", "missing"
INVALID = "invalid"  # acknowledged, but its header turned out unreadable (kept, reported)
PENDING_STATES = (RECEIVED, UPLOADED)
HELD_STATES = (RECEIVED, UPLOADED, CONFLICT, INVALID)  # states whose file is still held
StoreOutcome = Literal["stored", "duplicate", "resent"]
# last_error of a row the county held for an admin (the kind follows)
COUNTY_HELD = "county held it as a conflict: "
STUDY_OTHER_SITE = "study_other_site"  # the county's conflict kind (docs/contracts.md)

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
CREATE INDEX IF NOT EXISTS outbox_study ON outbox (study_instance_uid);
CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (state, priority_rank, received_ts, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    called_ae TEXT NOT NULL,
    peer TEXT NOT NULL,
    site TEXT NOT NULL,
    reason TEXT NOT NULL,
    certificate_sha256 TEXT NOT NULL
);
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
    # read before the C-STORE response: is it the patient of the study's earlier rows?
    ("patient_id", "TEXT NOT NULL DEFAULT ''"),
    ("patient_name", "TEXT NOT NULL DEFAULT ''"),
    # the upload order within a priority (``_ORDER``): when the study's queued rows began to
    # arrive here, and 1 on the study's first instance here (its lead)
    ("study_ts", "REAL"),
    ("study_lead", "INTEGER NOT NULL DEFAULT 0"),
    ("upload_started_at", "REAL"),  # unix time its (last) upload began
)
# monotonic counters kept in outbox.db (so they survive restarts and add up across acceptor
# processes); gateway.metrics exposes them
COUNTERS = (
    "instances_received",
    "instances_stored",
    "instances_duplicate",
    "instances_resent",
    "instances_refused_spool_full",
    "uploads",
    "upload_failures",
    "announce_failures",
    "instances_announced",
    "instances_held_by_county",
    "instances_answered_held",
    "associations_refused",
    "bytes_uploaded",
    "bytes_saved_recompression",
)
COLUMNS = (
    "id, sop_instance_uid, series_instance_uid, study_instance_uid, site, calling_ae, "
    "called_ae, object_key, path, size, sha256, priority_rank, category, state, attempts, "
    "next_attempt_at, last_error, received_at, payload, upload_size, upload_sha256, "
    "upload_transfer_syntax, upload_method, dataset_sha256, uploaded_at"
)
# the upload (and announcement) order: by priority; within one, a study's first
# instance before the rest (every study shows at the county at once, even when several arrive
# together), then study by study in order of arrival (the earlier study completes first, not
# both late), each in the order its instances came
_ORDER = "ORDER BY priority_rank, study_lead DESC, study_ts, received_ts, id"
# refused associations kept for the county's audit trail until reported (gateway.heartbeat);
# beyond this many unreported, only counted (a flood must not grow the spool database)
MAX_REFUSALS_KEPT = 1000
REFUSAL_FIELDS = ("calling_ae", "called_ae", "peer", "site", "reason", "certificate_sha256")


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
    uploaded_at: float | None = None  # unix time, the gateway's clock

    def announcement(self) -> dict[str, Any]:
        """The ingest JSON's per-instance object: size and sha256 of the uploaded object,
        when it was received and uploaded (the study's timeline at the county)."""
        item: dict[str, Any] = json.loads(self.payload)
        item.update(
            object_key=self.object_key,  # a re-send's version key, not the payload's first
            size=self.upload_size if self.upload_sha256 else self.size,
            sha256=self.upload_sha256 or self.sha256,
            received_at=self.received_at,
        )
        if self.uploaded_at is not None:
            item["uploaded_at"] = datetime.fromtimestamp(self.uploaded_at, UTC).isoformat()
        if self.upload_sha256 and self.upload_transfer_syntax:
            item["transfer_syntax_uid"] = self.upload_transfer_syntax
        return item


def connect(path: Path) -> sqlite3.Connection:
    """Open (create, or bring up to date) the outbox database at ``path``."""
    private_file(path)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # the spool file is the durable record
    db.executescript(_SCHEMA)
    have = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
    for name, sql_type in _ADDED_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE outbox ADD COLUMN {name} {sql_type}")
    if "study_ts" not in have:  # rows queued before: each in order of arrival, as they were
        db.execute("UPDATE outbox SET study_ts = received_ts")
    db.execute(
        "CREATE INDEX IF NOT EXISTS outbox_upload_order ON outbox "
        "(state, priority_rank, study_lead DESC, study_ts, received_ts, id)"
    )
    db.execute(  # to_index runs once per forwarder step: a few rows, not a scan
        "CREATE INDEX IF NOT EXISTS outbox_unindexed ON outbox (priority_rank, id) "
        "WHERE indexed = 0"
    )
    return db


@dataclass(frozen=True, slots=True)
class Recorded:
    """What ``Outbox.record`` did: the outcome, the row id, and for a duplicate whether the
    earlier row still holds its spool file."""

    outcome: StoreOutcome
    row_id: int
    earlier_holds_file: bool = True


class Outbox:
    """``outbox.db``: the queue of received instances, their states and the counters.
    Thread-safe (one connection behind one lock); ``new_work`` is set whenever a row becomes
    due for the forwarder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.new_work = threading.Event()
        self._lock = threading.RLock()
        self._db = connect(path)

    def close(self) -> None:
        with self._lock:
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
        """Add to the monotonic counters (``COUNTERS``)."""
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

    # -- refused associations -------------------------------------------------------------

    def note_refusal(self, refusal: dict[str, str], *, now: float | None = None) -> None:
        """Count a refused association and keep it (``REFUSAL_FIELDS``) for the county's
        audit trail, up to ``MAX_REFUSALS_KEPT`` unreported. Never raises."""
        at = datetime.fromtimestamp(time.time() if now is None else now, UTC).isoformat()
        values = [str(refusal.get(name, ""))[:200] for name in REFUSAL_FIELDS]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                (kept,) = self._db.execute("SELECT COUNT(*) FROM refusals").fetchone()
                if kept < MAX_REFUSALS_KEPT:
                    self._db.execute(
                        f"INSERT INTO refusals (at, {', '.join(REFUSAL_FIELDS)}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (at, *values),
                    )
                self._count_sql({"associations_refused": 1})
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:  # bookkeeping: never fail the refusal itself
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                logger.warning(
                    "refusal not recorded", extra={"action": "refusal_failed", "error": str(exc)}
                )

    def pending_refusals(self, limit: int = 200) -> list[dict[str, Any]]:
        """The oldest refusals not yet reported, each with its ``id`` and ``at``."""
        with self._lock:
            rows = list(
                self._db.execute(
                    f"SELECT id, at, {', '.join(REFUSAL_FIELDS)} FROM refusals ORDER BY id LIMIT ?",
                    (limit,),
                )
            )
        return [dict(zip(("id", "at", *REFUSAL_FIELDS), row, strict=True)) for row in rows]

    def forget_refusals(self, ids: list[int]) -> None:
        """Reported: drop them."""
        with self._lock:
            self._db.executemany("DELETE FROM refusals WHERE id = ?", [(i,) for i in ids])

    # -- receiving -----------------------------------------------------------------------

    def same_sop(self, sop: str) -> list[tuple[int, str, str]]:
        """(row id, dataset sha256, state) of the rows under ``sop`` (missing ones left out)."""
        with self._lock:
            return list(
                self._db.execute(
                    "SELECT id, dataset_sha256, state FROM outbox "
                    "WHERE sop_instance_uid = ? AND state != ?",
                    (sop, MISSING),
                )
            )

    def held_reason(self, row_id: int, *, study_uid: str, site: str) -> str:
        """Why the instance of row ``row_id`` (just stored, or the earlier row of a
        duplicate) will not simply be filed, as far as this gateway knows at C-STORE time
        (``""``: nothing known): held by the county already, or a version the county did
        not serve (a re-send of either), or its study UID is another
        site's (received here for that site, or held by the county as another site's for
        an instance of the same study before), or it names another patient than the study's
        first instance here (``worklist.triage.patients_differ``, as the county compares)."""
        with self._lock:
            row = self._db.execute(
                "SELECT state, last_error, patient_id, patient_name FROM outbox WHERE id = ?",
                (row_id,),
            ).fetchone()
            first = self._db.execute(
                "SELECT site FROM outbox WHERE study_instance_uid = ? ORDER BY id LIMIT 1",
                (study_uid,),
            ).fetchone()
            county_held = self._db.execute(
                "SELECT 1 FROM outbox WHERE study_instance_uid = ? AND site = ? AND state = ? "
                "AND last_error = ? LIMIT 1",
                (study_uid, site, CONFLICT, COUNTY_HELD + STUDY_OTHER_SITE),
            ).fetchone()
            study_patient = self._db.execute(
                "SELECT patient_id, patient_name FROM outbox WHERE study_instance_uid = ? "
                "AND site = ? AND id < ? AND state NOT IN (?, ?, ?) ORDER BY id LIMIT 1",
                (study_uid, site, row_id, CONFLICT, MISSING, INVALID),
            ).fetchone()
        if row is not None and row[0] == CONFLICT:
            error = str(row[1] or "")
            if error.startswith(COUNTY_HELD):
                return f"held by the county: {error[len(COUNTY_HELD) :]}"
            # the county kept the version it serves (``worklist.resends``), or the file went
            return f"kept, not filed: {error[:120]}"
        if first is not None and first[0] != site:
            return f"study UID belongs to site {first[0]}: held for the county"
        if county_held is not None:
            return "study UID is another site's: held by the county"
        if (
            row is not None
            and study_patient is not None
            and patients_differ(*study_patient, *row[2:])
        ):
            return "patient ID or name differs from the study's: held for the county"
        return ""

    def record(
        self,
        inst: ReceivedInstance,
        *,
        path: str,
        size: int,
        dataset_sha256: str,
        now: float,
    ) -> Recorded:
        """The row of a durable spool file, ``received``: ``stored``, or ``resent`` when
        other bytes came under the same SOP Instance UID before (then uploaded under its own
        version key); nothing new for a duplicate. Dedup is decided inside the insert's write
        transaction, so two processes storing the same instance at once make one row. Raises
        ``SpoolError``."""
        received_at = datetime.fromtimestamp(now, UTC).isoformat()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")  # dedup and insert: one writer at a time
                same = list(
                    self._db.execute(
                        "SELECT id, dataset_sha256, state FROM outbox "
                        "WHERE sop_instance_uid = ? AND state != ?",
                        (inst.sop_instance_uid, MISSING),
                    )
                )
                dup = next(((i, st) for i, sha, st in same if sha == dataset_sha256), None)
                if dup is not None:  # a concurrent association stored it first
                    self._count_sql({"instances_received": 1, "instances_duplicate": 1})
                    self._db.execute("COMMIT")
                    return Recorded("duplicate", dup[0], dup[1] in HELD_STATES)
                # the study's first instance here leads it; the others go with its rows still
                # queued (none: the study queues anew from now)
                study_ts, earlier = self._db.execute(
                    f"SELECT MIN(CASE WHEN state IN {PENDING_STATES} THEN study_ts END), "
                    "COUNT(*) FROM outbox WHERE study_instance_uid = ? AND site = ?",
                    (inst.study_instance_uid, inst.site),
                ).fetchone()
                key = inst.object_key
                if same:  # a re-send with other bytes: beside the first, never over it
                    key = version_key(
                        inst.site,
                        inst.study_instance_uid,
                        inst.series_instance_uid,
                        inst.sop_instance_uid,
                        dataset_sha256,
                    )
                cur = self._db.execute(
                    "INSERT INTO outbox (sop_instance_uid, series_instance_uid, "
                    "study_instance_uid, sop_class_uid, site, calling_ae, called_ae, object_key, "
                    "path, size, sha256, dataset_sha256, priority_rank, category, state, "
                    "next_attempt_at, last_error, received_at, received_ts, payload, indexed, "
                    "patient_id, patient_name, study_ts, study_lead) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "?, ?)",
                    (
                        inst.sop_instance_uid,
                        inst.series_instance_uid,
                        inst.study_instance_uid,
                        inst.sop_class_uid,
                        inst.site,
                        inst.calling_ae,
                        inst.called_ae,
                        key,
                        path,
                        size,
                        "",  # the whole file's sha256: the forwarder's to compute
                        dataset_sha256,
                        inst.priority_rank,
                        inst.category,
                        RECEIVED,
                        now,
                        None,
                        received_at,
                        now,
                        json.dumps(inst.payload, ensure_ascii=False),
                        int(inst.indexed),
                        inst.patient_id,
                        inst.patient_name,
                        now if study_ts is None else study_ts,
                        int(not earlier),
                    ),
                )
                counter = "instances_resent" if same else "instances_stored"
                self._count_sql({"instances_received": 1, counter: 1})
                self._db.execute("COMMIT")  # row and counters: one transaction
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise SpoolError(f"cannot record outbox row: {exc}") from exc
            row_id = int(cur.lastrowid or 0)
        self.new_work.set()
        return Recorded("resent" if same else "stored", row_id)

    def held_bytes(self) -> int:
        """Bytes of the spool files the rows still hold."""
        with self._lock:
            (total,) = self._db.execute(
                f"SELECT COALESCE(SUM(size), 0) FROM outbox WHERE state IN {HELD_STATES}"
            ).fetchone()
        return int(total)

    def held_paths(self) -> dict[str, str]:
        """Spool path -> dataset sha256 of every row still holding its file."""
        with self._lock:
            return dict(
                self._db.execute(
                    f"SELECT path, dataset_sha256 FROM outbox WHERE state IN {HELD_STATES}"
                )
            )

    def mark_path_missing(self, path: str, error: str) -> None:
        """The file at ``path`` is gone: its rows become ``missing``."""
        with self._lock:
            self._db.execute(
                f"UPDATE outbox SET state = ?, last_error = ? WHERE path = ? AND state IN "
                f"{HELD_STATES}",
                (MISSING, error[:500], path),
            )

    # -- forwarding ----------------------------------------------------------------------

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[OutboxRow]:
        with self._lock:
            return [OutboxRow(*r) for r in self._db.execute(sql, params)]

    def to_index(self, limit: int) -> list[OutboxRow]:
        """Rows whose header is still to be read, urgent-by-called-AE first, then arrival."""
        return self._rows(
            f"SELECT {COLUMNS} FROM outbox INDEXED BY outbox_unindexed "
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
        rows = self.due_uploads(now, 1)
        return rows[0] if rows else None

    def due_uploads(self, now: float, limit: int) -> list[OutboxRow]:
        """The next ``limit`` rows to upload, in upload order (most urgent first)."""
        return self._rows(
            f"SELECT {COLUMNS} FROM outbox WHERE state = ? AND next_attempt_at <= ? "
            f"AND indexed = 1 {_ORDER} LIMIT ?",
            (RECEIVED, now, limit),
        )

    def to_announce(self, now: float, limit: int) -> list[OutboxRow]:
        """Due uploaded rows of the most urgent row's (site, calling AE, called AE)."""
        head = self._rows(
            f"SELECT {COLUMNS} FROM outbox WHERE state = ? AND next_attempt_at <= ? "
            f"{_ORDER} LIMIT 1",
            (UPLOADED, now),
        )
        if not head:
            return []
        h = head[0]
        return self._rows(
            f"SELECT {COLUMNS} FROM outbox WHERE state = ? AND next_attempt_at <= ? "
            f"AND site = ? AND calling_ae = ? AND called_ae = ? {_ORDER} LIMIT ?",
            (UPLOADED, now, h.site, h.calling_ae, h.called_ae, limit),
        )

    def uploaded_backlog(self) -> tuple[int, float | None]:
        """(uploaded rows waiting for announcement, the oldest one's upload time)."""
        count, oldest, _ = self.uploaded_summary()
        return count, oldest

    def uploaded_summary(self) -> tuple[int, float | None, int | None]:
        """``uploaded_backlog`` and the most urgent waiting row's priority rank."""
        with self._lock:
            count, oldest, rank = self._db.execute(
                "SELECT COUNT(*), MIN(uploaded_at), MIN(priority_rank) FROM outbox WHERE state = ?",
                (UPLOADED,),
            ).fetchone()
        return int(count), oldest, rank

    def next_due_at(self) -> float | None:
        with self._lock:
            (due,) = self._db.execute(
                f"SELECT MIN(next_attempt_at) FROM outbox WHERE state IN {PENDING_STATES}"
            ).fetchone()
        return due

    def mark_upload_started(self, row_id: int, now: float) -> None:
        """The row's upload begins (queue wait and transfer can be told apart afterwards)."""
        with self._lock:
            self._db.execute("UPDATE outbox SET upload_started_at = ? WHERE id = ?", (now, row_id))

    def set_object_key(self, row_id: int, key: str) -> None:
        """Upload the row under ``key`` (a re-send found other bytes under its first key)."""
        with self._lock:
            self._db.execute("UPDATE outbox SET object_key = ? WHERE id = ?", (key, row_id))

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

    def mark_announced(self, rows: Iterable[OutboxRow], now: float) -> None:
        """Announced, committed with a full sync (the spool deletes the files next)."""
        rows = list(rows)
        with self._lock:
            # durable before the spool files go (synchronous cannot change mid-transaction)
            self._db.execute("PRAGMA synchronous=FULL")
            try:
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
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")

    def mark_state(self, row_id: int, state: str, error: str) -> None:
        """Take a row out of the queue (``conflict``, ``missing``) with the reason."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET state = ?, last_error = ? WHERE id = ?",
                (state, error[:500], row_id),
            )

    def mark_failed(self, rows: list[OutboxRow], error: str, retry_at: float) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
                "WHERE id = ?",
                [(error[:500], retry_at, r.id) for r in rows],
            )

    def prune(self, older_than: float) -> int:
        """Forget announced rows announced before ``older_than`` (unix time)."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM outbox WHERE state = ? AND announced_at < ?", (ANNOUNCED, older_than)
            )
        return cur.rowcount

    # -- readers -------------------------------------------------------------------------

    def announced_among(self, sops: list[str]) -> dict[str, tuple[str, str]]:
        """sop -> (site, study) for those of ``sops`` whose rows are announced."""
        found: dict[str, tuple[str, str]] = {}
        for i in range(0, len(sops), 500):
            chunk = sops[i : i + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = list(
                    self._db.execute(
                        "SELECT sop_instance_uid, site, study_instance_uid FROM outbox "
                        f"WHERE state = ? AND sop_instance_uid IN ({marks})",
                        (ANNOUNCED, *chunk),
                    )
                )
            for sop, site, study in rows:
                found[sop] = (site, study)
        return found

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read-only access for status reports."""
        with self._lock:
            return list(self._db.execute(sql, params))
