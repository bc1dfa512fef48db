"""viewer_api's one exception hierarchy; each class's docstring is its default message."""

from __future__ import annotations


class ApiError(Exception):
    """The county API failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or " ".join((self.__doc__ or "").split()))


class InsecureSecretKey(ApiError):
    """TELEREAD_API_SECRET_KEY is missing, a well-known default or too short: set it to a
    random value of at least 32 characters (for example `python -c "import secrets;
    print(secrets.token_urlsafe(32))"`)."""


class InvalidToken(ApiError):
    """The access token is invalid or expired."""


__all__ = ["ApiError", "InsecureSecretKey", "InvalidToken"]
