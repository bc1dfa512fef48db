"""The application factory: every dependency comes in as an argument and lives on
``app.state``; nothing is global."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from storage import errors as storage_errors
from storage.base import ObjectStore
from viewer_api import access, dicomweb, metrics, web
from viewer_api.limits import BodySizeLimit, check_url_inputs, document_url_rules
from viewer_api.routes import (
    admin,
    audit,
    auth,
    critical_results,
    events,
    gateway,
    health,
    report_outputs,
    report_shares,
    report_templates,
    reports,
    session,
    stats,
    studies,
    users,
    worklist,
)
from viewer_api.security import LoginThrottle, UserCache
from viewer_api.settings import ApiSettings
from worklist import errors as wl
from worklist.db import utcnow
from worklist.settings import WorklistSettings
from worklist.settings import get_settings as get_worklist_settings

logger = logging.getLogger(__name__)

# Most specific class first wins: the handler walks the exception's MRO.
ERROR_STATUS: dict[type[Exception], int] = {
    wl.StudyNotFound: status.HTTP_404_NOT_FOUND,
    wl.NoReport: status.HTTP_404_NOT_FOUND,
    wl.ClaimConflict: status.HTTP_409_CONFLICT,
    wl.NotClaimable: status.HTTP_409_CONFLICT,
    wl.ReportSigned: status.HTTP_409_CONFLICT,
    wl.StudySiteMismatch: status.HTTP_409_CONFLICT,
    wl.SiteExists: status.HTTP_409_CONFLICT,
    wl.UserExists: status.HTTP_409_CONFLICT,
    wl.AETitleTaken: status.HTTP_409_CONFLICT,
    wl.InconsistentHierarchy: status.HTTP_409_CONFLICT,
    wl.NotClaimHolder: status.HTTP_403_FORBIDDEN,
    wl.NotAReader: status.HTTP_403_FORBIDDEN,
    wl.InvalidAETitle: status.HTTP_422_UNPROCESSABLE_CONTENT,
    wl.UnknownSite: status.HTTP_422_UNPROCESSABLE_CONTENT,
    wl.InvalidRole: status.HTTP_422_UNPROCESSABLE_CONTENT,
    wl.SiteRequired: status.HTTP_422_UNPROCESSABLE_CONTENT,
    wl.WorklistError: status.HTTP_400_BAD_REQUEST,
    storage_errors.ObjectNotFound: status.HTTP_404_NOT_FOUND,
    storage_errors.InvalidKey: status.HTTP_422_UNPROCESSABLE_CONTENT,
    storage_errors.StorageError: status.HTTP_503_SERVICE_UNAVAILABLE,
    # two requests raced on the same row (a unique key), or the database is unreachable or
    # locked: transient, so 503 + Retry-After tells the gateway's forwarder to try again
    sa_exc.IntegrityError: status.HTTP_503_SERVICE_UNAVAILABLE,
    sa_exc.OperationalError: status.HTTP_503_SERVICE_UNAVAILABLE,
    # a value the database refuses (too long, out of range, NUL): input validation should
    # have caught it; the last line of defence says it is the request's fault
    sa_exc.DataError: status.HTTP_422_UNPROCESSABLE_CONTENT,
    OverflowError: status.HTTP_422_UNPROCESSABLE_CONTENT,  # SQLite's "int too large"
}


def status_for(exc: Exception) -> int:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return status.HTTP_500_INTERNAL_SERVER_ERROR


def _message(exc: Exception, code: int) -> str:
    if isinstance(exc, wl.WorklistError | storage_errors.ObjectNotFound):
        return str(exc)
    if isinstance(exc, sa_exc.DataError | OverflowError):
        return "A value in the request cannot be stored (too long, out of range or not text)"
    if isinstance(exc, sa_exc.IntegrityError):
        return "A concurrent change conflicted with this request; retry it"
    if code == status.HTTP_503_SERVICE_UNAVAILABLE:
        return "A backing service is unavailable; retry later"
    return "Request failed"


async def _handle_known(request: Request, exc: Exception) -> JSONResponse:
    code = status_for(exc)
    if isinstance(exc, sa_exc.DataError | OverflowError):
        logger.warning(
            "database refused a value: %s",
            type(getattr(exc, "orig", exc)).__name__,
            extra={"action": "request_value_refused", "path": request.url.path},
        )
    elif code >= 500:
        logger.warning(
            "request failed: %s",
            type(exc).__name__,
            extra={"action": "request_failed", "path": request.url.path},
        )
    headers = {"Retry-After": "1"} if code == status.HTTP_503_SERVICE_UNAVAILABLE else None
    return JSONResponse({"detail": _message(exc, code)}, status_code=code, headers=headers)


async def _handle_invalid(request: Request, exc: Exception) -> JSONResponse:
    """422 with where and what, not the offending input: it may be patient data, or a value
    JSON cannot even carry (an infinite number) and the answer itself would fail."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {
            "loc": [str(part) for part in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]
    return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception(
        "unhandled error", extra={"action": "request_crashed", "path": request.url.path}
    )
    return JSONResponse(
        {"detail": "Internal server error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
    )


def create_app(
    *,
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    settings: ApiSettings,
    clock: Callable[[], datetime] = utcnow,
    worklist_settings: WorklistSettings | None = None,
) -> FastAPI:
    """The county API over ``session_factory`` (a migrated database) and ``store``.

    ``clock`` gives the current UTC time (tests pass a fixed one); ``worklist_settings``
    (claim lease, stable age, deadlines) defaults to the environment's.
    """
    app = FastAPI(
        title="teleread county API", version="1", dependencies=[Depends(check_url_inputs)]
    )
    app.state.session_factory = session_factory
    app.state.store = store
    app.state.settings = settings
    app.state.clock = clock
    app.state.user_cache = UserCache(settings.user_cache_seconds)
    app.state.login_throttle = LoginThrottle.from_settings(settings)
    app.state.worklist_settings = worklist_settings or get_worklist_settings()

    for cls in (
        wl.WorklistError,
        storage_errors.StorageError,
        sa_exc.IntegrityError,
        sa_exc.OperationalError,
        sa_exc.DataError,
        OverflowError,
    ):
        app.add_exception_handler(cls, _handle_known)
    app.add_exception_handler(RequestValidationError, _handle_invalid)
    app.add_exception_handler(Exception, _handle_unexpected)

    for module in (
        auth,
        session,
        worklist,
        admin,
        events,
        studies,
        reports,
        critical_results,
        report_templates,
        report_outputs,
        report_shares,
        audit,
        users,
        stats,
        gateway,
        health,
        dicomweb,
        web,
    ):
        app.include_router(module.router)
    access.install(app)  # x-teleread-roles on every operation of the OpenAPI schema
    app.router.routes[:0] = dicomweb.FAST_ROUTES  # a scrolled series: one request per slice
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    document_url_rules(app)
    metrics.install(app)  # outermost: times and counts every answer, 413s included
    return app


__all__ = ["ERROR_STATUS", "create_app", "status_for"]
