"""MinioStore over HTTPS with the county's own CA (``TELEREAD_STORAGE_CA_BUNDLE``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from storage import MinioStore, StoreUnavailable
from storage.settings import StorageSettings
from tests.servers.seaweed import S3Server, make_test_ca, run_seaweed

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    workdir = tmp_path_factory.mktemp("seaweed-tls")
    tls = make_test_ca(workdir)
    with run_seaweed(workdir, tls=tls) as server:
        yield server


def _settings(server: S3Server, ca_bundle: Path | None) -> StorageSettings:
    return StorageSettings(
        backend="s3",
        endpoint=server.endpoint,
        access_key=SecretStr(server.access_key),
        secret_key=SecretStr(server.secret_key),
        bucket="tls-bucket",
        secure=True,
        region="us-east-1",
        ca_bundle=ca_bundle,
    )


def test_custom_ca_bundle(tls_server: S3Server) -> None:
    store = MinioStore.from_settings(_settings(tls_server, tls_server.ca_bundle))
    store.put("1.2/3.4/5.dcm", b"over tls")
    assert store.get("1.2/3.4/5.dcm") == b"over tls"


def test_unknown_ca_is_refused(tls_server: S3Server) -> None:
    store = MinioStore.from_settings(_settings(tls_server, None))
    with pytest.raises(StoreUnavailable):
        store.stat("1.2/3.4/5.dcm")
