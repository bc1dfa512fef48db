"""viewer_api's one exception hierarchy, and the one table that turns any error a route
raises (ours, the worklist's, the store's, the database's) into its answer.

Every error answer is JSON ``{"detail": <message>, "code": <code>}``: ``code`` is a stable
machine name (``study_not_found``, ``claim_conflict``, ...) that a page may translate;
``detail`` is English text for a person or a log. A request that fails validation answers
422 with ``code`` ``invalid_request`` and ``detail`` the list of what is wrong where.

Each class's docstring is its default message. A new error: a class here (or in the
package that raises it) and a row in ``ERRORS``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from storage import errors as storage_errors
from storage.verified import ObjectCorrupt
from viewer_api.outputs import content, fonts, images
from worklist import call_ahead, critical, report_templates, reports, share_links
from worklist import errors as wl

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """The county API failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or " ".join((self.__doc__ or "").split()))


class InsecureSecretKey(ApiError):
    """TELEREAD_API_SECRET_KEY is missing, a well-known default or too short: set it to a
    random value of at least 32 characters (for example `python -c "import secrets;
    print(secrets.token_urlsafe(32))"`)."""


class NotAuthenticated(ApiError):
    """Not authenticated"""


class InvalidToken(ApiError):
    """The access token is invalid or expired."""


class AccountRefused(ApiError):
    """The account is unknown or disabled"""


class SessionEnded(ApiError):
    """The session has ended (logged out or expired): log in again"""


class CsrfRefused(ApiError):
    """The session's CSRF token is missing or wrong (X-CSRF-Token)"""


class RoleDenied(ApiError):
    """Not allowed for your role"""


class NotFound(ApiError):
    """No such resource"""


class UserNotFound(ApiError):
    """No such user"""


class InvalidParameter(ApiError):
    """A request parameter is not valid"""


class InvalidUID(ApiError):
    """A path parameter is not a DICOM UID"""


class InvalidText(ApiError):
    """A text field holds characters that cannot be stored"""


class NotAcceptable(ApiError):
    """None of the accepted media types can be served"""


class UnreadableObject(ApiError):
    """The stored object cannot be read as DICOM"""


class InvalidAssignee(ApiError):
    """The assignee is not an active radiologist or admin"""


class CannotDisableSelf(ApiError):
    """You cannot disable your own account"""


class SiteNotAllowed(ApiError):
    """This gateway may not send for that site"""


class ObjectKeyMismatch(ApiError):
    """An instance's object_key is not the one its UIDs give"""


class NoDestination(ApiError):
    """No DICOM destination is configured for this site"""


class Misconfigured(ApiError):
    """The server is misconfigured"""


class OhifUnavailable(ApiError):
    """OHIF could not be installed: it comes from the npm package @ohif/app, fetched with
    `npm pack` (install node and npm, e.g. `apt-get install -y nodejs npm`, then run
    `./dev` or `teleread ohif install`). The built-in viewer works without it."""


BEARER = {"WWW-Authenticate": "Bearer"}
RETRY_SOON = {"Retry-After": "1"}


@dataclass(frozen=True, slots=True)
class Problem:
    """How an error answers: its status, its code, and a fixed message where the
    exception's own text must not be shown (a database's words)."""

    status: int
    code: str
    message: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


