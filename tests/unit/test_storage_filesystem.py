"""FilesystemStore crash-safety and on-disk layout (no server needed)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from storage import FilesystemStore, IntegrityError, InvalidKey

KEY = "1.2/3.4/5.6.dcm"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class _Broken(io.RawIOBase):
    """Yields some bytes, then fails like a dropped association."""

    def __init__(self, good: bytes) -> None:
        self._good = io.BytesIO(good)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._good.readinto(b)
        if n:
            return n
        raise ConnectionResetError("peer went away")


def test_layout_is_key_path_plus_hidden_sidecar(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    store.put(KEY, b"data", content_type="application/dicom")
    assert (tmp_path / "1.2/3.4/5.6.dcm").read_bytes() == b"data"
    assert all_files(tmp_path) == ["1.2/3.4/.5.6.dcm.meta", "1.2/3.4/5.6.dcm"]
    meta = json.loads((tmp_path / "1.2/3.4/.5.6.dcm.meta").read_text())
    assert meta["sha256"] == sha(b"data") and meta["content_type"] == "application/dicom"


def test_failed_stream_leaves_nothing(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    with pytest.raises(ConnectionResetError):
        store.put(KEY, io.BufferedReader(_Broken(os.urandom(3 * 1024 * 1024))))
    assert not store.exists(KEY)
    assert all_files(tmp_path) == []  # no temp file left behind


def test_failed_overwrite_keeps_old_version(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    store.put(KEY, b"old")
    with pytest.raises(ConnectionResetError):
        store.put(KEY, io.BufferedReader(_Broken(b"new bytes")))
    with pytest.raises(IntegrityError):
        store.put(KEY, b"new", sha256=sha(b"other"))
    assert store.get(KEY) == b"old"
    assert store.stat(KEY).sha256 == sha(b"old")
    assert all_files(tmp_path) == ["1.2/3.4/.5.6.dcm.meta", "1.2/3.4/5.6.dcm"]


def test_reader_keeps_the_version_it_opened(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    store.put(KEY, b"version one")
    with store.open(KEY) as f:
        store.put(KEY, b"version two")
        assert f.read() == b"version one"
    assert store.get(KEY) == b"version two"


def test_stale_or_missing_sidecar_is_not_trusted(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    store.put(KEY, b"original", content_type="application/dicom")
    data_file = tmp_path / KEY
    # A crash between the sidecar rename and the data rename: other bytes, old sidecar.
    data_file.write_bytes(b"replaced!")
    st = store.stat(KEY)
    assert st.sha256 == sha(b"replaced!") and st.size == 9
    (tmp_path / "1.2/3.4/.5.6.dcm.meta").unlink()
    assert store.stat(KEY).sha256 == sha(b"replaced!")
    (tmp_path / "1.2/3.4/.5.6.dcm.meta").write_text("{not json")
    assert store.stat(KEY).sha256 == sha(b"replaced!")


def test_list_skips_temp_files_and_sidecars(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    store.put(KEY, b"x")
    (tmp_path / "1.2/3.4/.5.7.dcm.abc123.tmp").write_bytes(b"half")
    assert [o.key for o in store.list()] == [KEY]


def test_list_is_in_key_byte_order(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    keys = ["a/b/c", "a/b c/x", "a.b/x", "a/bb", "a/b0", "ab"]
    for key in keys:
        store.put(key, b"x")
    assert [o.key for o in store.list()] == sorted(keys)


def test_sweep_temp_files(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    store.put(KEY, b"x")
    stale = tmp_path / "1.2/3.4/.5.7.dcm.abc.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (1, 1))
    fresh = tmp_path / "1.2/3.4/.5.8.dcm.def.tmp"
    fresh.write_bytes(b"half")
    assert store.sweep_temp_files(older_than=timedelta(hours=1)) == 1
    assert not stale.exists() and fresh.exists() and store.exists(KEY)


def test_key_cannot_also_be_a_directory(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    store.put("a/b", b"x")
    with pytest.raises(InvalidKey):
        store.put("a/b/c", b"y")
    store.put("c/d/e", b"x")
    with pytest.raises(InvalidKey):
        store.put("c/d", b"y")
    assert sorted(o.key for o in store.list()) == ["a/b", "c/d/e"]
    assert all_files(tmp_path) == ["a/.b.meta", "a/b", "c/d/.e.meta", "c/d/e"]


def test_symlinked_root_and_relative_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = FilesystemStore(Path("rel/objects"))
    store.put(KEY, b"x")
    assert (tmp_path / "rel/objects" / KEY).is_file()
    monkeypatch.chdir("/")
    assert store.get(KEY) == b"x"  # the root was made absolute at construction
