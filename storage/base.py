"""The object-store contract every backend implements."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one object without reading its bytes."""

    key: str
    size: int
    sha256: str | None
    content_type: str
    modified_at: datetime | None = None


@runtime_checkable
class ObjectStore(Protocol):
    """A flat key -> bytes store (a local directory, MinIO, any S3).

    Keys are ``<study uid>/<series uid>/<sop uid>.dcm`` (see ``storage.keys``).
    The sha256 passed to ``put`` is recorded with the object and returned by ``stat``;
    backends verify it against the bytes they received and raise ``IntegrityError``
    when it does not match, storing nothing. What ``put`` returns is what the store holds
    (checked by the backend, not only echoed from the request).
    """

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        size: int | None = None,
        content_type: str = "application/dicom",
        sha256: str | None = None,
    ) -> ObjectInfo: ...

    def get(self, key: str) -> bytes: ...

    def open(self, key: str) -> BinaryIO: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def presigned_get(self, key: str, *, expires: timedelta) -> str | None:
        """A URL that fetches the object without credentials, or None where the backend
        cannot make one (the filesystem store)."""
        ...