# The one error table. Most specific class first wins: ``problem_for`` walks the MRO.
ERRORS: dict[type[Exception], Problem] = {
    # ours
    NotAuthenticated: Problem(401, "not_authenticated", headers=BEARER),
    InvalidToken: Problem(401, "invalid_token", headers=BEARER),
    AccountRefused: Problem(401, "account_refused", headers=BEARER),
    SessionEnded: Problem(401, "session_ended", headers=BEARER),
    CsrfRefused: Problem(403, "csrf_refused"),
    RoleDenied: Problem(403, "role_denied"),
    NotFound: Problem(404, "not_found"),
    UserNotFound: Problem(404, "user_not_found"),
    InvalidParameter: Problem(400, "invalid_parameter"),
    InvalidUID: Problem(422, "invalid_uid"),
    InvalidText: Problem(422, "invalid_text"),
    NotAcceptable: Problem(406, "not_acceptable"),
    UnreadableObject: Problem(422, "object_unreadable"),
    InvalidAssignee: Problem(422, "invalid_assignee"),
    CannotDisableSelf: Problem(409, "cannot_disable_self"),
    SiteNotAllowed: Problem(403, "site_not_allowed"),
    ObjectKeyMismatch: Problem(422, "object_key_mismatch"),
    NoDestination: Problem(409, "no_destination"),
    Misconfigured: Problem(503, "misconfigured"),
    # the report outputs'
    content.ReportNotSigned: Problem(409, "report_not_signed", "The report is not signed yet"),
    fonts.ReportFontMissing: Problem(503, "report_font_missing"),
    images.NotRenderable: Problem(415, "not_renderable", "This image cannot be rendered"),
    share_links.ShareLinkNotFound: Problem(404, "share_link_not_found"),
    share_links.ShareLinkRevoked: Problem(410, "share_link_revoked"),
    share_links.ShareLinkExpired: Problem(410, "share_link_expired"),
    share_links.ShareLinkWithdrawn: Problem(410, "share_link_withdrawn"),
    # the worklist's
    wl.StudyNotFound: Problem(404, "study_not_found"),
    wl.NoReport: Problem(404, "no_report"),
    report_templates.NoTemplate: Problem(404, "no_template"),
    wl.ClaimConflict: Problem(409, "claim_conflict"),
    wl.NotClaimable: Problem(409, "not_claimable"),
    wl.ReportSigned: Problem(409, "report_signed"),
    wl.SiteExists: Problem(409, "site_exists"),
    wl.UserExists: Problem(409, "user_exists"),
    wl.AETitleTaken: Problem(409, "ae_title_taken"),
    wl.ConflictNotFound: Problem(404, "conflict_not_found"),
    wl.ConflictAlreadyResolved: Problem(409, "conflict_resolved"),
    wl.ConflictNotFileable: Problem(409, "conflict_not_fileable"),
    reports.AddendumNotAllowed: Problem(409, "addendum_not_allowed"),
    critical.CriticalResultNotAllowed: Problem(409, "critical_result_not_allowed"),
    call_ahead.CallAheadNotAllowed: Problem(403, "call_ahead_not_allowed"),
    critical.NotTheCaseReader: Problem(403, "not_the_case_reader"),
    wl.NotClaimHolder: Problem(403, "not_claim_holder"),
    wl.NotAReader: Problem(403, "not_a_reader"),
    reports.NotARadiologist: Problem(403, "not_a_radiologist"),
    wl.InvalidAETitle: Problem(422, "invalid_ae_title"),
    wl.InvalidSiteCode: Problem(422, "invalid_site_code"),
    wl.UnknownSite: Problem(422, "unknown_site"),
    wl.InvalidRole: Problem(422, "invalid_role"),
    wl.SiteRequired: Problem(422, "site_required"),
    reports.CriticalResultRequired: Problem(422, "critical_result_required"),
    reports.UnresolvedChoices: Problem(422, "unresolved_choices"),
    reports.InvalidReportInput: Problem(422, "invalid_report_input"),
    critical.InvalidCriticalResult: Problem(422, "invalid_critical_result"),
    call_ahead.InvalidCallAhead: Problem(422, "invalid_call_ahead"),
    wl.WorklistError: Problem(400, "worklist_error"),
    # the store's
    storage_errors.ObjectNotFound: Problem(404, "object_not_found"),
    # the stored bytes are not those recorded at ingest: never served, never retried
    ObjectCorrupt: Problem(
        502,
        "object_corrupt",
        "The stored object failed its integrity check and was not served; "
        "the event is in the audit trail",
    ),
    storage_errors.InvalidKey: Problem(422, "invalid_object_key"),
    storage_errors.StorageError: Problem(
        503, "storage_unavailable", "A backing service is unavailable; retry later", RETRY_SOON
    ),
    # the database's. Two requests raced on the same row (a unique key), or the database is
    # unreachable or locked: transient, so 503 + Retry-After tells the gateway's forwarder
    # to try again
    sa_exc.IntegrityError: Problem(
        503,
        "conflict_retry",
        "A concurrent change conflicted with this request; retry it",
        RETRY_SOON,
    ),
    sa_exc.OperationalError: Problem(
        503, "database_unavailable", "A backing service is unavailable; retry later", RETRY_SOON
    ),
    # no pooled connection came free in time (the pool is sized to the API's threads, so
    # this is a database that stopped answering, not load)
    sa_exc.TimeoutError: Problem(
        503, "database_unavailable", "A backing service is unavailable; retry later", RETRY_SOON
    ),
    # a value the database refuses (too long, out of range, NUL): input validation should
    # have caught it; the last line of defence says it is the request's fault
    sa_exc.DataError: Problem(
        422,
        "value_not_storable",
        "A value in the request cannot be stored (too long, out of range or not text)",
    ),
    OverflowError: Problem(  # SQLite's "int too large"
        422,
        "value_not_storable",
        "A value in the request cannot be stored (too long, out of range or not text)",
    ),
}
INTERNAL = Problem(500, "internal_error", "Internal server error")
# an HTTPException raised by the framework (no route, wrong method) or by a route that
# names only a status: its code by status
CODES_BY_STATUS = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


