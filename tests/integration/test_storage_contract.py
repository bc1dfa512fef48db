"""One contract, two backends: a local directory and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import io
import os
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from storage import (
    FilesystemStore,
    IntegrityError,
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
)
from storage.keys import instance_key
from storage.minio_store import PART_SIZE

KEY = instance_key("TS01", "1.2.840.1", "1.2.840.1.2", "1.2.840.1.2.3")


@pytest.fixture(params=["filesystem", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "filesystem":
        return FilesystemStore(tmp_path / "objects")
    s3_store: ObjectStore = request.getfixturevalue("minio_store")
    return s3_store


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _NoSeek(io.RawIOBase):
    """A stream that can only be read (like a socket): no seek, no len."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        return self._buf.readinto(b)


def test_satisfies_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


def test_put_bytes_then_get_stat_exists(store: ObjectStore) -> None:
    data = b"DICM" * 1000
    info = store.put(KEY, data, sha256=sha(data))
    assert (info.key, info.size, info.sha256) == (KEY, len(data), sha(data))
    assert info.content_type == "application/dicom"
    assert store.get(KEY) == data
    st = store.stat(KEY)
    assert (st.key, st.size, st.sha256, st.content_type) == (
        KEY,
        len(data),
        sha(data),
        "application/dicom",
    )
    assert st.modified_at is not None and st.modified_at.tzinfo is not None
    assert store.exists(KEY)
    assert not store.exists(KEY + ".other")


def test_put_without_sha256_records_it(store: ObjectStore) -> None:
    data = os.urandom(1234)
    info = store.put("a/b.bin", data, content_type="application/octet-stream")
    assert info.sha256 == sha(data)
    st = store.stat("a/b.bin")
    assert st.sha256 == sha(data) and st.content_type == "application/octet-stream"


@pytest.mark.parametrize("with_size", [True, False])
def test_put_stream(store: ObjectStore, with_size: bool) -> None:
    data = os.urandom(300_000)
    size = len(data) if with_size else None
    store.put(KEY, io.BufferedReader(_NoSeek(data)), size=size, sha256=sha(data))
    assert store.get(KEY) == data
    assert store.stat(KEY).sha256 == sha(data)


def test_put_stream_reads_exactly_size(store: ObjectStore) -> None:
    stream = io.BytesIO(b"0123456789tail")
    info = store.put(KEY, stream, size=10)
    assert info.size == 10 and store.get(KEY) == b"0123456789"
    assert stream.read() == b"tail"


def test_short_stream_rejected(store: ObjectStore) -> None:
    with pytest.raises(IntegrityError):
        store.put(KEY, io.BytesIO(b"short"), size=100)
    assert not store.exists(KEY)


def test_open_streams(store: ObjectStore) -> None:
    data = os.urandom(100_000)
    store.put(KEY, data)
    with store.open(KEY) as f:
        first = f.read(10)
        rest = f.read()
    assert first + rest == data


