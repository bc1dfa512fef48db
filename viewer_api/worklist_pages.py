"""Worklist pages read once and served to every open reading room that asks within a second.

Every open worklist asks for its page when an event says the studies changed (every tab at
once) and every few seconds besides, and most ask for the same one: every radiologist sees
every study, a township's clinic staff see their site's. ``WorklistPages`` keeps a page's
rows and total, keyed by what the viewer may see (``worklist.visibility.visibility_scope``),
the filters and the page, so the database is read once per page per ``ttl`` (one second by
default; ``TELEREAD_API_WORKLIST_CACHE_SECONDS``, 0 turns it off), not once per tab. The
rows hold no time: the items, with their time left to the deadline, are made for each
request at its own ``now``; each view is audited as before.

A kept page is not served:

- after a commit of this API process that wrote to ``studies``
  (``worklist.study_writes.StudyWrites``);
- after this process's event hub has read new events, committed by any process
  (``notify``, called by ``StreamHub`` before it streams them; the hub runs from the API's
  start when pages are kept): a claim, release or signature on another replica or worker
  process is seen by whoever saw its event on a stream of this process;
- to a request that says ``Cache-Control: no-cache``: the web pages send it for 5 s after
  the user's own change (a claim, a release, a flag; ``api.js``), which another worker
  process may not have heard of yet, and in the first 2 s after a page loads (a reload is
  the user asking for what is there now);
- ``ttl`` seconds after it was stored: the bound for another process's commit with no
  event (a routine study's arrival or becoming ready, a restore).

Written here rather than as a plain ``TTLCache`` because of the stamp: a page read before
a commit must not be stored as if read after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

from cachetools import TTLCache

from worklist.models import User
from worklist.repository import WorklistRow
from worklist.study_writes import StudyWrites
from worklist.visibility import visibility_scope

# rows kept in all, each about 2 KB in memory: beyond it the oldest pages go first
MAX_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class Page:
    """One worklist page as read: its rows, and its total (``X-Total-Count``, uncapped up
    to ``repository.COUNT_CAP + 1``)."""

    rows: list[WorklistRow]
    total: int


# when a page was read: the process's study-write generation, and how many times ``notify``
# had been called
Stamp = tuple[int, int]


class WorklistPages:
    """Pages by (scope, filters, limit, offset); a page serves while its stamp is the
    current one and it is younger than ``ttl`` seconds. Thread-safe."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._items: TTLCache[Hashable, tuple[Stamp, Page]] = TTLCache(
            maxsize=MAX_ROWS,
            ttl=max(ttl, 0.001),
            timer=time.monotonic,
            getsizeof=lambda item: max(1, len(item[1].rows)),
        )
        self._lock = threading.Lock()  # a TTLCache is not thread-safe
        self._signals = 0

    def _stamp(self) -> Stamp:
        return (StudyWrites.generation(), self._signals)

    def page(
        self,
        viewer: User,
        filters: Mapping[str, str | None],
        *,
        limit: int,
        offset: int,
        fresh: bool,
        read: Callable[[], Page],
    ) -> Page:
        """The page ``viewer`` asks for: a kept one (unless ``fresh``), else ``read()``'s,
        kept for the next asker."""
        if self.ttl <= 0:
            return read()
        key = (visibility_scope(viewer), tuple(sorted(filters.items())), limit, offset)
        with self._lock:
            item = None if fresh else self._items.get(key)
            stamp = self._stamp()
        if item is not None and item[0] == stamp:
            return item[1]
        page = read()
        with self._lock:
            if self._stamp() == stamp:  # no commit heard of while it was read
                self._items[key] = (stamp, page)
        return page

    def notify(self) -> None:
        """New events were read (committed by this process or another): no page read
        before now is served again."""
        with self._lock:
            self._signals += 1
            self._items.clear()


__all__ = ["Page", "WorklistPages"]
