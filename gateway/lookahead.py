"""Recompression ahead of the upload, so the uplink never waits for the encoder.

The forwarder uploads the most urgent rows first (``upload_concurrency`` at once).
``RecompressAhead`` runs its own thread over the same order: it recompresses the next
``depth`` rows due for upload (``Outbox.due_uploads``) while the forwarder sends the current
ones, and hands each result over
with ``take``. An urgent study that lands behind a routine backlog is therefore compressed
first too, and a result for a row the forwarder has not reached yet stays ready (up to
``keep`` results; the oldest of those no longer among the next rows are dropped first, and
done again when due).

``take`` waits when the row is being compressed right now, and answers ``NOT_READY`` when the
thread is not running or has not reached the row: the forwarder then compresses it itself
(``gateway.upload.upload_body``). A row handed over is not done again while its upload runs
(it is still due then). The thread holds only results of ``recompress``, which never
fails the upload: a row it cannot do is simply not ready.

A CPU-heavy thread beside receiving: it takes the forwarder's nice value, so a burst from the
modalities still comes first.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Literal, TypeAlias

from gateway.recompress import Recompressed, recompress
from gateway.spool import Spool

logger = logging.getLogger(__name__)


class _Ahead(enum.Enum):
    NOT_READY = "not ready"


NOT_READY: Literal[_Ahead.NOT_READY] = _Ahead.NOT_READY
# what ``take`` hands over: the file to upload, None (send the original) or NOT_READY
Prepared: TypeAlias = Recompressed | Literal[_Ahead.NOT_READY] | None
# a bigger instance is compressed by the forwarder when its turn comes, so that results held
# ahead stay small beside the receiving processes
MAX_AHEAD_BYTES = 8 << 20


class RecompressAhead:
    def __init__(
        self,
        spool: Spool,
        method: str,
        *,
        depth: int = 4,
        keep: int = 16,
        clock: Callable[[], float],
    ) -> None:
        self.spool = spool
        self.method = method
        self.depth = depth
        self.keep = keep
        self.clock = clock
        self._ready: OrderedDict[int, Recompressed | None] = OrderedDict()
        self._busy: int | None = None  # the row id being compressed
        # rows handed over (or left to the forwarder): they stay due while their upload
        # runs, and must not be compressed again meanwhile
        self._taken: deque[int] = deque(maxlen=64)
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nice = 0

    def start(self, *, nice: int = 0) -> None:
        if self.method == "none" or (self._thread is not None and self._thread.is_alive()):
            return
        self._nice = nice
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gateway-recompress", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._cond:
            self._ready.clear()
            self._cond.notify_all()

    def wake(self) -> None:
        """New rows may be due (the forwarder calls this after reading new headers)."""
        self._wake.set()

    def take(self, row_id: int) -> Prepared:
        """The result for ``row_id`` (a ``Recompressed``, or None: send the original), waiting
        while it is being compressed; ``NOT_READY`` when it was not done ahead."""
        with self._cond:
            while self._busy == row_id and self._thread is not None:
                self._cond.wait(1.0)
            result: Prepared = self._ready.pop(row_id, NOT_READY)
            self._taken.append(row_id)
        self._wake.set()  # one more row may now be prepared
        return result

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        if self._nice:
            try:  # on Linux a thread's id names the thread alone
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
            except (OSError, AttributeError):
                pass
        while not self._stop.is_set():
            try:
                worked = self.step()
            except Exception:  # a bug must not stop the uploads: they compress inline then
                logger.exception("recompression ahead failed", extra={"action": "ahead_error"})
                worked = False
                self._stop.wait(1.0)
            if not worked:
                self._wake.wait(1.0)
                self._wake.clear()

    def step(self) -> bool:
        """Compress the first of the next ``depth`` due rows not done yet; False: none."""
        upcoming = self.spool.outbox.due_uploads(self.clock(), self.depth)
        with self._cond:
            row = next(
                (
                    r
                    for r in upcoming
                    if r.id not in self._ready
                    and r.id not in self._taken
                    and r.size <= MAX_AHEAD_BYTES
                ),
                None,
            )
            if row is None:
                return False
            self._busy = row.id
        result: Recompressed | None = None
        try:
            with self.spool.open(row) as stream:
                result = recompress(stream.read(), self.method)
        except FileNotFoundError:
            result = None  # gone: the forwarder finds out and marks it
        except Exception as exc:  # recompression is an optimisation: never block on it
            logger.warning(
                "recompression failed; the original will be sent",
                extra={
                    "action": "recompress_failed",
                    "sop_uid": row.sop_instance_uid,
                    "error": repr(exc)[:300],
                },
            )
        with self._cond:
            self._busy = None
            self._ready[row.id] = result
            wanted = {r.id for r in upcoming}
            for stale in [i for i in self._ready if i not in wanted]:
                if len(self._ready) <= self.keep:
                    break
                del self._ready[stale]
            self._cond.notify_all()
        return True
