"""The event streams' fan-out: one reader of the ``events`` table per API process, however
many streams are open.

``StreamHub`` runs one thread. It wakes when events were committed (``CommitSignal``: this
process's commits at once, other processes' through PostgreSQL ``NOTIFY`` or, on SQLite,
within a tenth of a second through its ``data_version``) or every
``poll_seconds`` regardless, reads the events after its cursor once (ids are in commit
order, so "after the cursor" skips nothing: ``worklist.events``), formats each as a
server-sent event once, and hands every open stream the ones its viewer may see. An idle
stream is an entry in a dict and a waiting coroutine: no thread, no database connection.

Every ``recheck_seconds`` the same thread loads the accounts (and web sessions) behind the
open streams in one query each and closes the streams whose account no longer honours the
token that opened them (disabled, another role or site, tokens revoked, logged out). The
stream itself ends when its token expires (``Subscription.expires_at``).

Limits: ``max_per_account`` streams per account (``TooManyStreams``: 429) and
``max_streams`` in all (``HubFull``: 503). A stream that falls more than ``MAX_PENDING``
events behind (a client that stopped reading) is closed; its EventSource reconnects with
``Last-Event-ID`` and catches up from the table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from viewer_api.schemas import EventOut
from viewer_api.security import TokenClaims, account_accepts
from worklist import events
from worklist.db import utcnow
from worklist.event_signal import CommitSignal
from worklist.models import Event, User, WebSession

logger = logging.getLogger(__name__)

POLL_SECONDS = 2.0
RECHECK_SECONDS = 2.0
PAGE = 500
MAX_PENDING = 5000


class TooManyStreams(Exception):
    """This account has as many event streams open as it may."""


class HubFull(Exception):
    """The API process has as many event streams open as it may."""


def format_event(event: EventOut) -> str:
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n"


@dataclass(frozen=True, slots=True)
class Formatted:
    """One event, formatted once for every stream."""

    id: int
    site_code: str | None
    text: str

    @classmethod
    def of(cls, event: Event) -> Formatted:
        return cls(event.id, event.site_code, format_event(EventOut(**events.as_dict(event))))


@dataclass(eq=False)
class Subscription:
    """One open stream: what it may see, until when, and what waits to be sent."""

    user_id: int
    claims: TokenClaims
    scope: events.EventScope
    loop: asyncio.AbstractEventLoop
    live_from: int  # the hub hands this stream every event above this id
    expires_at: float  # time.time() of the token's expiry
    pending: list[Formatted] = field(default_factory=list)
    closed: str | None = None  # why, once closed
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, items: list[Formatted]) -> None:
        """On the stream's loop: queue ``items`` (those its viewer may see)."""
        if self.closed:
            return
        self.pending.extend(e for e in items if self.scope.sees(e.site_code))
        if len(self.pending) > MAX_PENDING:
            self.close("fell behind")
        elif self.pending:
            self.ready.set()

    def close(self, reason: str) -> None:
        """On the stream's loop: end the stream after what it already has."""
        if self.closed is None:
            self.closed = reason
        self.ready.set()

    async def next(self, timeout: float) -> list[Formatted] | None:
        """What arrived (possibly nothing, after ``timeout``), or None once closed."""
        if not self.pending and self.closed is None:
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except TimeoutError:
                pass
        self.ready.clear()
        items, self.pending = self.pending, []
        if not items and self.closed is not None:
            return None
        return items

    def seconds_left(self) -> float:
        return self.expires_at - time.time()


