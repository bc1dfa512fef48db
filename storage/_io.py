"""Small helpers shared by the stores: reading input in chunks, checking digests."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import BinaryIO, Protocol

from storage.errors import IntegrityError

CHUNK_SIZE = 1024 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def normalize_sha256(sha256: str | None) -> str | None:
    """Lower-case a hex sha256; a malformed one is the caller's bug (ValueError)."""
    if sha256 is None:
        return None
    value = sha256.strip().lower()
    if not _SHA256_HEX.fullmatch(value):
        raise ValueError(f"not a hex sha256: {sha256[:80]!r}")
    return value


def iter_chunks(
    data: bytes | bytearray | memoryview | BinaryIO,
    size: int | None,
    chunk_size: int = CHUNK_SIZE,
) -> Iterator[bytes]:
    """Yield the object's bytes: all of ``bytes``, or a stream read to EOF.

    With ``size`` given exactly ``size`` bytes are read; fewer (or a ``bytes`` of another
    length) raise ``IntegrityError``, the same rule the S3 SDK applies.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        buf = bytes(data)
        if size is not None and size != len(buf):
            raise IntegrityError(f"size {size} given for {len(buf)} bytes")
        yield buf
        return
    if size is not None and size < 0:
        raise ValueError("size must not be negative")
    remaining = size
    while remaining is None or remaining > 0:
        want = chunk_size if remaining is None else min(chunk_size, remaining)
        chunk = data.read(want)
        if not chunk:
            break
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk
    if remaining:
        raise IntegrityError(f"stream ended {remaining} bytes short of size {size}")


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class HashingReader:
    """What the SDK reads from for multipart uploads: hashes and checks at the end."""

    def __init__(self, src: Readable, size: int, expected: str, key: str) -> None:
        self._src, self._remaining, self._expected, self._key = src, size, expected, key
        self._digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if self._remaining <= 0:
            return b""
        want = self._remaining if n is None or n < 0 else min(n, self._remaining)
        chunk = self._src.read(want)
        if not chunk:
            raise IntegrityError(f"stream of {self._key} ended {self._remaining} bytes short")
        self._digest.update(chunk)
        self._remaining -= len(chunk)
        if self._remaining == 0 and self._digest.hexdigest() != self._expected:
            # Raised inside put_object before CompleteMultipartUpload: the SDK aborts.
            raise IntegrityError(f"sha256 mismatch for {self._key}")
        return chunk


def read_up_to(stream: BinaryIO, n: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = stream.read(min(CHUNK_SIZE, n - got))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class Chain:
    """``head`` bytes followed by the rest of a stream."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                out = bytes(self._head) + self._rest.read()
                self._head = memoryview(b"")
                return out
            out = bytes(self._head[:n])
            self._head = self._head[n:]
            return out
        return self._rest.read(n)
