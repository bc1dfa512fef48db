"""One row's upload, the forwarder's per-instance work: check the spooled file against what was
received (``file_sha256``), look at what the store already holds under the key
(``already_stored``), choose the body (the original or a smaller lossless recompression,
``upload_body``), put it under an optional bandwidth cap and check what the store says it
now holds (``put_verified``).

Plain functions over the spool and the store; the ``Forwarder`` (``gateway.forwarder``) picks the
row and owns retries and backoff.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from gateway.lookahead import NOT_READY, Prepared
from gateway.outbox import MISSING, OutboxRow
from gateway.recompress import MAX_BYTES, Recompressed, recompress
from gateway.spool import Spool
from storage.base import ObjectStore
from storage.errors import ObjectNotFound, StorageError
from storage.recompressed import read_note, split_part10

logger = logging.getLogger(__name__)


class TokenBucket:
    """``consume(n)`` blocks until ``n`` bytes fit under ``rate`` bytes/s (burst: 1 s worth)."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self._tokens = float(rate)
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def consume(self, n: int) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


class _Throttled(io.RawIOBase):
    def __init__(self, raw: BinaryIO, bucket: TokenBucket) -> None:
        self._raw = raw
        self._bucket = bucket

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), 64 * 1024)
        chunk = self._raw.read(want)
        self._bucket.consume(len(chunk))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def dataset_sha256(part10: bytes) -> str | None:
    """sha256 of the dataset after a Part-10 file's meta header (None: not Part-10)."""
    if len(part10) < 144 or part10[128:132] != b"DICM" or part10[132:136] != b"\x02\x00\x00\x00":
        return None
    group_len = int.from_bytes(part10[140:144], "little")
    return hashlib.sha256(part10[144 + group_len :]).hexdigest()


def _hashes(stream: BinaryIO) -> tuple[str | None, str]:
    """(sha256 of the dataset after a Part-10 file's meta header or None when not Part-10,
    sha256 of the whole file), read in chunks."""
    whole, dataset = hashlib.sha256(), hashlib.sha256()
    head = stream.read(144)
    whole.update(head)
    part10 = len(head) == 144 and head[128:132] == b"DICM" and head[132:136] == b"\x02\x00\x00\x00"
    skip = 144 + int.from_bytes(head[140:144], "little") - len(head) if part10 else 0
    while chunk := stream.read(1 << 20):
        whole.update(chunk)
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        dataset.update(memoryview(chunk)[skip:])
        skip = 0
    if part10 and skip:
        return None, whole.hexdigest()  # ends inside its meta header
    return (dataset.hexdigest() if part10 else None), whole.hexdigest()


def file_sha256(spool: Spool, row: OutboxRow) -> OutboxRow | None:
    """Check the spooled file against the dataset sha256 taken at receipt and record the
    whole file's sha256 (the acceptor leaves it to us: one hash on its critical path)."""
    with spool.open(row) as stream:
        dataset, sha = _hashes(stream)
    if dataset != row.dataset_sha256:
        spool.mark_state(row, MISSING, "spool file differs from what was received")
        logger.error(
            "spool file corrupt",
            extra={"action": "spool_file_corrupt", "sop_uid": row.sop_instance_uid},
        )
        return None
    spool.outbox.set_sha256(row.id, sha)
    return dataclasses.replace(row, sha256=sha)


def already_stored(spool: Spool, store: ObjectStore, row: OutboxRow) -> bool | None:
    """True: the store already holds this instance; False: other bytes under the key
    (a conflict); None: nothing there yet."""
    try:
        info = store.stat(row.object_key)
    except ObjectNotFound:
        return None
    if info.sha256 and info.sha256 in (row.sha256, row.upload_sha256):
        return True
    # maybe the same dataset behind another file meta header (another calling AE), or
    # a recompressed copy of it whose outbox record was lost
    stored = store.get(row.object_key)
    with spool.open(row) as stream:
        ours, _ = _hashes(stream)
    if ours is None:
        return False
    if ours == dataset_sha256(stored):
        return True
    note = read_note(stored)
    if note is None or note.get("original_dataset_sha256") != ours:
        return False
    split = split_part10(stored)
    spool.outbox.set_upload(  # announce what the store holds
        row.id,
        size=len(stored),
        sha256=hashlib.sha256(stored).hexdigest(),
        transfer_syntax=str(split[0].TransferSyntaxUID) if split else "",
        method=str(note.get("method", "")),
    )
    return True


def upload_body(
    spool: Spool,
    row: OutboxRow,
    original: BinaryIO,
    method: str,
    prepared: Prepared = NOT_READY,
) -> tuple[BinaryIO, int, str, int]:
    """(stream, size, sha256, bytes saved) of what to upload for ``row``; ``method``: the
    recompression to try (``"none"``: the original); ``prepared``: its result, when
    ``gateway.lookahead`` did it ahead."""
    smaller = prepared if isinstance(prepared, Recompressed) else None
    if method != "none" and prepared is NOT_READY and row.size <= MAX_BYTES:
        data = original.read()
        original = io.BytesIO(data)
        try:
            smaller = recompress(data, method)
        except Exception as exc:  # recompression is an optimisation: never block on it
            logger.warning(
                "recompression failed; uploading the original",
                extra={
                    "action": "recompress_failed",
                    "sop_uid": row.sop_instance_uid,
                    "error": repr(exc)[:300],
                },
            )
    if smaller is None:
        if row.upload_sha256:  # recorded by an earlier attempt, not used now
            spool.outbox.set_upload(row.id, size=0, sha256="", transfer_syntax="", method="")
        return original, row.size, row.sha256, 0
    spool.outbox.set_upload(
        row.id,
        size=len(smaller.data),
        sha256=smaller.sha256,
        transfer_syntax=smaller.transfer_syntax_uid,
        method=smaller.method,
    )
    return io.BytesIO(smaller.data), len(smaller.data), smaller.sha256, smaller.saved_bytes


def put_verified(
    spool: Spool,
    store: ObjectStore,
    row: OutboxRow,
    *,
    method: str,
    bucket: TokenBucket | None,
    prepared: Prepared = NOT_READY,
) -> tuple[int, int]:
    """Upload ``row`` (recompressed with ``method`` when that is smaller, or as ``prepared``
    ahead, through ``bucket`` when capped) and check what the store then holds; (bytes
    uploaded, bytes saved). Raises ``StorageError`` when the stored object differs."""
    with spool.open(row) as raw:
        body, size, sha256, saved = upload_body(spool, row, raw, method, prepared)
        if bucket is not None:
            body = io.BufferedReader(_Throttled(body, bucket))
        # what the store holds: its backends check the bytes they stored against the sha256
        # (the S3 server's own checksum in its answer, or a HEAD; a fsync'd file's digest)
        info = store.put(row.object_key, body, size=size, sha256=sha256)
    if info.size != size or (info.sha256 or "") != sha256:
        raise StorageError(f"stored object differs: size {info.size}, sha256 {info.sha256}")
    return size, saved
