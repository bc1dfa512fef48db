"""Logging for the ``teleread`` command: text for people (the default) or JSON lines for a
log shipper (``TELEREAD_LOG_FORMAT=json``), and in both a filter that keeps patient data out.

JSON: one object per line on stderr::

    {"time": "2026-11-26T01:23:45.678Z", "level": "INFO", "logger": "worklist.reports",
     "pid": 4242, "message": "report signed", "action": "report_signed", ...}

with every ``extra={...}`` field the code passes, and ``exception`` (the formatted traceback,
one string) when there is one. In JSON mode Python warnings and uncaught exceptions (main
thread and other threads) are logged too, so that every stderr line parses. ``pid`` tells
the gateway's acceptor processes (``gateway.acceptor``) apart: they write to the same
stderr, with this module's formatter and filter (passed to them by class path).

``RedactPatientData`` replaces the value of any field named like a patient identifier
(``patient_name``, ``PatientID``, ``patient-birth-date``, ``other_patient_ids``, accession
numbers, phone numbers, report text) or a credential (``password``, ``token``, ``secret``,
``authorization``) with ``"[redacted]"``, in ``extra`` fields and inside dicts and lists they
hold, and in the message's arguments (``%(name)s`` mappings, dicts passed to ``%s``). A
patient name pasted into the message text itself cannot be told apart from other text: the
code's rule stays to log UIDs only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

ENV_FORMAT = "TELEREAD_LOG_FORMAT"
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"
# libraries whose INFO/DEBUG lines are noise (pynetdicom's debug output can dump datasets)
NOISY = ("alembic", "httpx", "pynetdicom")
NEVER_DEBUG = ("pynetdicom", "pydicom")  # in JSON mode, even with --verbose

# field names (lower case, "_" and "-" removed) whose values never reach a log
_PATIENT_KEYS = frozenset(
    {
        "patient",
        "patientname",
        "patientid",
        "patientids",
        "patientbirthdate",
        "patientbirthtime",
        "patientsex",
        "patientage",
        "patientaddress",
        "patientweight",
        "patientsize",
        "patienttelephonenumbers",
        "patientsmothersbirthname",
        "otherpatientids",
        "otherpatientidssequence",
        "otherpatientnames",
        "issuerofpatientid",
        "birthdate",
        "accessionnumber",
        "referringphysicianname",
        "communicatedtoname",
        "communicatedtophone",
        "phone",
        "telephone",
        "findings",
        "impression",
        "recommendation",
        "password",
        "token",
        "accesstoken",
        "secret",
        "secretkey",
        "authorization",
    }
)
# prefixes that mark a field as patient data whatever follows ("patient_...", "PatientX")
_PATIENT_PREFIXES = ("patient", "otherpatient")
_MAX_DEPTH = 6

# the attributes every LogRecord has: anything else on a record came from ``extra``
_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def is_patient_key(key: str) -> bool:
    """Whether a field called ``key`` may hold a patient identifier or a credential."""
    norm = key.lower().replace("_", "").replace("-", "").replace(" ", "")
    return norm in _PATIENT_KEYS or norm.startswith(_PATIENT_PREFIXES)


def redact(value: Any, depth: int = 0) -> Any:
    """``value`` with the values of patient-identifier keys replaced, in nested dicts and
    lists too (a copy; the input is not changed)."""
    if depth > _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and is_patient_key(k) else redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(v, depth + 1) for v in value) if value else value
    return value


class RedactPatientData(logging.Filter):
    """Redacts patient identifiers in a record's extra fields and mapping arguments. Put on a
    handler, it sees every record the handler writes (from any logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in list(record.__dict__.items()):
            if key in _RECORD_FIELDS or key.startswith("_"):
                continue
            if is_patient_key(key):
                record.__dict__[key] = REDACTED
            elif isinstance(value, Mapping | list | tuple):
                record.__dict__[key] = redact(value)
        if isinstance(record.args, Mapping | tuple):  # dicts among %-arguments, too
            record.args = redact(record.args)
        return True


def _iso_utc(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601 UTC), level, logger, pid, message, the extra
    fields, and ``exception`` / ``stack`` as strings."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and key not in out:
                out[key] = _jsonable(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def log_format(environ: Mapping[str, str] | None = None) -> str:
    """``text`` or ``json`` from ``TELEREAD_LOG_FORMAT`` (ValueError for anything else)."""
    value = (environ if environ is not None else os.environ).get(ENV_FORMAT, "").strip().lower()
    if not value:
        return "text"
    if value not in FORMATS:
        raise ValueError(f"{ENV_FORMAT} must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


def make_handler(fmt: str, stream: TextIO | None = None) -> logging.Handler:
    """A stderr (or ``stream``) handler in ``fmt`` with the patient-data filter on it."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactPatientData())
    return handler


def configure_logging(*, verbose: bool = False, fmt: str | None = None) -> str:
    """Set up the root logger for the command (a no-op if it already has handlers, as under
    pytest); returns the format used. ``fmt`` defaults to ``TELEREAD_LOG_FORMAT``."""
    chosen = fmt or log_format()
    ours = not logging.getLogger().handlers
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[make_handler(chosen)]
    )
    if not verbose:
        for noisy in NOISY:
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if chosen == "json":
        for name in NEVER_DEBUG:
            logging.getLogger(name).setLevel(logging.WARNING)
        if ours:  # the process's own set-up, not a host's (pytest) that already logs
            logging.captureWarnings(True)
            _log_uncaught()
    return chosen


def _log_uncaught() -> None:
    """Uncaught exceptions as JSON log records instead of bare tracebacks on stderr."""
    log = logging.getLogger("teleread")

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        log.critical("uncaught exception", exc_info=(kind, exc, tb), extra={"action": "crash"})

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or issubclass(args.exc_type, SystemExit):
            return
        log.critical(
            "uncaught exception in a thread",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
            extra={
                "action": "thread_crash",
                "thread_name": args.thread.name if args.thread else "",
            },
        )

    sys.excepthook = hook
    threading.excepthook = thread_hook


__all__ = [
    "ENV_FORMAT",
    "REDACTED",
    "JsonFormatter",
    "RedactPatientData",
    "configure_logging",
    "is_patient_key",
    "log_format",
    "make_handler",
    "redact",
]
