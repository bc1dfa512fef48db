"""The gateway's exceptions: one hierarchy; the docstring is the default message."""

from __future__ import annotations

from gateway.status import CANNOT_UNDERSTAND


class GatewayError(Exception):
    """The gateway failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class SpoolFull(GatewayError):
    """The spool has no room for this instance."""


class SpoolError(GatewayError):
    """The spool could not record this instance."""


class InvalidInstance(GatewayError):
    """The received dataset is not a storable instance."""

    def __init__(self, message: str | None = None, *, status: int = CANNOT_UNDERSTAND) -> None:
        super().__init__(message)
        self.status = status


class CountyError(GatewayError):
    """The county API call failed."""


class CountyUnavailable(CountyError):
    """The county API cannot be reached or answered with a server error."""


class CountyRejected(CountyError):
    """The county API refused the request."""

    def __init__(self, message: str | None = None, *, status_code: int = 0) -> None:
        super().__init__(message)
        self.status_code = status_code