class StreamHub:
    """The fan-out of one API process (see the module docstring). Started on the first
    stream (``ensure_started``, which reads the newest event id), stopped by ``stop``."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        max_per_account: int,
        max_streams: int,
        poll_seconds: float = POLL_SECONDS,
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        self._factory = factory
        self.max_per_account = max_per_account
        self.max_streams = max_streams
        self.poll_seconds = poll_seconds
        self.recheck_seconds = recheck_seconds
        self._lock = threading.Lock()  # the streams and the cursor: held for microseconds
        self._start_lock = threading.Lock()
        self._subs: set[Subscription] = set()
        self._per_user: Counter[int] = Counter()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._signal = CommitSignal(factory)
        self._on_events: list[Callable[[], None]] = []
        self.cursor = 0

    # --- life ------------------------------------------------------------------------------
    def ensure_started(self) -> None:
        """Start the hub once (blocking: reads the newest event id). Thread-safe; the
        database is read under a lock of its own, so ``open`` (on the event loop) never
        waits for it."""
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is not None or self._stopped.is_set():
                return
            with self._factory() as session:
                newest = events.last_id(session=session)
            with self._lock:
                self.cursor = newest
            self._signal.subscribe(self._wake.set)
            self._signal.start()
            self._thread = threading.Thread(target=self._run, name="event-hub", daemon=True)
            self._thread.start()

    def on_events(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (cheap; from the hub's thread) each time the hub has read new
        events, committed by any process, before it hands them to the streams: whoever
        saw an event on a stream of this process asks this process after ``callback``
        ran. Only while the hub runs (``ensure_started``)."""
        self._on_events.append(callback)

    def stop(self) -> None:
        """Close every stream and stop the thread; later streams are refused."""
        self._stopped.set()
        self._wake.set()
        self._signal.stop()
        with self._lock:
            subs = list(self._subs)
        self._close_all(subs, "server stopping")
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    # --- streams ---------------------------------------------------------------------------
    def open(self, *, user_id: int, claims: TokenClaims, scope: events.EventScope) -> Subscription:
        """A new stream of the calling event loop's (call from that loop), handed every
        event above ``Subscription.live_from``; ``TooManyStreams`` / ``HubFull``."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._per_user[user_id] >= self.max_per_account:
                raise TooManyStreams()
            if len(self._subs) >= self.max_streams or self._stopped.is_set():
                raise HubFull()
            sub = Subscription(
                user_id=user_id,
                claims=claims,
                scope=scope,
                loop=loop,
                live_from=self.cursor,
                expires_at=claims.expires_at.timestamp(),
            )
            self._subs.add(sub)
            self._per_user[user_id] += 1
        return sub

    def close(self, sub: Subscription) -> None:
        """Forget ``sub`` (its stream ended)."""
        with self._lock:
            if sub in self._subs:
                self._subs.discard(sub)
                self._per_user[sub.user_id] -= 1
                if self._per_user[sub.user_id] <= 0:
                    del self._per_user[sub.user_id]

    def open_count(self, user_id: int | None = None) -> int:
        with self._lock:
            return len(self._subs) if user_id is None else self._per_user[user_id]

    def backfill(self, sub: Subscription, after: int) -> list[Formatted]:
        """Blocking (a worker thread): the next page of events ``sub`` may see above
        ``after`` and at most ``sub.live_from``: what it missed before it was opened."""
        with self._factory() as session:
            rows = events.list_after(
                session=session, after_id=after, scope=sub.scope, limit=PAGE, up_to=sub.live_from
            )
            return [Formatted.of(e) for e in rows]

    # --- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        next_recheck = time.monotonic() + self.recheck_seconds
        while not self._stopped.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self._stopped.is_set():
                break
            try:
                self._fan_out()
                if time.monotonic() >= next_recheck:
                    next_recheck = time.monotonic() + self.recheck_seconds
                    self._recheck()
            except Exception:
                logger.exception("event hub pass failed", extra={"action": "event_hub_failed"})
                self._stopped.wait(self.poll_seconds)

    def _fan_out(self) -> None:
        while True:
            with self._factory() as session:
                rows = events.list_after(session=session, after_id=self.cursor, limit=PAGE)
                batch = [Formatted.of(e) for e in rows]
            if not batch:
                return
            for callback in self._on_events:
                callback()
            with self._lock:
                self.cursor = batch[-1].id
                subs = list(self._subs)
            by_loop: dict[asyncio.AbstractEventLoop, list[Subscription]] = {}
            for sub in subs:
                by_loop.setdefault(sub.loop, []).append(sub)
            for loop, group in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_deliver_all, group, batch)
                except RuntimeError:  # that loop has closed: its streams are gone
                    for sub in group:
                        self.close(sub)
            if len(batch) < PAGE:
                return

    def _recheck(self) -> None:
        with self._lock:
            subs = list(self._subs)
        if not subs:
            return
        ids = {sub.user_id for sub in subs}
        web_ids = {sub.claims.session_id for sub in subs if sub.claims.session_id is not None}
        now = utcnow()
        with self._factory() as session:
            users = {u.id: u for u in session.scalars(select(User).where(User.id.in_(ids)))}
            scopes = {
                uid: events.scope_for(session=session, viewer=user) for uid, user in users.items()
            }
            open_web = {
                (web_id, user_id)
                for web_id, user_id in session.execute(
                    select(WebSession.id, WebSession.user_id).where(
                        WebSession.id.in_(web_ids),
                        WebSession.ended_at.is_(None),
                        WebSession.expires_at > now,
                    )
                )
            }
        revoked = [
            sub
            for sub in subs
            if (user := users.get(sub.user_id)) is None
            or not account_accepts(user, sub.claims)
            or scopes[sub.user_id] != sub.scope
            or (
                sub.claims.session_id is not None
                and (sub.claims.session_id, sub.user_id) not in open_web
            )
        ]
        if revoked:
            logger.info(
                "event streams closed: account no longer allowed",
                extra={"action": "events_streams_revoked", "count": len(revoked)},
            )
        self._close_all(revoked, "account no longer allowed")

    def _close_all(self, subs: list[Subscription], reason: str) -> None:
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.close, reason)
            except RuntimeError:
                self.close(sub)


def _deliver_all(subs: list[Subscription], batch: list[Formatted]) -> None:
    for sub in subs:
        sub.deliver(batch)


__all__ = [
    "HubFull",
    "StreamHub",
    "Subscription",
    "TooManyStreams",
    "format_event",
]
