"""Errors raised by object stores."""


class StorageError(Exception):
    """The object store failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ObjectNotFound(StorageError):
    """No object under that key."""


class InvalidKey(StorageError):
    """The key is not a valid object key."""


class IntegrityError(StorageError):
    """The stored bytes do not match the expected sha256."""


class StoreUnavailable(StorageError):
    """The object store cannot be reached."""
