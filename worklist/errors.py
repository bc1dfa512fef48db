"""worklist's one exception hierarchy; each class's docstring is its default message."""

from __future__ import annotations


class WorklistError(Exception):
    """A worklist operation failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


# Accounts
class SiteExists(WorklistError):
    """A site with this code already exists."""


class InvalidSiteCode(WorklistError):
    """A site code is letters, digits, '-' and '_' (at most 32): it also prefixes the site's
    object keys."""


class AETitleTaken(WorklistError):
    """This calling AE title already belongs to another site."""


class InvalidAETitle(WorklistError):
    """An AE title is 1 to 16 printable characters without a backslash."""


class InvalidNetwork(WorklistError):
    """A network is an IPv4 or IPv6 address or CIDR block, such as 10.1.2.0/24."""


class InvalidCertificate(WorklistError):
    """A certificate is given as the SHA-256 of its DER encoding (64 hex digits)."""


class CertificateTaken(WorklistError):
    """This certificate already belongs to another site."""


class InvalidDestination(WorklistError):
    """A DICOM destination is AE@host:port (an AE title of 1-16 characters, no backslash)"""


class UnknownSite(WorklistError):
    """No site has this code."""


class UserExists(WorklistError):
    """A user with this name already exists."""


class InvalidRole(WorklistError):
    """Unknown role."""


class SiteRequired(WorklistError):
    """Clinic users must be bound to a site."""


# Ingest: announced instances held as conflicts (worklist.conflicts)
class ConflictNotFound(WorklistError):
    """No such ingest conflict."""


class ConflictAlreadyResolved(WorklistError):
    """This ingest conflict is already resolved."""


class ConflictNotFileable(WorklistError):
    """This held instance cannot be filed as a separate study."""


# Reading work
class StudyNotFound(WorklistError):
    """No such study (or it is not visible to you)."""


class ClaimConflict(WorklistError):
    """Another reader holds an unexpired claim on this study."""


class NotClaimable(WorklistError):
    """This study is cancelled or already finally reported."""


class NotClaimHolder(WorklistError):
    """You do not hold the claim on this study."""


class NotAReader(WorklistError):
    """Only radiologists and admins read studies."""


# Reports
class ReportSigned(WorklistError):
    """The report is already signed final and cannot change."""


class NoReport(WorklistError):
    """This study has no report yet."""


__all__ = [
    "AETitleTaken",
    "CertificateTaken",
    "ClaimConflict",
    "ConflictAlreadyResolved",
    "ConflictNotFileable",
    "ConflictNotFound",
    "InvalidAETitle",
    "InvalidCertificate",
    "InvalidDestination",
    "InvalidNetwork",
    "InvalidRole",
    "NoReport",
    "NotAReader",
    "NotClaimHolder",
    "NotClaimable",
    "ReportSigned",
    "SiteExists",
    "SiteRequired",
    "StudyNotFound",
    "UnknownSite",
    "UserExists",
    "WorklistError",
]
