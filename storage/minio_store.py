"""An object store in an S3 bucket through the ``minio`` SDK (MinIO, SeaweedFS, AWS S3).

Integrity: the sha256 is kept as user metadata ``x-amz-meta-sha256``. Objects up to
``PART_SIZE`` go up in one PUT: the bytes are hashed and checked before sending, the PUT
carries ``x-amz-checksum-sha256`` so the server itself rejects bytes that changed on the way
(``BadDigest``), and a server that answers with its own sha256 of what it stored
(``x-amz-checksum-sha256``: AWS, MinIO, SeaweedFS) has it checked against ours; one that
answers without it is asked for the stored object's size and sha256 (a HEAD). (No
ETag-is-MD5 check: with SSE-KMS an ETag is not an MD5.) Larger objects go up in parts; the
stream is hashed as the SDK reads it and a mismatch raises before the multipart upload is
completed, so the SDK aborts it and nothing (old or new) is touched; the completed object is
then checked with a HEAD. So ``put`` returns only what the store is known to hold.
``get`` and ``open`` check the bytes they read against the recorded sha256.

Errors: missing keys -> ``ObjectNotFound``; network failures, timeouts and 5xx ->
``StoreUnavailable`` (the gateway retries those with its own backoff, so the client here
retries only a little).

SeaweedFS (4.48, the test server) quirks, checked against a live server:
- recursive listings are not in strict byte order of the keys (it walks its directory tree:
  ``a/b/c`` comes before ``a/b c/x`` and ``a/x`` before ``a.b/x``); our contract promises no
  order, sort if you need one;
- deleting the last object under a "directory" leaves the empty directory visible to
  non-recursive listings (we list recursively, so it never shows);
- a PUT into a missing bucket creates the bucket (AWS and MinIO answer ``NoSuchBucket``,
  which a write reports as ``StorageError``); with ``region`` unset the SDK's bucket-location
  lookup still answers ``NoSuchBucket`` first;
- bucket names must be at least 3 characters (an SDK check, as everywhere);
- a Content-Type of ``application/octet-stream`` counts as "none given" and is replaced by
  a guess from the key's extension (``x.dcm`` -> ``application/dicom``), so the content type
  is also kept as user metadata ``x-amz-meta-content-type`` and ``stat`` prefers that;
- the user metadata header comes back as ``X-Amz-Meta-sha256``; header lookups are
  case-insensitive, so that is harmless.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from storage._io import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    Chain,
    HashingReader,
    Readable,
    iter_chunks,
    normalize_sha256,
    read_up_to,
)
from storage.base import ObjectInfo
from storage.errors import (
    IntegrityError,
    ObjectNotFound,
    StorageError,
    StoreUnavailable,
)
from storage.keys import check_key, check_prefix

if TYPE_CHECKING:
    from storage.settings import StorageSettings

logger = logging.getLogger(__name__)

PART_SIZE = 16 * 1024 * 1024
"""Objects up to this size go up in one PUT; larger ones in parts of this size."""
SHA256_META = "x-amz-meta-sha256"
CONTENT_TYPE_META = (
    "x-amz-meta-content-type"  # full name: the SDK takes "content-type" as the real one
)

_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "ResourceNotFound"})
_BAD_DIGEST = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})
_TRANSIENT = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed"}
)


@contextmanager
def _translated(what: str, *, writing: bool = False) -> Iterator[None]:
    """Turn SDK and urllib3 exceptions into ``storage.errors``."""
    try:
        yield
    except S3Error as exc:
        if writing and exc.code == "NoSuchBucket":
            raise StorageError(f"bucket missing while writing {what}") from exc
        if exc.code in _NOT_FOUND:
            raise ObjectNotFound(f"no object {what}") from exc
        if exc.code in _BAD_DIGEST:
            raise IntegrityError(f"server rejected the bytes of {what}: {exc.code}") from exc
        if exc.code in _TRANSIENT:
            raise StoreUnavailable(f"S3 {exc.code} for {what}") from exc
        raise StorageError(f"S3 {exc.code} for {what}: {exc.message}") from exc
    except ServerError as exc:
        raise StoreUnavailable(f"S3 HTTP {exc.status_code} for {what}") from exc
    except InvalidResponseError as exc:
        # Typically a proxy's HTML error page in front of the S3 server.
        raise StoreUnavailable(f"S3 answered with a non-S3 response for {what}") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise StoreUnavailable(f"S3 unreachable for {what}: {type(exc).__name__}") from exc


class _VerifyingReader(io.RawIOBase):
    """A GET response as a file object; checks the recorded sha256 at EOF."""

    def __init__(self, response: Any, key: str) -> None:
        self._response = response
        self._key = key
        self._expected = response.headers.get(SHA256_META)
        self._digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def _read(self, n: int) -> bytes:
        with _translated(self._key):
            data: bytes = self._response.read(n, decode_content=False)
        if data:
            self._digest.update(data)
        elif self._expected and self._digest.hexdigest() != self._expected.lower():
            raise IntegrityError(f"bytes read for {self._key} do not match its sha256")
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._read(len(view))
        view[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        chunks = []
        while data := self._read(CHUNK_SIZE):
            chunks.append(data)
        return b"".join(chunks)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()


def make_client(settings: StorageSettings) -> Minio:
    """A ``Minio`` client with short connect timeouts and few retries."""
    retry = urllib3.Retry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        backoff_factor=0.2,
        status_forcelist=(500, 502, 503, 504),
    )
    ca_certs = (
        str(settings.ca_bundle)
        if settings.ca_bundle
        else os.environ.get("SSL_CERT_FILE") or certifi.where()
    )
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(
            connect=settings.connect_timeout_seconds, read=settings.read_timeout_seconds
        ),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=ca_certs,
        retries=retry,
    )
    return Minio(
        settings.endpoint,
        access_key=settings.access_key.get_secret_value(),
        secret_key=settings.secret_key.get_secret_value(),
        secure=settings.secure,
        region=settings.region,
        http_client=http,
    )


class MinioStore:
    """``storage.base.ObjectStore`` over one S3 bucket.

    With ``create_bucket`` the bucket is made on the first write if missing (not in the
    constructor: a township gateway must start even while the county is unreachable).
    """

    def __init__(self, client: Minio, bucket: str, *, create_bucket: bool = True) -> None:
        self.client = client
        self.bucket = bucket
        self._bucket_ready = not create_bucket
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> MinioStore:
        return cls(make_client(settings), settings.bucket)

    def __repr__(self) -> str:
        return f"MinioStore(bucket={self.bucket!r})"

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (idempotent, safe across processes)."""
        if self._bucket_ready:
            return
        with self._lock, _translated(f"bucket {self.bucket}"):
            if self._bucket_ready:
                return
            try:
                exists = self.client.bucket_exists(self.bucket)
            except S3Error as exc:
                if exc.code != "AccessDenied":
                    raise
                # a credential limited to its own key prefix (a township gateway's) may not
                # look at the bucket itself: the bucket is the county's to make, and a write
                # into a missing one fails clearly
                exists = True
            if not exists:
                try:
                    self.client.make_bucket(self.bucket)
                    logger.info(
                        "bucket created", extra={"action": "bucket_created", "bucket": self.bucket}
                    )
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            self._bucket_ready = True

    # -- writing -------------------------------------------------------------------------

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        size: int | None = None,
        content_type: str = "application/dicom",
        sha256: str | None = None,
    ) -> ObjectInfo:
        check_key(key)
        expected = normalize_sha256(sha256)
        if isinstance(data, bytes | bytearray | memoryview):
            return self._put_small(key, b"".join(iter_chunks(data, size)), content_type, expected)
        if size is not None and size <= PART_SIZE:
            return self._put_small(key, b"".join(iter_chunks(data, size)), content_type, expected)
        if size is not None:
            return self._put_large(key, b"", data, size, content_type, expected)
        # Unknown size: read ahead one part; a small stream still goes up in one checked PUT.
        head = read_up_to(data, PART_SIZE + 1)
        if len(head) <= PART_SIZE:
            return self._put_small(key, head, content_type, expected)
        return self._put_large(key, head, data, None, content_type, expected)

    def _put_small(
        self, key: str, body: bytes, content_type: str, expected: str | None
    ) -> ObjectInfo:
        digest = hashlib.sha256(body)
        actual = digest.hexdigest()
        if expected is not None and actual != expected:
            raise IntegrityError(f"sha256 mismatch for {key}: got {actual}")
        self.ensure_bucket()
        checksum = base64.b64encode(digest.digest()).decode()
        headers: dict[str, str | list[str] | tuple[str]] = {
            SHA256_META: actual,
            CONTENT_TYPE_META: content_type,
            "x-amz-checksum-sha256": checksum,
        }
        with _translated(key, writing=True):
            result = self.client.put_object(
                self.bucket,
                key,
                io.BytesIO(body),
                len(body),
                content_type=content_type,
                metadata=headers,
            )
        answered = result.http_headers.get("x-amz-checksum-sha256")
        if answered is None:  # the server did not say what it stored: look
            return self._stored(key, len(body), actual)
        if answered != checksum:
            raise IntegrityError(f"server stored other bytes for {key}: sha256 {answered}")
        return ObjectInfo(key, len(body), actual, content_type, result.last_modified)

    def _stored(self, key: str, size: int, sha256: str) -> ObjectInfo:
        """The object under ``key`` as the store holds it, checked against what was put."""
        info = self.stat(key)
        if info.size != size or info.sha256 != sha256:
            raise IntegrityError(
                f"stored object {key} differs: size {info.size}, sha256 {info.sha256}"
            )
        return info

    def _put_large(
        self,
        key: str,
        head: bytes,
        rest: BinaryIO,
        size: int | None,
        content_type: str,
        expected: str | None,
    ) -> ObjectInfo:
        with tempfile.SpooledTemporaryFile(max_size=PART_SIZE) as spool:
            if size is None or expected is None:
                # The sha256 must be known before the first byte goes up (it is metadata):
                # hash the stream into a local spool first.
                spool.write(head)
                digest = hashlib.sha256(head)
                for chunk in iter_chunks(rest, None if size is None else size - len(head)):
                    spool.write(chunk)
                    digest.update(chunk)
                size = spool.tell()
                spool.seek(0)
                actual = digest.hexdigest()
                if expected is not None and actual != expected:
                    raise IntegrityError(f"sha256 mismatch for {key}: got {actual}")
                expected = actual
                source: Readable = spool
            else:
                source = Chain(head, rest)
            self.ensure_bucket()
            with _translated(key, writing=True):
                self.client.put_object(
                    self.bucket,
                    key,
                    cast(BinaryIO, HashingReader(source, size, expected, key)),
                    size,
                    content_type=content_type,
                    metadata={SHA256_META: expected, CONTENT_TYPE_META: content_type},
                    part_size=PART_SIZE,
                )
        return self._stored(key, size, expected)

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is a no-op (as in S3)."""
        check_key(key)
        try:
            with _translated(key):
                self.client.remove_object(self.bucket, key)
        except ObjectNotFound:
            return  # no bucket yet

    # -- reading -------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        check_key(key)
        with _translated(key):
            response = self.client.get_object(self.bucket, key)
        return io.BufferedReader(_VerifyingReader(response, key), CHUNK_SIZE)

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def stat(self, key: str) -> ObjectInfo:
        check_key(key)
        with _translated(key):
            obj = self.client.stat_object(self.bucket, key)
        meta = obj.metadata or {}
        sha = meta.get(SHA256_META)
        content_type = meta.get(CONTENT_TYPE_META) or obj.content_type
        return ObjectInfo(
            key,
            obj.size or 0,
            sha.lower() if sha else None,
            content_type or DEFAULT_CONTENT_TYPE,
            obj.last_modified,
        )

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` (recursive). ``sha256`` None, ``content_type`` empty."""
        check_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            with _translated(f"listing {prefix!r}"):
                for obj in self.client.list_objects(
                    self.bucket, prefix=prefix or None, recursive=True
                ):
                    if obj.is_dir or obj.object_name is None:
                        continue
                    yield ObjectInfo(obj.object_name, obj.size or 0, None, "", obj.last_modified)
        except ObjectNotFound:
            return  # no bucket yet: nothing stored

    def presigned_get(self, key: str, *, expires: timedelta) -> str | None:
        """A GET URL signed for ``expires`` (at most 7 days), for the host in ``endpoint``."""
        check_key(key)
        with _translated(key):
            return self.client.presigned_get_object(self.bucket, key, expires=expires)
