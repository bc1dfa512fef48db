"""What every doctor check shares: the result and TLS-file types, the OK / WARN / FAIL
constructors, the exit code and the text report, and two small host and path helpers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Status = Literal["OK", "WARN", "FAIL"]
Role = Literal["county", "gateway", "all"]
ROLES: tuple[Role, ...] = ("county", "gateway", "all")

DEFAULT_TIMEOUT_SECONDS = 5.0
SKEW_WARN_SECONDS = 5.0
SKEW_FAIL_SECONDS = 60.0
CERT_WARN_DAYS = 30
EMBEDDED_GATEWAY_USER = "gateway-embedded"  # teleread.bootstrap.GATEWAY_USER
PROBE_PREFIX = "teleread-doctor"


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: Status
    message: str
    hint: str = ""
    zh: str = ""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class TLSFile:
    """Certificate material one setting points at: a CA bundle, or a cert with its key."""

    setting: str
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None


@dataclass
class CheckState:
    """What one check learns that a later one uses (the county's AE titles for C-ECHO, the
    gateway's sites for its object-store probe)."""

    ae_titles: list[str] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)


def ok(name: str, message: str, zh: str = "") -> CheckResult:
    return CheckResult(name, "OK", message, "", zh)


def warn(name: str, message: str, hint: str, zh: str = "") -> CheckResult:
    return CheckResult(name, "WARN", message, hint, zh)


def fail(name: str, message: str, hint: str, zh: str = "") -> CheckResult:
    return CheckResult(name, "FAIL", message, hint, zh)


def exit_code(results: Iterable[CheckResult]) -> int:
    return 1 if any(r.status == "FAIL" for r in results) else 0


def format_text(results: Sequence[CheckResult]) -> str:
    lines = []
    for r in results:
        lines.append(f"{r.status:<4}  {r.name:<12}  {r.message}")
        if r.hint and r.status != "OK":
            lines.append(f"{'':<20}fix: {r.hint}")
        if r.zh:
            lines.append(f"{'':<20}{r.zh}")
    fails = sum(r.status == "FAIL" for r in results)
    warns = sum(r.status == "WARN" for r in results)
    lines.append(
        "all checks passed" if not fails and not warns else f"{fails} failed, {warns} warnings"
    )
    return "\n".join(lines)


# -- helpers shared by the checks ---------------------------------------------------------


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
