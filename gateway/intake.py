"""Accepting DICOM connections: nothing holds an association slot before it asks for one.

One thread (``Intake``) accepts every connection on the DICOM port(s) and holds each plain
connection, without reading from it, until its whole first PDU, the A-ASSOCIATE-RQ, has
arrived: it peeks (``MSG_PEEK``) and lets the kernel wake it only once enough bytes are in
(``SO_RCVLOWAT``), so a silent connection or half a PDU costs one registered socket and no
CPU or thread. Only then is the connection handed to an association host (this process's
``gateway.transport.AssociationHost``, or the acceptor process with the fewest associations,
``gateway.workers``), which reads the request as if it had just arrived. Hence:

- An idle connection, or one sending half a PDU, holds no association slot; it is closed
  after ``association_request_timeout`` (an ARTIM-style timer, PS3.8 9.1.5).
- At most ``max_pending_per_address`` connections from one source address wait at once; one
  more closes that address's oldest waiting connection (so a new connection always gets its
  chance, and a port scanner on the modality's own address cannot lock it out), and at most
  ``max_pending_connections`` wait in all.
- Associations are counted from the hand-over until the host reports them ended
  (``association_ended``). A request beyond ``max_associations`` in all or
  ``max_associations_per_address`` from one address gets an A-ASSOCIATE-RJ (transient,
  service provider, local limit exceeded) at once.
- A first PDU that is not an A-ASSOCIATE-RQ, or declares more than ``MAX_CONTROL_PDU``, gets
  an A-ABORT and the connection is closed.

Connections to the DICOM TLS port are handed over at once: their bytes can only be read after
the handshake, which runs in the association's thread under its own timeout, then the same
request timeout (``gateway.transport.GatewayRequestHandler``). They count as associations
from the hand-over.

Refusals are logged at most once a minute per address and kind (with how many there were),
so a port scanner does not flood the log.
"""

from __future__ import annotations

import logging
import select
import selectors
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.config import GatewaySettings
from gateway.transport import A_ABORT_INVALID_PDU, A_ASSOCIATE_RQ, MAX_CONTROL_PDU

logger = logging.getLogger(__name__)

# A-ASSOCIATE-RJ PDU: type 3, length 4, result 2 (rejected-transient), source 3 (service
# provider, presentation related function), reason 2 (local-limit-exceeded)
A_ASSOCIATE_RJ_LOCAL_LIMIT = bytes([0x03, 0, 0, 0, 0, 4, 0, 2, 3, 2])
# SO_RCVLOWAT above this is not relied on (the kernel may cap it by the receive buffer): a
# bigger request is handed over once its header is in, and read under the host's timeout
LOWAT_CAP = 128 * 1024
ACCEPTS_PER_WAKE = 64
LOG_EVERY_SECONDS = 60.0

# deliver(connection, peer, tls) -> True: the host owns the connection now; False: it could
# not be placed (the deliverer closed it)
Deliver = Callable[[socket.socket, tuple[str, int], bool], bool]


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    request_timeout: float = 5.0
    max_pending_per_address: int = 32
    max_pending: int = 512
    max_associations: int = 16
    max_associations_per_address: int = 8

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> IntakeLimits:
        return cls(
            request_timeout=settings.association_request_timeout_seconds,
            max_pending_per_address=settings.max_pending_per_address,
            max_pending=settings.max_pending_connections,
            max_associations=settings.max_associations,
            max_associations_per_address=settings.max_associations_per_address,
        )


@dataclass(eq=False, slots=True)
class _Waiting:
    sock: socket.socket
    peer: tuple[str, int]
    deadline: float
    needed: int = 6  # bytes to peek before deciding


@dataclass(slots=True)
class _LogLimit:
    last: float = 0.0
    suppressed: int = 0


@dataclass
class IntakeCounts:
    """A snapshot for status reports."""

    waiting: int = 0
    associations: int = 0
    by_address: dict[str, int] = field(default_factory=dict)


def _host(peer: Any) -> str:
    return str(peer[0]) if peer else ""


