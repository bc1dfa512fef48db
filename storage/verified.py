"""Reading an object back checked against the sha256 recorded when it was stored.

A disk that flips bits, a hand that edits a file under the objects directory, a restore
from the wrong backup: the bytes served must be the bytes the modality sent. ``digest``
hashes an object as a stream (what ``teleread verify`` does for every object);
``open_verified`` hands out an object only once its bytes match: read whole when it is
small (``IN_MEMORY_BYTES``, a CT slice is half a megabyte), hashed in a first pass and then
opened again when it is larger (twice the reading, never the memory). A mismatch, or a size
other than the recorded one, is ``ObjectCorrupt``.
"""

from __future__ import annotations

import hashlib
import io
from typing import BinaryIO

from storage.base import ObjectStore
from storage.errors import IntegrityError

CHUNK_BYTES = 1024 * 1024
IN_MEMORY_BYTES = 64 * 1024 * 1024


class ObjectCorrupt(IntegrityError):
    """The stored object does not match the sha256 recorded when it was stored."""


def digest(store: ObjectStore, key: str) -> tuple[str, int]:
    """(hex sha256, size) of the object's bytes, read as a stream. ``ObjectNotFound``,
    ``StoreUnavailable`` as the store raises them."""
    h = hashlib.sha256()
    size = 0
    with store.open(key) as stream:
        while chunk := stream.read(CHUNK_BYTES):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def open_verified(
    store: ObjectStore,
    key: str,
    *,
    sha256: str,
    size: int,
    in_memory_bytes: int = IN_MEMORY_BYTES,
) -> BinaryIO:
    """The object, once its bytes are known to hash to ``sha256`` and number ``size``;
    ``ObjectCorrupt`` otherwise."""
    if size <= in_memory_bytes:
        with store.open(key) as stream:
            data = stream.read(in_memory_bytes + 1)
        actual = hashlib.sha256(data).hexdigest()
        if len(data) != size or actual != sha256:
            raise ObjectCorrupt(f"{key}: stored {len(data)} bytes, sha256 {actual[:12]}")
        return io.BytesIO(data)
    actual, read = digest(store, key)
    if read != size or actual != sha256:
        raise ObjectCorrupt(f"{key}: stored {read} bytes, sha256 {actual[:12]}")
    return store.open(key)


__all__ = ["IN_MEMORY_BYTES", "ObjectCorrupt", "digest", "open_verified"]
