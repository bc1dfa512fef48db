"""A running gateway's local doorbell: another process on this machine that changed the
county's site list (``teleread sites add``, in the same data directory as ``teleread serve``)
rings it, and the gateway re-reads its allow-list at once instead of at its next refresh, then
pushes it to its acceptor processes (``gateway.sites``, ``gateway.workers``).

A Unix datagram socket in Linux's abstract namespace, named after the spool directory (no
file, no path-length limit); the only message is ``sites``, and it only makes the gateway
ask the county API again (rate-limited there), so it needs no credential. A gateway on
another machine than the county is not rung: it finds a new site when an unknown AE calls
and at its periodic refresh.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

SITES = b"sites"


def address(spool_dir: Path | str) -> bytes:
    """The abstract socket name of the gateway whose spool is ``spool_dir``."""
    digest = hashlib.sha256(str(Path(spool_dir).absolute()).encode()).hexdigest()[:32]
    return b"\0teleread-gateway-" + digest.encode()


def notify_sites_changed(spool_dir: Path | str) -> bool:
    """Ring the gateway of ``spool_dir``; False when none is running on this machine."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(SITES, address(spool_dir))
        except OSError:
            return False
    return True


class Doorbell:
    """Listens for ``notify_sites_changed`` and calls ``on_sites`` (in its own thread)."""

    def __init__(self, spool_dir: Path | str, on_sites: Callable[[], None]) -> None:
        self._on_sites = on_sites
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(address(spool_dir))  # OSError: another gateway has this spool
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-doorbell", daemon=True)

    def start(self) -> Doorbell:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._sock.recv(64)
            except TimeoutError:
                continue
            except OSError:
                return
            if message == SITES:
                logger.info("told the sites changed", extra={"action": "sites_doorbell"})
                self._on_sites()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
