"""The fast path: the gateway's copy of pynetdicom internals, fenced behind one switch.

Everything in this package relies on pynetdicom's private internals (``dul``: the DUL
thread's reactor waiting on its socket instead of polling, plain C-STOREs read and answered
in it; ``assoc``: the association thread without its polling sleeps, the acceptor without
``deepcopy``; ``pdata``: P-DATA-TF routing, no pynetdicom at all). It is used only when
``choose`` says so:

- ``TELEREAD_GATEWAY_FAST_PATH=auto`` (the default): on exactly the pynetdicom version the
  copies were verified against (``VERIFIED_PYNETDICOM``); with any other version the gateway
  runs stock pynetdicom and says so in its log and in ``teleread gateway status``.
- ``on``: the fast path, and refuse to start on any other pynetdicom version.
- ``off``: stock pynetdicom.

Nothing else in the gateway depends on the fast path: the DICOM hardening (PDU limits,
malformed-PDU refusal, the message size cap, TLS, time and address limits) is
``gateway.transport`` and ``gateway.intake``, on both paths, and the C-STORE handler is the
same function either way (``gateway.handlers.store_received``). This module imports nothing
private and none of the copies; ``gateway.scp`` imports them only when they are chosen.

``tests/unit/test_gateway_fastpath.py`` pins the source of every pynetdicom function copied,
overridden or relied on, and checks that every private pynetdicom name the package touches
is covered by a pin. What pynetdicom would need for the copy to go: ``docs/fastpath.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import pynetdicom

logger = logging.getLogger(__name__)

VERIFIED_PYNETDICOM = "3.0.4"
FastPathSetting = Literal["auto", "on", "off"]


class FastPathUnavailable(Exception):
    """``TELEREAD_GATEWAY_FAST_PATH=on`` with a pynetdicom the fast path was not verified on."""


@dataclass(frozen=True, slots=True)
class PathChoice:
    """Which path the gateway runs, and why."""

    setting: str
    fast: bool
    pynetdicom: str
    warning: str | None = None  # set when ``auto`` fell back to stock pynetdicom

    @property
    def mode(self) -> str:
        return "fast" if self.fast else "stock"

    def as_dict(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "mode": self.mode,
            "pynetdicom": self.pynetdicom,
            "verified_pynetdicom": VERIFIED_PYNETDICOM,
            "warning": self.warning,
        }


def installed_pynetdicom() -> str:
    """The pynetdicom version this process runs (the version check's seam)."""
    return str(pynetdicom.__version__)


def choose(setting: str, version: str | None = None) -> PathChoice:
    """The path for ``setting`` (auto|on|off) with pynetdicom ``version`` (default: the
    installed one). Raises ``FastPathUnavailable`` for ``on`` with another version."""
    version = installed_pynetdicom() if version is None else version
    verified = version == VERIFIED_PYNETDICOM
    if setting == "off":
        return PathChoice(setting, False, version)
    if setting == "on" and not verified:
        raise FastPathUnavailable(
            f"TELEREAD_GATEWAY_FAST_PATH=on needs pynetdicom {VERIFIED_PYNETDICOM}, found "
            f"{version}: use auto (stock pynetdicom) or install {VERIFIED_PYNETDICOM}"
        )
    if verified:
        return PathChoice(setting, True, version)
    return PathChoice(
        setting,
        False,
        version,
        warning=(
            f"fast path off: it was verified on pynetdicom {VERIFIED_PYNETDICOM}, this is "
            f"{version}; running stock pynetdicom (slower, same behaviour)"
        ),
    )


class Receiving(Protocol):
    """One C-STORE's dataset as it arrives (``gateway.handlers.IncomingStore``); after a
    failed ``finish()``, ``error_comment`` is the reason (the response's Error Comment)."""

    error_comment: str

    def write(self, data: memoryview) -> None: ...

    def finish(self) -> int: ...

    def abandon(self) -> None: ...


@dataclass(frozen=True, slots=True)
class FastStore:
    """The C-STORE handler the fast path may stand in for: when ``handler`` is the
    ``EVT_C_STORE`` handler bound, a plain C-STORE-RQ's dataset goes, as it arrives, to
    ``begin(request, *handler_args)`` (a ``Receiving``), whose ``finish()`` gives the status,
    all in the DUL thread (``dul.FastDUL``)."""

    handler: Callable[..., Any]
    begin: Callable[..., Receiving]


__all__ = [
    "VERIFIED_PYNETDICOM",
    "FastPathUnavailable",
    "FastStore",
    "PathChoice",
    "Receiving",
    "choose",
    "installed_pynetdicom",
]
