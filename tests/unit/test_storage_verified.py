"""storage.verified: an object is handed out only when its bytes match the recorded sha256,
whether read whole (small) or hashed first and opened again (large)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from storage import FilesystemStore
from storage.verified import ObjectCorrupt, digest, open_verified

KEY = "1.2/3.4/5.6.dcm"


@pytest.mark.parametrize("in_memory_bytes", [1 << 20, 10])  # read whole; two passes
def test_open_verified(tmp_path: Path, in_memory_bytes: int) -> None:
    store = FilesystemStore(tmp_path)
    blob = b"DICM" + bytes(range(256)) * 40
    recorded = hashlib.sha256(blob).hexdigest()
    store.put(KEY, blob, sha256=recorded)
    assert digest(store, KEY) == (recorded, len(blob))
    with open_verified(
        store, KEY, sha256=recorded, size=len(blob), in_memory_bytes=in_memory_bytes
    ) as f:
        assert f.read() == blob
    path = tmp_path / KEY
    path.write_bytes(blob[:-1] + b"!")  # one byte changed
    with pytest.raises(ObjectCorrupt):
        open_verified(store, KEY, sha256=recorded, size=len(blob), in_memory_bytes=in_memory_bytes)
    path.write_bytes(blob + b"extra")  # grown
    with pytest.raises(ObjectCorrupt):
        open_verified(store, KEY, sha256=recorded, size=len(blob), in_memory_bytes=in_memory_bytes)
