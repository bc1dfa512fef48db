"""Worklist pages read once and served to every open reading room that asks within a second.

Every open worklist asks for its page every few seconds, and most ask for the same one (every
radiologist sees every study; a township's clinic staff see their site's). ``WorklistPages``
keeps a page's rows and total, keyed by who may see what (``visibility_key``), the filters
and the page, so the database is read once per page per ``ttl`` (one second by default;
``TELEREAD_API_WORKLIST_CACHE_SECONDS``, 0 turns it off), not once per poll. The rows
hold no time: the items, with their time left to the deadline, are made for each request
at its own ``now``; each view is audited as before.

A cached page is never served:

- after a commit in this process that wrote to ``studies`` (``worklist.study_writes``):
  what a user just did (a claim, a signature, a new study announced) is on their next page;
- after a signal that another process committed events (``notify``, wired to the event
  hub's ``worklist.event_signal``: PostgreSQL ``NOTIFY``, SQLite's ``data_version``), so a
  claim or a signature on another replica is seen as soon as its event is;
- ``ttl`` seconds after it was read: the bound for other processes' commits with no
  event (a routine study's arrival on another replica, a restore).

Hand-written over a plain ``TTLCache`` because of the stamp: an entry read before a commit
must not be stored as if read after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass

from cachetools import TTLCache

from worklist.models import User
from worklist.repository import WorklistRow
from worklist.study_writes import StudyWrites
from worklist.visibility import visibility_key

# rows held in all (a row is about 2 KB in memory): the pages beyond it go, oldest first
MAX_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class Page:
    """One worklist page as read: its rows, and its total (``X-Total-Count``, uncapped up
    to ``repository.COUNT_CAP + 1``)."""

    rows: list[WorklistRow]
    total: int


Stamp = tuple[int, int]


class WorklistPages:
    """Pages keyed by ``key``; an entry serves while its stamp is the current one and it is
    younger than ``ttl`` seconds. Thread-safe."""

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
        StudyWrites.watch()

    @staticmethod
    def key(viewer: User, *parts: Hashable) -> Hashable:
        """A page's key: what ``viewer`` may see, and ``parts`` (filters, limit, offset)."""
        return (visibility_key(viewer), parts)

    def stamp(self) -> Stamp:
        """Take it before reading a page; ``put`` the page with it."""
        return (StudyWrites.generation(), self._signals)

    def get(self, key: Hashable) -> Page | None:
        if self.ttl <= 0:
            return None
        with self._lock:
            item = self._items.get(key)
        if item is None or item[0] != self.stamp():
            return None
        return item[1]

    def put(self, key: Hashable, stamp: Stamp, page: Page) -> None:
        if self.ttl <= 0 or len(page.rows) > MAX_ROWS:
            return
        with self._lock:
            if stamp == self.stamp():  # not a page read before a commit seen since
                self._items[key] = (stamp, page)

    def notify(self) -> None:
        """Another process committed events: no page read before now is served again."""
        with self._lock:
            self._signals += 1
            self._items.clear()


__all__ = ["Page", "WorklistPages"]
