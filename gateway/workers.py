"""Ingest in several processes: pynetdicom is GIL-bound (~250-300 instances/s per process).

The gateway process owns the listening socket. A dispatcher thread accepts each connection
and hands its file descriptor (``SCM_RIGHTS`` over a ``SOCK_SEQPACKET`` socketpair) to the
acceptor process with the fewest associations in progress: unlike ``SO_REUSEPORT``, whose
kernel hash can put two of four associations on one process, every association gets its
own process while there are enough. Each acceptor is a plain ``python -m gateway.acceptor``
process (``gateway/acceptor.py``) with its own pynetdicom AE and the same handlers as the
one-process SCP, writing to the same spool (files are content-addressed; the outbox is
SQLite WAL with a busy timeout and single-statement transactions) and the same ``mpps.db``.
Forwarding stays in the gateway process: acceptors send ``work`` when they store an
instance, so the forwarder wakes at once. Acceptors log like this process: ``_spawn`` passes
its logging set-up along (``acceptor.describe_logging``).

Messages, acceptor -> gateway: ``ready``, ``done`` (an association ended), ``work``.
Gateway -> acceptor: a JSON object ``{"peer": [host, port], "sites": {ae: site}?, "tls":
true?}`` with one descriptor; ``sites`` (the allow-list) rides along whenever it changed since
that acceptor last got it; ``tls`` marks a connection from the DICOM TLS port (the acceptor
builds the same ``ssl.SSLContext`` from the settings and shakes hands in the association's
thread, so TLS is spread over the acceptors like plain DICOM). EOF on the socketpair: the
gateway is gone; the acceptor aborts its associations and exits. An acceptor that dies is
started again.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.acceptor import DONE, READY, WORK, describe_logging
from gateway.config import GatewaySettings
from gateway.errors import GatewayError

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 60.0


def worker_count(settings: GatewaySettings) -> int:
    return settings.workers or os.cpu_count() or 1


# -- the gateway side ------------------------------------------------------------------------


@dataclass(eq=False)
class _Acceptor:
    index: int
    process: subprocess.Popen[bytes]
    ctrl: socket.socket
    ready: bool = False
    active: int = 0
    sites_sent: dict[str, str] | None = None
    started_at: float = field(default_factory=time.monotonic)


class AcceptorPool:
    """Listen on (host, port) and spread associations over ``n`` acceptor processes.

    ``sites()`` returns the current AE title -> site allow-list; ``on_work`` is called when
    an acceptor has stored an instance (wake the forwarder).
    """

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        n: int,
        sites: Callable[[], dict[str, str]],
        on_work: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.n = n
        self._sites = sites
        self._on_work = on_work
        self._lock = threading.Lock()
        self._acceptors: list[_Acceptor] = []
        self._stopping = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._tls_listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self.address: tuple[str, int] = (settings.host, settings.port)
        self.tls_address: tuple[str, int] | None = None

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def tls_port(self) -> int | None:
        """The DICOM TLS port (connections handed over marked ``tls``; the acceptor shakes
        hands), None when TLS is off."""
        return None if self.tls_address is None else self.tls_address[1]

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.settings.host, port))
        listener.listen(128)
        return listener

    # -- start / stop ------------------------------------------------------------------

    def start(self) -> None:
        listener = self._listen(self.settings.port)
        self._listener = listener
        self.address = (self.settings.host, int(listener.getsockname()[1]))
        if self.settings.tls_port is not None:
            self._tls_listener = self._listen(self.settings.tls_port)
            self.tls_address = (self.settings.host, int(self._tls_listener.getsockname()[1]))
        for i in range(self.n):
            self._acceptors.append(self._spawn(i))
        end = time.monotonic() + START_TIMEOUT_SECONDS
        for acceptor in self._acceptors:  # ready before any connection is handed out
            acceptor.ctrl.settimeout(max(0.1, end - time.monotonic()))
            try:
                first = acceptor.ctrl.recv(64)
            except TimeoutError:
                first = b""
            acceptor.ctrl.settimeout(None)
            if first != READY:
                self.stop()
                raise GatewayError(f"acceptor process {acceptor.index} did not start")
            acceptor.ready = True
            self._selector.register(acceptor.ctrl, selectors.EVENT_READ, acceptor)
        for name, target in (("dispatch", self._dispatch), ("acceptors", self._watch)):
            thread = threading.Thread(target=target, name=f"gateway-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info(
            "acceptor processes started",
            extra={"action": "acceptors_started", "count": self.n, "port": self.port},
        )

    def _spawn(self, index: int) -> _Acceptor:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config = {
            "settings": json.loads(self.settings.model_dump_json(exclude={"api_password"})),
            "address": list(self.address),
            "log_level": logging.getLogger().getEffectiveLevel(),
            "logging": describe_logging(),  # same format, redaction and levels as this process
        }
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.acceptor", str(theirs.fileno())],
            stdin=subprocess.PIPE,
            pass_fds=[theirs.fileno()],
            env=env,
        )
        theirs.close()
        assert process.stdin is not None
        process.stdin.write(json.dumps(config).encode())
        process.stdin.close()
        return _Acceptor(index=index, process=process, ctrl=ours)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        for open_listener in (self._listener, self._tls_listener):
            if open_listener is not None:
                open_listener.close()
        for thread in self._threads:
            thread.join(timeout)
        with self._lock:
            acceptors = list(self._acceptors)
        for acceptor in acceptors:
            try:
                acceptor.ctrl.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            acceptor.ctrl.close()
        end = time.monotonic() + timeout
        for acceptor in acceptors:
            try:
                acceptor.process.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                acceptor.process.kill()
                acceptor.process.wait()
        self._selector.close()

    # -- threads -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        import select

        assert self._listener is not None
        listeners = [self._listener]
        if self._tls_listener is not None:
            listeners.append(self._tls_listener)
        while not self._stopping.is_set():
            try:
                readable, _, _ = select.select(listeners, [], [], 0.5)
            except (OSError, ValueError):
                if self._stopping.is_set():
                    return
                time.sleep(0.1)
                continue
            for listener in readable:
                try:
                    conn, peer = listener.accept()
                except (OSError, ValueError):
                    if self._stopping.is_set():
                        return
                    continue
                try:
                    self._hand_over(conn, peer, tls=listener is self._tls_listener)
                finally:
                    conn.close()

    def _hand_over(self, conn: socket.socket, peer: Any, *, tls: bool = False) -> None:
        sites = self._sites()
        for _ in range(3):
            with self._lock:
                ready = [a for a in self._acceptors if a.ready]
                if not ready:
                    break
                acceptor = min(ready, key=lambda a: (a.active, a.index))
                message: dict[str, Any] = {"peer": [str(peer[0]), int(peer[1])]}
                if tls:
                    message["tls"] = True
                if acceptor.sites_sent != sites:
                    message["sites"] = sites
                acceptor.active += 1
            try:
                socket.send_fds(acceptor.ctrl, [json.dumps(message).encode()], [conn.fileno()])
            except OSError:
                with self._lock:
                    acceptor.ready = False
                    acceptor.active -= 1
                continue
            with self._lock:
                acceptor.sites_sent = sites
            return
        logger.error(
            "no acceptor process available; connection closed",
            extra={"action": "association_dropped", "peer": str(peer[0])},
        )

    def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                events = self._selector.select(0.5)
            except (OSError, ValueError):
                return
            for key, _ in events:
                acceptor: _Acceptor = key.data
                try:
                    message = acceptor.ctrl.recv(64)
                except OSError:
                    message = b""
                if message == WORK:
                    self._on_work()
                elif message == DONE:
                    with self._lock:
                        acceptor.active = max(0, acceptor.active - 1)
                elif message == READY:
                    with self._lock:
                        acceptor.ready = True
                elif not message:
                    self._replace(acceptor)

    def _replace(self, dead: _Acceptor) -> None:
        """An acceptor died: its associations are gone (their peers resend what got no
        success); start another in its place."""
        self._selector.unregister(dead.ctrl)
        dead.ctrl.close()
        if self._stopping.is_set():
            return
        try:
            code: int | None = dead.process.wait(5)
        except subprocess.TimeoutExpired:
            dead.process.kill()
            code = dead.process.wait()
        logger.error(
            "acceptor process ended; starting another",
            extra={"action": "acceptor_died", "index": dead.index, "exit_code": code},
        )
        if time.monotonic() - dead.started_at < 5.0:
            time.sleep(1.0)  # do not spin on a process that cannot start
        fresh = self._spawn(dead.index)
        with self._lock:
            self._acceptors = [fresh if a is dead else a for a in self._acceptors]
        self._selector.register(fresh.ctrl, selectors.EVENT_READ, fresh)


__all__ = ["AcceptorPool", "worker_count"]
