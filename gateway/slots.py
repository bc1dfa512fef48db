"""Pre-written slot files: the spool's fast durable write for instances up to a slot's size.

Making a new file durable costs ext4 a journal commit (the file's size and blocks, then its
directory entry): two syncs of 0.5-3.5 ms each per instance on the spool disk. A slot is a
file of ``size`` bytes created once, written with zeros and fsynced (its blocks are
allocated and written, not unwritten extents), its directory fsynced. A record overwrites a
slot in place with ``O_DSYNC``: no size change, no new block, no directory entry, so the write
returns once the data is on the disk, without a journal commit (figures: ``bench/ingest.py``'s
notes and the gateway README).

A record is a ``HEADER``-byte header (magic, version, the Part-10 length, the offset of its
dataset, sha256 of the file meta part and of the dataset, the receipt time) followed by the
Part-10 bytes. A slot holds a record when its magic, length and both sha256 match: a torn
write is not a record (it was never acknowledged). After the announcement the header's magic
is overwritten (``invalidate``) and the slot is free again; a crash between the announcing
commit and that leaves a record whose row says announced, which start-up recovery drops as a
duplicate.

Each process that receives owns one ``slots/<n>/`` directory (``flock`` on ``slots/<n>.lock``
for its lifetime), so no two processes write one slot. Its pool: slots whose header is not a
record and which it has not handed out. A thread keeps ``_LOW_WATER`` slots free by creating
more, up to ``count`` (the files stay: a gateway that ran before starts with its slots), and
re-reads the headers of held slots to learn which the forwarder (maybe in another process)
released: every ``_RESCAN_SECONDS``, or every quarter second while few slots are free (a
thousand held slots re-read four times a second would cost more than they save). Instances
too big for a slot, or arriving while no slot is free, take the ordinary file path
(``gateway.spool``): correct either way. Settings: ``TELEREAD_GATEWAY_SPOOL_SLOTS`` (per
receiving process, default 1024, 0: off; the files are made as the slots are first needed,
so the disk they take, up to 1 GiB per process, follows the largest backlog the gateway has
held) and ``TELEREAD_GATEWAY_SPOOL_SLOT_BYTES`` (default 1 MiB: a 512x512 CT fits, a DR
does not).

Measured on the dev VM's ext4 (300 x 530 KB, median / p95 per instance): new file + fsync +
rename + directory fsync 2.65 / 4.2 ms idle, 3.2 / 10.3 ms next to a ``dd conv=fsync`` loop;
a slot overwritten with ``O_DSYNC`` 0.36 / 0.9 ms idle, 0.51 / 4.0 ms loaded.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MAGIC = b"TRSLOT\x00\x01"
VERSION = 1
HEADER = 4096  # the Part-10 bytes start here (page-aligned)
_FIXED = struct.Struct("<8sIQI32s32sI")  # magic, version, length, dataset offset, 2 x sha256, json
DEFAULT_COUNT = 1024  # GatewaySettings.spool_slots
DEFAULT_SIZE = 1 << 20  # GatewaySettings.spool_slot_bytes
_MAX_DIRS = 256
_LOW_WATER = 16  # free slots the pool keeps ready, creating more up to its count
_RESCAN_SECONDS = 5.0  # held slots re-read at least this often
_ZEROS = bytes(1 << 20)


@dataclass(frozen=True, slots=True)
class Record:
    data: bytes  # the Part-10 file
    dataset_offset: int
    dataset_sha256: str
    received_ts: float


def header(data: bytes, dataset_offset: int, dataset_sha256: str, received_ts: float) -> bytes:
    extra = json.dumps({"received_ts": received_ts}).encode()
    fixed = _FIXED.pack(
        MAGIC,
        VERSION,
        len(data),
        dataset_offset,
        hashlib.sha256(memoryview(data)[:dataset_offset]).digest(),
        bytes.fromhex(dataset_sha256),
        len(extra),
    )
    if len(fixed) + len(extra) > HEADER:
        raise ValueError("slot header too long")
    return fixed + extra + bytes(HEADER - len(fixed) - len(extra))


def has_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except FileNotFoundError:
        return False


def read_record(path: Path) -> Record | None:
    """The record a slot holds, or None (free, torn, or not a slot)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER)
            if len(head) < _FIXED.size:
                return None
            magic, version, length, offset, meta_sha, data_sha, extra_len = _FIXED.unpack_from(head)
            if magic != MAGIC or version != VERSION or offset > length:
                return None
            if _FIXED.size + extra_len > HEADER:
                return None
            data = f.read(length)
    except FileNotFoundError:
        return None
    if len(data) != length:
        return None
    view = memoryview(data)
    if hashlib.sha256(view[:offset]).digest() != meta_sha:
        return None
    if hashlib.sha256(view[offset:]).digest() != data_sha:
        return None
    try:
        extra = json.loads(head[_FIXED.size : _FIXED.size + extra_len])
        received_ts = float(extra.get("received_ts", 0.0))
    except (ValueError, AttributeError):
        return None
    return Record(data, offset, data_sha.hex(), received_ts)


def read_payload(path: Path) -> bytes:
    """The Part-10 bytes of a slot's record, unchecked (the forwarder checks them against
    the row's sha256); FileNotFoundError when the slot holds no record."""
    with open(path, "rb") as f:
        head = f.read(_FIXED.size)
        if len(head) < _FIXED.size or head[: len(MAGIC)] != MAGIC:
            raise FileNotFoundError(f"slot {path} holds no record")
        length = _FIXED.unpack(head)[2]
        f.seek(HEADER)
        data = f.read(length)
    if len(data) != length:
        raise FileNotFoundError(f"slot {path} holds a short record")
    return data