class Intake:
    """Accepts on ``listeners`` (``(socket, is_tls)``, bound and listening) and delivers
    connections whose A-ASSOCIATE-RQ is in; ``start()`` / ``stop()``."""

    def __init__(
        self,
        listeners: list[tuple[socket.socket, bool]],
        deliver: Deliver,
        limits: IntakeLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._listeners = listeners
        self._deliver = deliver
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._associations = 0
        self._by_address: dict[str, int] = {}
        self._waiting: OrderedDict[_Waiting, None] = OrderedDict()  # oldest first
        self._waiting_by_address: dict[str, OrderedDict[_Waiting, None]] = {}
        self._log_limits: dict[tuple[str, str], _LogLimit] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------

    def start(self) -> None:
        for listener, tls in self._listeners:
            listener.setblocking(False)
            self._selector.register(listener, selectors.EVENT_READ, ("listener", tls))
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._thread = threading.Thread(target=self._run, name="gateway-intake", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
        for waiting in list(self._waiting):
            self._drop(waiting)
        for listener, _ in self._listeners:
            listener.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def association_ended(self, host: str) -> None:
        """A delivered connection's association (or the connection) has ended."""
        with self._lock:
            self._associations = max(0, self._associations - 1)
            left = self._by_address.get(host, 0) - 1
            if left > 0:
                self._by_address[host] = left
            else:
                self._by_address.pop(host, None)

    def counts(self) -> IntakeCounts:
        with self._lock:
            return IntakeCounts(len(self._waiting), self._associations, dict(self._by_address))

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            timeout = 0.5
            if self._waiting:
                oldest = next(iter(self._waiting))
                timeout = min(timeout, max(0.0, oldest.deadline - self._clock()))
            try:
                events = self._selector.select(timeout)
            except (OSError, ValueError):
                if self._stopping.is_set():
                    return
                time.sleep(0.05)
                continue
            for key, _ in events:
                kind, value = key.data if isinstance(key.data, tuple) else ("waiting", key.data)
                try:
                    if kind == "listener":
                        self._accept(key.fileobj, bool(value))  # type: ignore[arg-type]
                    elif kind == "wake":
                        self._drain_wake()
                    else:
                        self._check(value, woken=True)
                except Exception:  # one connection must never stop the intake
                    logger.exception("intake error", extra={"action": "intake_error"})
            self._expire()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _accept(self, listener: socket.socket, tls: bool) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                conn, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: try again next wake
                self._log("accept_failed", "", "accept failed", error=str(exc))
                return
            peer = (str(address[0]), int(address[1]))
            if tls:
                self._admit(conn, peer, tls=True)
            else:
                self._wait_for_request(conn, peer)

    def _wait_for_request(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        host = peer[0]
        mine = self._waiting_by_address.setdefault(host, OrderedDict())
        if len(mine) >= self.limits.max_pending_per_address:
            self._log("connection_evicted", host, "too many waiting connections from one address")
            self._drop(next(iter(mine)))
        if len(self._waiting) >= self.limits.max_pending:
            oldest = next(iter(self._waiting))
            self._log("connection_evicted", oldest.peer[0], "too many waiting connections")
            self._drop(oldest)
        conn.setblocking(False)
        _set_lowat(conn, 6)
        waiting = _Waiting(conn, peer, self._clock() + self.limits.request_timeout)
        self._waiting[waiting] = None
        self._waiting_by_address.setdefault(host, OrderedDict())[waiting] = None
        self._selector.register(conn, selectors.EVENT_READ, waiting)
        self._check(waiting)  # it may all be there already

    def _forget(self, waiting: _Waiting) -> None:
        self._waiting.pop(waiting, None)
        mine = self._waiting_by_address.get(waiting.peer[0])
        if mine is not None:
            mine.pop(waiting, None)
            if not mine:
                del self._waiting_by_address[waiting.peer[0]]
        try:
            self._selector.unregister(waiting.sock)
        except (KeyError, ValueError):
            pass

    def _drop(self, waiting: _Waiting) -> None:
        self._forget(waiting)
        _drain_and_close(waiting.sock)

    def _expire(self) -> None:
        now = self._clock()
        while self._waiting:
            oldest = next(iter(self._waiting))
            if oldest.deadline > now:
                return
            self._log(
                "association_request_timeout",
                oldest.peer[0],
                "no A-ASSOCIATE-RQ in time; connection closed",
                seconds=self.limits.request_timeout,
            )
            self._drop(oldest)

    def _check(self, waiting: _Waiting, *, woken: bool = False) -> None:
        """Peek at a waiting connection: still incomplete, complete (hand over), or wrong.
        ``woken``: the selector said it is readable, i.e. SO_RCVLOWAT bytes are in, or the
        peer closed its side."""
        while True:
            try:
                data = waiting.sock.recv(waiting.needed, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(waiting)
                return
            if not data:  # closed before asking for anything
                self._drop(waiting)
                return
            if len(data) < waiting.needed:
                if not woken:
                    return  # the kernel wakes us when SO_RCVLOWAT bytes are in
                if _peer_closed(waiting.sock):  # half a request, then it hung up
                    self._drop(waiting)
                    return
                break  # woken early (SO_RCVLOWAT not honoured): the host reads the rest
            woken = False
            if waiting.needed > 6:
                break
            pdu_type, _, length = struct.unpack(">BBL", data[:6])
            host = waiting.peer[0]
            if pdu_type != A_ASSOCIATE_RQ or length > MAX_CONTROL_PDU:
                what = "not an A-ASSOCIATE-RQ" if pdu_type != A_ASSOCIATE_RQ else "oversized"
                self._log(
                    "pdu_refused",
                    host,
                    f"first PDU {what}; connection aborted",
                    pdu_type=pdu_type,
                    declared_length=length,
                )
                self._forget(waiting)
                _send_and_close(waiting.sock, A_ABORT_INVALID_PDU)
                return
            waiting.needed = 6 + length
            if waiting.needed > LOWAT_CAP:
                break  # the host reads the rest under its request timeout
            _set_lowat(waiting.sock, waiting.needed)
        self._forget(waiting)
        _set_lowat(waiting.sock, 1)
        self._admit(waiting.sock, waiting.peer, tls=False)

    def _admit(self, conn: socket.socket, peer: tuple[str, int], *, tls: bool) -> None:
        host = peer[0]
        with self._lock:
            over = (
                self._associations >= self.limits.max_associations
                or self._by_address.get(host, 0) >= self.limits.max_associations_per_address
            )
            if not over:
                self._associations += 1
                self._by_address[host] = self._by_address.get(host, 0) + 1
        if over:
            self._log(
                "association_limit",
                host,
                "association refused: local limit exceeded",
                max_associations=self.limits.max_associations,
                max_per_address=self.limits.max_associations_per_address,
            )
            if tls:  # nothing can be said before the handshake
                _close(conn)
            else:
                _refuse_request(conn)
            return
        conn.setblocking(True)
        try:
            delivered = self._deliver(conn, peer, tls)
        except Exception:
            logger.exception("connection not delivered", extra={"action": "intake_error"})
            _close(conn)
            delivered = False
        if not delivered:
            self.association_ended(host)

    def _log(self, action: str, host: str, message: str, **extra: Any) -> None:
        """A warning at most once per LOG_EVERY_SECONDS per (action, address)."""
        now = self._clock()
        limit = self._log_limits.setdefault((action, host), _LogLimit(last=-LOG_EVERY_SECONDS))
        if now - limit.last < LOG_EVERY_SECONDS:
            limit.suppressed += 1
            return
        if len(self._log_limits) > 4096:
            self._log_limits = {(action, host): limit}
        logger.warning(
            message,
            extra={"action": action, "peer": host, "since_last": limit.suppressed, **extra},
        )
        limit.last, limit.suppressed = now, 0


def _peer_closed(sock: socket.socket) -> bool:
    """The peer shut its side down (or the connection broke)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLRDHUP)
    return any(
        ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _, ev in poller.poll(0)
    )


def _set_lowat(sock: socket.socket, n: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, n)
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def _drain(sock: socket.socket) -> None:
    """Read what is buffered (closing a socket with unread bytes sends a reset instead of an
    orderly close, and a reset may throw away what we sent last on the peer's side)."""
    try:
        for _ in range(32):  # what is buffered, not whatever a peer keeps sending
            if not sock.recv(65536):
                break
    except OSError:
        pass


def _drain_and_close(sock: socket.socket) -> None:
    _drain(sock)
    _close(sock)


def _send_and_close(sock: socket.socket, pdu: bytes) -> None:
    """Send a refusal PDU and close."""
    _drain(sock)
    try:
        sock.send(pdu)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    _close(sock)


def _refuse_request(sock: socket.socket) -> None:
    sock.setblocking(False)
    _send_and_close(sock, A_ASSOCIATE_RJ_LOCAL_LIMIT)


__all__ = ["A_ASSOCIATE_RJ_LOCAL_LIMIT", "Deliver", "Intake", "IntakeCounts", "IntakeLimits"]