def problem_for(exc: BaseException) -> Problem:
    for cls in type(exc).__mro__:
        found = ERRORS.get(cls)
        if found is not None:
            return found
    return INTERNAL


def status_for(exc: BaseException) -> int:
    return problem_for(exc).status


def answer(
    status_code: int, code: str, detail: Any, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON every error answers with."""
    return JSONResponse(
        {"detail": detail, "code": code}, status_code=status_code, headers=dict(headers or {})
    )


async def _handle_known(request: Request, exc: Exception) -> JSONResponse:
    problem = problem_for(exc)
    if isinstance(exc, sa_exc.DataError | OverflowError):
        logger.warning(
            "database refused a value: %s",
            type(getattr(exc, "orig", exc)).__name__,
            extra={"action": "request_value_refused", "path": request.url.path},
        )
    elif problem.status >= 500:
        logger.warning(
            "request failed: %s",
            type(exc).__name__,
            extra={"action": "request_failed", "path": request.url.path},
        )
    message = problem.message if problem.message is not None else str(exc)
    return answer(problem.status, problem.code, message, problem.headers)


async def _handle_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = CODES_BY_STATUS.get(exc.status_code, "error")
    return answer(exc.status_code, code, exc.detail, exc.headers)


# a body with a million unknown keys must not get a million errors back
MAX_VALIDATION_ERRORS = 20


async def _handle_invalid(request: Request, exc: Exception) -> JSONResponse:
    """422 with where and what, not the offending input: it may be patient data, or a value
    JSON cannot even carry (an infinite number) and the answer itself would fail. At most
    ``MAX_VALIDATION_ERRORS`` errors, each cut short; the ``X-Validation-Errors`` header
    counts them all."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {
            "loc": [str(part)[:64] for part in e.get("loc", ())][:8],
            "msg": str(e.get("msg", ""))[:200],
            "type": str(e.get("type", ""))[:64],
        }
        for e in errors[:MAX_VALIDATION_ERRORS]
    ]
    headers = {"X-Validation-Errors": str(len(errors))}
    return answer(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid_request", detail, headers)


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception(
        "unhandled error", extra={"action": "request_crashed", "path": request.url.path}
    )
    return answer(INTERNAL.status, INTERNAL.code, INTERNAL.message)


def install(app: FastAPI) -> None:
    """Answer every error as the table says."""
    for cls in ERRORS:
        app.add_exception_handler(cls, _handle_known)
    app.add_exception_handler(HTTPException, _handle_http)
    app.add_exception_handler(RequestValidationError, _handle_invalid)
    app.add_exception_handler(Exception, _handle_unexpected)


__all__ = [
    "CODES_BY_STATUS",
    "ERRORS",
    "AccountRefused",
    "ApiError",
    "CannotDisableSelf",
    "CsrfRefused",
    "InsecureSecretKey",
    "InvalidAssignee",
    "InvalidParameter",
    "InvalidText",
    "InvalidToken",
    "InvalidUID",
    "Misconfigured",
    "NoDestination",
    "NotAcceptable",
    "NotAuthenticated",
    "NotFound",
    "ObjectKeyMismatch",
    "OhifUnavailable",
    "Problem",
    "RoleDenied",
    "SessionEnded",
    "SiteNotAllowed",
    "UnreadableObject",
    "UserNotFound",
    "answer",
    "install",
    "problem_for",
    "status_for",
]
