"""Stopping on SIGINT / SIGTERM with no lock taken in the signal handler.

A Python signal handler runs in the main thread between two of its bytecodes, also while
that thread holds a lock: inside ``threading.Event.set`` or ``Event.wait``. A handler that
sets an Event there waits for ever for a lock its own thread holds. An API worker given
several SIGTERMs at once (its parent's, then the kernel's at the parent's death) hung so,
orphaned, holding its share of the listening socket. The handlers here only record the
signal; the main thread looks every ``POLL_SECONDS``."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import FrameType

POLL_SECONDS = 0.2


class StopSignals:
    """SIGINT and SIGTERM recorded once ``install``ed; ``wait`` returns after one of them."""

    def __init__(self) -> None:
        self.received: int | None = None

    def install(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._record)
        return self

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum  # an attribute store: no lock

    def wait(
        self, seconds: float | None = None, *, keep_going: Callable[[], bool] | None = None
    ) -> bool:
        """Block until a signal came (True), ``seconds`` passed, or ``keep_going()`` (asked
        every ``POLL_SECONDS``) said no (False)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while self.received is None:
            if keep_going is not None and not keep_going():
                return False
            left = POLL_SECONDS if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(POLL_SECONDS, left))
        return True


__all__ = ["POLL_SECONDS", "StopSignals"]
