"""A MinioStore whose server is down or hung fails fast with StoreUnavailable."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pydantic import SecretStr

from storage import MinioStore, StoreUnavailable
from storage.settings import StorageSettings

KEY = "1.2/3.4/5.6.dcm"


def _settings(port: int, **overrides: object) -> StorageSettings:
    return StorageSettings(
        backend="s3",
        endpoint=f"127.0.0.1:{port}",
        access_key=SecretStr("ak"),
        secret_key=SecretStr("sk"),
        secure=False,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the socket is


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A listener that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


def test_closed_port_fails_fast(closed_port: int) -> None:
    store = MinioStore.from_settings(_settings(closed_port, region="us-east-1"))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.put(KEY, b"x")
    with pytest.raises(StoreUnavailable):
        store.get(KEY)
    with pytest.raises(StoreUnavailable):
        store.stat(KEY)
    with pytest.raises(StoreUnavailable):
        store.exists(KEY)
    with pytest.raises(StoreUnavailable):
        list(store.list())
    with pytest.raises(StoreUnavailable):
        store.delete(KEY)
    assert time.monotonic() - started < 10


def test_presigned_get_needs_no_server_when_region_is_set(closed_port: int) -> None:
    store = MinioStore.from_settings(_settings(closed_port, region="us-east-1"))
    url = store.presigned_get(KEY, expires=timedelta(minutes=1))
    assert url is not None and url.startswith(f"http://127.0.0.1:{closed_port}/teleread/")


def test_presigned_get_region_lookup_fails_cleanly(closed_port: int) -> None:
    store = MinioStore.from_settings(_settings(closed_port))
    with pytest.raises(StoreUnavailable):
        store.presigned_get(KEY, expires=timedelta(minutes=1))


def test_hung_server_times_out(hung_port: int) -> None:
    store = MinioStore.from_settings(
        _settings(hung_port, region="us-east-1", read_timeout_seconds=0.3, retries=1)
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.stat(KEY)
    assert time.monotonic() - started < 5


def test_unavailable_then_available_bucket_creation_retried(closed_port: int) -> None:
    store = MinioStore.from_settings(_settings(closed_port, region="us-east-1"))
    with pytest.raises(StoreUnavailable):
        store.ensure_bucket()
    with pytest.raises(StoreUnavailable):
        store.ensure_bucket()  # not cached as done