def invalidate(path: Path) -> None:
    """Free a slot: its header no longer a record, durably (no journal commit either)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_DSYNC)
    except FileNotFoundError:
        return
    try:
        os.pwrite(fd, bytes(len(MAGIC)), 0)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SlotPool:
    """One process's slots (``root/<n>/<k>``); paths handed out are relative to ``base``."""

    def __init__(
        self,
        base: Path,
        *,
        count: int = DEFAULT_COUNT,
        size: int = DEFAULT_SIZE,
        start: bool = True,
    ) -> None:
        self.base = base
        self.root = base / "slots"
        self.count = count
        self.size = size
        self._scan_below = max(4 * _LOW_WATER, count // 8)  # free slots: rescan often below
        self._lock = threading.Lock()
        self._grow_lock = threading.Lock()
        self._free: list[str] = []
        self._out: set[str] = set()  # handed out, not yet known to hold a record or be free
        self._held: set[str] = set()  # holding a record
        self._known: set[int] = set()  # slot numbers usable (created, or found at start)
        self._stop = threading.Event()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd, self.dir = self._claim()
        self._load()
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="slot-pool", daemon=True)
            self._thread.start()

    def _claim(self) -> tuple[int, Path]:
        for n in range(_MAX_DIRS):
            fd = os.open(self.root / f"{n}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            directory = self.root / str(n)
            directory.mkdir(mode=0o700, exist_ok=True)
            return fd, directory
        raise OSError("no slot directory free")

    @property
    def max_payload(self) -> int:
        return self.size - HEADER

    def _rel(self, k: int) -> str:
        return f"slots/{self.dir.name}/{k:05d}"

    def free_count(self) -> int:
        with self._lock:
            return len(self._free)

    def take(self, length: int) -> str | None:
        """A free slot for ``length`` Part-10 bytes, or None (use a file)."""
        if length > self.max_payload:
            return None
        with self._lock:
            if not self._free:
                return None
            rel = self._free.pop()
            self._out.add(rel)
            return rel

    def write(self, rel: str, head: bytes, data: bytes) -> None:
        """Write a record into a slot taken with ``take``; durable when this returns."""
        fd = os.open(self.base / rel, os.O_WRONLY | os.O_DSYNC)
        try:
            written = os.pwritev(fd, [head, data], 0)
        finally:
            os.close(fd)
        if written != len(head) + len(data):
            raise OSError(f"short slot write: {written} bytes")

    def kept(self, rel: str) -> None:
        """The slot's record is now an outbox row's: held until released."""
        with self._lock:
            self._out.discard(rel)
            self._held.add(rel)

    def give_back(self, rel: str) -> None:
        """Not used after all (a duplicate, a failure): invalidate and free it."""
        try:
            invalidate(self.base / rel)
        finally:
            with self._lock:
                self._out.discard(rel)
                self._free.append(rel)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        os.close(self._lock_fd)

    # -- creating slots (off the hot path) ---------------------------------------------------

    def _load(self) -> None:
        """Slots already in the directory: free, or held by a record (start-up recovery made
        it a row's, or freed it when it was not)."""
        for entry in self.dir.iterdir():
            if entry.name.startswith(".tmp-"):
                entry.unlink(missing_ok=True)
                continue
            try:
                k = int(entry.name)
            except ValueError:
                continue
            if k >= self.count:
                continue
            rel = self._rel(k)
            if has_magic(entry):
                self._held.add(rel)
            elif entry.stat().st_size == self.size:
                self._free.append(rel)
            else:
                continue  # re-created at the configured size
            self._known.add(k)

    def grow(self, n: int) -> int:
        """Create up to ``n`` more slots (zero-written, fsynced, names fsynced); how many."""
        with self._grow_lock:
            todo = [k for k in range(self.count) if k not in self._known][:n]
            batch: list[int] = []
            for k in todo:
                if self._stop.is_set():
                    break
                path = self.base / self._rel(k)
                tmp = path.with_name(f".tmp-{path.name}")
                with os.fdopen(
                    os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb"
                ) as f:
                    left = self.size
                    while left:
                        left -= f.write(_ZEROS[: min(left, len(_ZEROS))])
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
                batch.append(k)
            if batch:
                _fsync_dir(self.dir)  # the slots' names are durable before any is used
                with self._lock:
                    self._known.update(batch)
                    self._free.extend(self._rel(k) for k in batch)
            return len(batch)

    def fill(self) -> None:
        """Create every missing slot now (a new gateway's first start, benchmarks)."""
        while self.grow(16):
            pass

    def _run(self) -> None:
        scanned = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now - scanned >= _RESCAN_SECONDS or self.free_count() < self._scan_below:
                    self.rescan()
                    scanned = now
                grew = 0
                if self.free_count() < _LOW_WATER:
                    grew = self.grow(_LOW_WATER)
                self._stop.wait(0.02 if grew else 0.25)
        except Exception as exc:  # the pool is an optimisation: files still work
            logger.error(
                "slot pool stopped", extra={"action": "slot_pool_failed", "error": repr(exc)}
            )

    def rescan(self) -> None:
        """Held slots whose header the forwarder invalidated are free again."""
        with self._lock:
            held = list(self._held)
        released = [rel for rel in held if not has_magic(self.base / rel)]
        if released:
            with self._lock:
                for rel in released:
                    self._held.discard(rel)
                    self._free.append(rel)