def test_missing_key(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get(KEY)
    with pytest.raises(ObjectNotFound):
        store.open(KEY)
    with pytest.raises(ObjectNotFound):
        store.stat(KEY)
    assert not store.exists(KEY)


def test_a_prefix_is_not_an_object(store: ObjectStore) -> None:
    store.put("1.2/3.4/5.dcm", b"x")
    with pytest.raises(ObjectNotFound):
        store.stat("1.2/3.4")
    with pytest.raises(ObjectNotFound):
        store.get("1.2")
    assert not store.exists("1.2/3.4")


def test_list_by_prefix(store: ObjectStore) -> None:
    keys = [
        "1.2/3.4/5.dcm",
        "1.2/3.4/6.dcm",
        "1.2/3.5/7.dcm",
        "1.20/1/1.dcm",
        "9/9/9.dcm",
    ]
    for i, key in enumerate(keys):
        store.put(key, b"x" * (i + 1))
    assert sorted(o.key for o in store.list()) == keys
    assert sorted(o.key for o in store.list("1.2/")) == keys[:3]
    assert sorted(o.key for o in store.list("1.2")) == keys[:4]
    assert sorted(o.key for o in store.list("1.2/3.4/")) == keys[:2]
    assert sorted(o.key for o in store.list("1.2/3.4/6")) == ["1.2/3.4/6.dcm"]
    assert list(store.list("nothing/")) == []
    sizes = {o.key: o.size for o in store.list("1.2/3.5/")}
    assert sizes == {"1.2/3.5/7.dcm": 3}


def test_list_empty_store(store: ObjectStore) -> None:
    assert list(store.list()) == []


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put(KEY, b"abc")
    store.delete(KEY)
    assert not store.exists(KEY)
    assert list(store.list()) == []
    store.delete(KEY)  # missing: no error
    store.delete("never/was.dcm")


def test_overwrite_replaces(store: ObjectStore) -> None:
    store.put(KEY, b"first version", content_type="application/dicom")
    store.put(KEY, b"second", content_type="application/octet-stream")
    assert store.get(KEY) == b"second"
    st = store.stat(KEY)
    assert (st.size, st.sha256, st.content_type) == (6, sha(b"second"), "application/octet-stream")
    assert [o.key for o in store.list()] == [KEY]


def test_sha256_mismatch_stores_nothing(store: ObjectStore) -> None:
    with pytest.raises(IntegrityError):
        store.put(KEY, b"payload", sha256=sha(b"other"))
    assert not store.exists(KEY)
    assert list(store.list()) == []


def test_sha256_mismatch_keeps_previous_version(store: ObjectStore) -> None:
    store.put(KEY, b"good", sha256=sha(b"good"))
    with pytest.raises(IntegrityError):
        store.put(KEY, io.BytesIO(b"evil"), sha256=sha(b"good"))
    assert store.get(KEY) == b"good"
    assert store.stat(KEY).sha256 == sha(b"good")


def test_malformed_sha256_is_a_caller_bug(store: ObjectStore) -> None:
    with pytest.raises(ValueError):
        store.put(KEY, b"x", sha256="not-hex")


def test_uppercase_sha256_accepted(store: ObjectStore) -> None:
    info = store.put(KEY, b"x", sha256=sha(b"x").upper())
    assert info.sha256 == sha(b"x")


@pytest.mark.parametrize(
    "key",
    ["", "../x", "a/../../x", "/abs", "a//b", "a/./b", ".hidden", "a/.b.meta", "a\\b", "a\x00b"],
)
def test_invalid_keys_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put(key, b"x")
    with pytest.raises(InvalidKey):
        store.get(key)
    with pytest.raises(InvalidKey):
        store.stat(key)
    with pytest.raises(InvalidKey):
        store.delete(key)


@pytest.mark.parametrize("prefix", ["/", "../", "a/../", ".x"])
def test_invalid_prefix_rejected(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        list(store.list(prefix))


def test_presigned_get(store: ObjectStore) -> None:
    data = os.urandom(5000)
    store.put(KEY, data)
    url = store.presigned_get(KEY, expires=timedelta(minutes=5))
    if isinstance(store, FilesystemStore):
        assert url is None
        return
    assert url is not None and url.startswith("http://127.0.0.1:")
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == data


@pytest.mark.parametrize("with_size", [True, False])
def test_large_object_streams(store: ObjectStore, tmp_path: Path, with_size: bool) -> None:
    size = 20 * 1024 * 1024  # > PART_SIZE: a multipart upload on S3
    assert size > PART_SIZE
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with source.open("wb") as f:
        for _ in range(size // (1024 * 1024)):
            block = os.urandom(1024 * 1024)
            f.write(block)
            digest.update(block)
    with source.open("rb") as f:
        info = store.put(KEY, f, size=size if with_size else None, sha256=digest.hexdigest())
    assert info.size == size
    assert store.stat(KEY).sha256 == digest.hexdigest()
    read_back = hashlib.sha256()
    total = 0
    with store.open(KEY) as f:
        while chunk := f.read(1024 * 1024):
            read_back.update(chunk)
            total += len(chunk)
    assert (total, read_back.hexdigest()) == (size, digest.hexdigest())


def test_large_object_sha256_mismatch_stores_nothing(store: ObjectStore) -> None:
    data = os.urandom(PART_SIZE + 1024)
    store.put(KEY, b"old")
    with pytest.raises(IntegrityError):
        store.put(KEY, io.BytesIO(data), size=len(data), sha256=sha(b"wrong"))
    assert store.get(KEY) == b"old"
    assert [o.key for o in store.list()] == [KEY]
