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
as the file is, recovery rebuilds rows from it the same way, and the announcement frees
the slot instead of deleting a file. The ``path`` column says which: ``objects/...`` or
``slots/<n>/<k>``; read the bytes through ``read_bytes``/``open``, not the path.

Row states, the outbox schema and the forwarder's queue: ``gateway.outbox`` (``Outbox``,
``spool.outbox``); start-up recovery: ``gateway.spool_recovery.recover``, run by the process
that owns the spool before anything receives.

Dedup is by the sha256 of the dataset bytes (not the file: its meta header carries the calling
AE title), among rows of the same SOP Instance UID; files are named by it. The sha256 of the
whole file (``sha256``, what the object store must hold) is filled in by the forwarder before
the upload, after it checked the file's dataset against the sha256 taken at receipt.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import mmap
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gateway import slots
from gateway.errors import SpoolError, SpoolFull
from gateway.outbox import MISSING, Outbox, OutboxRow, StoreOutcome
from gateway.private_files import private_dir
from gateway.received import ReceivedInstance

logger = logging.getLogger(__name__)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The spool directory: ``objects/``, ``slots/`` and ``outbox.db`` (``outbox``).
    Thread-safe; several processes may open one (each receiving process its own slots)."""

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
        private_dir(self.root)
        private_dir(self.objects)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.outbox = Outbox(self.root / "outbox.db")
        self._lock = threading.Lock()
        self._bytes = self.outbox.held_bytes()

    def open_slots(self) -> None:
        """Start this process's slot pool (``slot_count`` > 0): after start-up recovery,
        which decides which slots hold records and clears their temp files."""
        if not self.slot_count or self._pool is not None:
            return
        try:
            self._pool = slots.SlotPool(self.root, count=self.slot_count, size=self.slot_size)
        except OSError as exc:
            logger.error(
                "slot pool not available, spooling to files",
                extra={"action": "slot_pool_failed", "error": repr(exc)},
            )

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
        self.outbox.close()

    # -- receiving -----------------------------------------------------------------------

    @property
    def held_bytes(self) -> int:
        """Bytes held by this process's count: what it stored minus what it released since
        the last ``resync_held_bytes``."""
        return self._bytes

    def resync_held_bytes(self) -> None:
        """Re-read ``held_bytes`` from the outbox: with acceptor processes, bytes are added in
        one process and freed in another, so no process's running count holds for long."""
        total = self.outbox.held_bytes()
        with self._lock:
            self._bytes = total

    def _admit(self, size: int) -> None:
        if self.max_bytes and self._bytes + size > self.max_bytes:
            raise SpoolFull(f"spool holds {self._bytes} bytes, limit {self.max_bytes}")
        free = shutil.disk_usage(self.root).free
        if free - size < self.min_free_bytes:
            raise SpoolFull(f"{free} bytes free on the spool disk, minimum {self.min_free_bytes}")

    def open_temp(self) -> tuple[Path, BinaryIO]:
        """A new temporary file in the spool (mode 0600) to stream a received instance into;
        ``store_file`` makes it durable. Start-up recovery removes any left behind."""
        path = self.objects / f".tmp-{uuid.uuid4().hex}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return path, os.fdopen(fd, "wb")

    def _write_file(self, data: bytes, dataset_sha256: str) -> str:
        tmp, out = self.open_temp()
        try:
            with out:
                out.write(data)
            return self._place(tmp, dataset_sha256)
        finally:
            tmp.unlink(missing_ok=True)

    def _place(self, tmp: Path, dataset_sha256: str) -> str:
        """fsync ``tmp``, rename it to its content address, fsync the directory."""
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        rel = f"objects/{dataset_sha256}.dcm"
        os.replace(tmp, self.root / rel)
        _fsync_dir(self.objects)
        return rel

    def _known(self, inst: ReceivedInstance, dataset_sha256: str) -> int | None:
        """The row already holding these dataset bytes under this SOP Instance UID (counted
        as a duplicate), or None."""
        for row_id, sha, _state in self.outbox.same_sop(inst.sop_instance_uid):
            if sha == dataset_sha256:
                self.outbox.count(instances_received=1, instances_duplicate=1)
                return row_id
        return None

    def _admit_counted(self, size: int) -> None:
        try:
            self._admit(size)
        except SpoolFull:
            self.outbox.count(instances_received=1, instances_refused_spool_full=1)
            raise

    def store_file(
        self,
        inst: ReceivedInstance,
        temp: Path,
        *,
        size: int,
        dataset_offset: int,
        dataset_sha256: str,
        now: float | None = None,
    ) -> tuple[StoreOutcome, int]:
        """``store`` for an instance whose Part-10 bytes were streamed to ``temp`` (from
        ``open_temp``, written and closed; ``dataset_offset``: where its dataset starts):
        renamed into place once durable, or removed. Raises as ``store``."""
        now = time.time() if now is None else now
        try:
            known = self._known(inst, dataset_sha256)
            if known is not None:
                return "duplicate", known
            self._admit_counted(size)
            try:
                rel = self._place(temp, dataset_sha256)
            except OSError as exc:
                raise SpoolError(f"cannot write spool file: {exc}") from exc
        finally:
            temp.unlink(missing_ok=True)  # gone already once placed
        return self._record(inst, rel, size, dataset_sha256, now)

    def store(
        self,
        inst: ReceivedInstance,
        data: bytes,
        *,
        dataset_offset: int,
        now: float | None = None,
        recovery: bool = False,
        slot: str | None = None,
        dataset_sha256: str | None = None,
    ) -> tuple[StoreOutcome, int]:
        """Make one received instance durable; return what happened and the row id.

        Raises ``SpoolFull`` when there is no room, ``SpoolError`` when the disk fails.
        ``slot``: (recovery) the slot that already holds these bytes. ``dataset_sha256``: the
        dataset's, when the receiver hashed it as it arrived.
        """
        now = time.time() if now is None else now
        dataset_sha = (
            dataset_sha256 or hashlib.sha256(memoryview(data)[dataset_offset:]).hexdigest()
        )
        known = self._known(inst, dataset_sha)
        if known is not None:
            return "duplicate", known
        if not recovery:
            self._admit_counted(len(data))
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
        return self._record(inst, rel, len(data), dataset_sha, now, taken=taken, slot=slot)

    def _record(
        self,
        inst: ReceivedInstance,
        rel: str,
        size: int,
        dataset_sha: str,
        now: float,
        *,
        taken: str | None = None,
        slot: str | None = None,
    ) -> tuple[StoreOutcome, int]:
        """The outbox row of durable bytes at ``rel`` (``taken``: a slot this call wrote;
        ``slot``: a slot recovery found holding them)."""
        try:
            recorded = self.outbox.record(
                inst, path=rel, size=size, dataset_sha256=dataset_sha, now=now
            )
        except BaseException:
            if taken is not None:
                self._slot_pool().give_back(taken)
            raise
        if recorded.outcome == "duplicate":
            if taken is not None:
                self._slot_pool().give_back(taken)
            elif slot is not None:
                slots.invalidate(self.root / slot)
            elif not recorded.earlier_holds_file:
                (self.root / rel).unlink(missing_ok=True)  # its file (same name) was gone
            return "duplicate", recorded.row_id
        if taken is not None:
            self._slot_pool().kept(taken)
        with self._lock:
            self._bytes += size
        return recorded.outcome, recorded.row_id

    def _slot_pool(self) -> slots.SlotPool:
        assert self._pool is not None
        return self._pool

    def _take_slot(self, length: int) -> str | None:
        return None if self._pool is None else self._pool.take(length)

    def free_slots(self) -> int:
        """Slots this process's pool can hand out now (0: no pool)."""
        return 0 if self._pool is None else self._pool.free_count()

    def fill_slots(self) -> None:
        """Create every slot of the pool now instead of as needed (first start, tests)."""
        if self._pool is not None:
            self._pool.fill()

    def mark_announced(self, rows: list[OutboxRow], now: float) -> None:
        """Announced: record it durably, then delete the spool files (the rows stay for
        dedup)."""
        self.outbox.mark_announced(rows, now)
        for r in rows:
            if r.path.startswith("slots/"):
                slots.invalidate(self.root / r.path)  # the owner's pool takes it back
            else:
                (self.root / r.path).unlink(missing_ok=True)
        with self._lock:
            self._bytes -= sum(r.size for r in rows)

    def mark_state(self, row: OutboxRow, state: str, error: str) -> None:
        """Take a row out of the queue (``conflict``, ``missing``) with the reason."""
        self.outbox.mark_state(row.id, state, error)
        if state == MISSING:
            with self._lock:
                self._bytes -= row.size

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

    @contextlib.contextmanager
    def mapped(self, row: OutboxRow) -> Iterator[bytes | memoryview]:
        """The spooled Part-10 bytes without reading them all: a file is memory-mapped
        (readers that look at its header touch only the header's pages); a slot's record is
        read. FileNotFoundError when gone."""
        if row.path.startswith("slots/"):
            yield slots.read_payload(self.root / row.path)
            return
        with open(self.root / row.path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                yield b""
                return
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                view = memoryview(m)
                try:
                    yield view
                finally:
                    view.release()

    def sha256_of(self, row: OutboxRow) -> str:
        """The spooled file's sha256, read in chunks (not whole into memory)."""
        digest = hashlib.sha256()
        with self.open(row) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()
