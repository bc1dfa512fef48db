"""MinioStore specifics against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import io
import uuid

import pytest

from storage import IntegrityError, MinioStore, ObjectNotFound, StorageError
from storage.minio_store import CONTENT_TYPE_META, SHA256_META
from tests.servers.seaweed import S3Server

pytestmark = pytest.mark.s3

KEY = "1.2/3.4/5.6.dcm"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_sha256_and_content_type_are_user_metadata(minio_store: MinioStore) -> None:
    minio_store.put(KEY, b"abc", content_type="application/octet-stream")
    raw = minio_store.client.stat_object(minio_store.bucket, KEY).metadata or {}
    assert raw[SHA256_META] == sha(b"abc")
    # SeaweedFS itself reports application/dicom here (guessed from ".dcm"): see module doc.
    assert raw[CONTENT_TYPE_META] == "application/octet-stream"
    assert minio_store.stat(KEY).content_type == "application/octet-stream"


def test_reads_detect_bytes_changed_behind_our_back(minio_store: MinioStore) -> None:
    # Someone rewrites the object outside teleread, keeping the old sha256 metadata.
    minio_store.client.put_object(
        minio_store.bucket,
        KEY,
        io.BytesIO(b"tampered"),
        8,
        metadata={SHA256_META: sha(b"original")},
    )
    with pytest.raises(IntegrityError):
        minio_store.get(KEY)
    with pytest.raises(IntegrityError), minio_store.open(KEY) as f:
        f.read()


def test_objects_without_sha256_metadata_still_readable(minio_store: MinioStore) -> None:
    minio_store.client.put_object(minio_store.bucket, KEY, io.BytesIO(b"plain"), 5)
    assert minio_store.get(KEY) == b"plain"
    assert minio_store.stat(KEY).sha256 is None


def _store(
    s3_server: S3Server, bucket: str, *, create_bucket: bool, region: str | None = "us-east-1"
) -> MinioStore:
    from minio import Minio

    client = Minio(
        s3_server.endpoint,
        s3_server.access_key,
        s3_server.secret_key,
        secure=False,
        region=region,
    )
    return MinioStore(client, bucket, create_bucket=create_bucket)


def test_bucket_is_created_on_first_write(s3_server: S3Server) -> None:
    bucket = f"lazy-{uuid.uuid4().hex[:12]}"
    store = _store(s3_server, bucket, create_bucket=True)
    assert not store.client.bucket_exists(bucket)
    assert list(store.list()) == []
    assert not store.exists(KEY)
    with pytest.raises(ObjectNotFound):
        store.get(KEY)
    store.delete(KEY)
    store.put(KEY, b"x")
    assert store.client.bucket_exists(bucket)
    # A second store (another process) racing to create it is fine.
    _store(s3_server, bucket, create_bucket=True).put(KEY, b"y")
    assert store.get(KEY) == b"y"


def test_missing_bucket_without_create_is_an_error_on_write(s3_server: S3Server) -> None:
    # Without a configured region the SDK asks for the bucket's location first, which
    # answers NoSuchBucket: on a write that is a StorageError, not ObjectNotFound.
    store = _store(s3_server, f"absent-{uuid.uuid4().hex[:12]}", create_bucket=False, region=None)
    with pytest.raises(StorageError) as info:
        store.put(KEY, b"x")
    assert not isinstance(info.value, ObjectNotFound)


def test_seaweedfs_creates_a_missing_bucket_on_put(s3_server: S3Server) -> None:
    # A SeaweedFS quirk (AWS and MinIO answer NoSuchBucket): documented in minio_store.
    bucket = f"quirk-{uuid.uuid4().hex[:12]}"
    store = _store(s3_server, bucket, create_bucket=False)
    store.put(KEY, b"x")
    assert store.client.bucket_exists(bucket)


def test_wrong_credentials_are_a_storage_error(s3_server: S3Server) -> None:
    from minio import Minio

    client = Minio(s3_server.endpoint, "nobody", "wrong", secure=False, region="us-east-1")
    store = MinioStore(client, "teleread", create_bucket=False)
    with pytest.raises(StorageError):
        store.put(KEY, b"x")
