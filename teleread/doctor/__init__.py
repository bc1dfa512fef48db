"""`teleread doctor`: check a configuration end to end and say in plain words what is wrong.

One line per check, OK / WARN / FAIL, with how to fix it (and a Chinese line). Every check
runs with a short timeout in a daemon thread, so a dead server never hangs the doctor.
Which checks run depends on the role: ``county`` (database, migrations, object store,
secret key, public URL, TLS files), ``gateway`` (county API, clock, object store, spool, DICOM port,
TLS files) or ``all`` (the embedded all-in-one: everything).

Wiring only: the checks use each package's own settings and clients; they create and
remove one probe object and one probe file, and change nothing else.

Layout: ``results`` (types, constructors, text report), ``config`` (``DoctorConfig``),
``runner`` (time-bounded running, JSON report, entry point), ``county`` (database, secret
key, public URL, object store), ``gateway`` (county API, clock, spool, DICOM ports), ``tls``.
"""

from __future__ import annotations

from teleread.doctor.config import DoctorConfig
from teleread.doctor.county import (
    check_database,
    check_object_store,
    check_public_url,
    check_secret_key,
)
from teleread.doctor.gateway import check_county_api, check_dicom_port, check_spool
from teleread.doctor.results import (
    ROLES,
    CheckResult,
    CheckState,
    TLSFile,
    exit_code,
    format_text,
)
from teleread.doctor.runner import format_json, main, run_checks
from teleread.doctor.tls import check_tls, tls_material

__all__ = [
    "ROLES",
    "CheckResult",
    "CheckState",
    "DoctorConfig",
    "TLSFile",
    "check_county_api",
    "check_database",
    "check_dicom_port",
    "check_object_store",
    "check_public_url",
    "check_secret_key",
    "check_spool",
    "check_tls",
    "exit_code",
    "format_json",
    "format_text",
    "main",
    "run_checks",
    "tls_material",
]
