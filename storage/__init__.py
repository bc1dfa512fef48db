"""Object storage for DICOM instances: a local directory or an S3 bucket."""

from __future__ import annotations

from storage import errors
from storage.base import ObjectInfo, ObjectStore
from storage.errors import (
    IntegrityError,
    InvalidKey,
    ObjectNotFound,
    StorageError,
    StoreUnavailable,
)
from storage.filesystem import FilesystemStore
from storage.keys import check_key, instance_key, is_valid_uid
from storage.minio_store import MinioStore
from storage.settings import StorageSettings, get_settings


def from_settings(settings: StorageSettings | None = None) -> ObjectStore:
    """The store the settings describe (``get_settings()`` when none are given)."""
    settings = settings or get_settings()
    if settings.backend == "s3":
        return MinioStore.from_settings(settings)
    return FilesystemStore(settings.root)


__all__ = [
    "FilesystemStore",
    "IntegrityError",
    "InvalidKey",
    "MinioStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "StorageError",
    "StorageSettings",
    "StoreUnavailable",
    "check_key",
    "errors",
    "from_settings",
    "get_settings",
    "instance_key",
    "is_valid_uid",
]
