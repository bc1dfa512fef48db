"""Receiving in several processes: pynetdicom is GIL-bound (~250-300 instances/s per process).

How many: ``worker_count`` (``TELEREAD_GATEWAY_WORKERS``; 0, the default: one acceptor
process per CPU this process may run on when there is more than one, else the gateway
process receives itself). The gateway process keeps the listening sockets and the intake
(``gateway.intake``); ``AcceptorPool.deliver`` hands each connection whose A-ASSOCIATE-RQ
has arrived (its file descriptor, ``SCM_RIGHTS`` over a ``SOCK_SEQPACKET`` socketpair) to the
acceptor process with the fewest associations: unlike ``SO_REUSEPORT``, whose kernel hash can
put two of four associations on one process, every association gets its own process while
there are enough. Each acceptor is a plain ``python -m gateway.acceptor`` process
(``gateway/acceptor.py``) with its own pynetdicom AE and the same handlers as the one-process
SCP, on the path the gateway process chose (``gateway.fastpath``), writing to the same spool
(files are content-addressed; the outbox is SQLite WAL with a busy timeout and
single-statement transactions) and the same ``mpps.db``. Forwarding stays in the gateway
process: acceptors send ``work`` when they store an instance, so the forwarder wakes at once.
Acceptors log like this process: ``_spawn`` passes its logging set-up along
(``acceptor.describe_logging``).

The allow-list of calling AE titles goes to each acceptor when it starts and again, pushed,
whenever it changes (``push_sites``); an acceptor meeting an unknown AE asks (``sites?``) and
``ask_sites`` makes the gateway process look again and push. Association ends (``done
<host>``) go to ``on_done`` (the intake's counts). An acceptor that dies is started again; its
associations are counted as ended.
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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.acceptor import ASK_SITES, DONE, READY, WORK, describe_logging
from gateway.config import GatewaySettings
from gateway.errors import GatewayError
from gateway.sites import SiteTable

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 60.0


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, e.g. under ``taskset``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_count(settings: GatewaySettings) -> int:
    """Receiving processes: 1 = the gateway process itself, N > 1 = N acceptor processes."""
    if settings.workers:
        return settings.workers
    cpus = usable_cpus()
    return cpus if cpus > 1 else 1


@dataclass(eq=False)
class _Acceptor:
    index: int
    process: subprocess.Popen[bytes]
    ctrl: socket.socket
    ready: bool = False
    peers: Counter[str] = field(default_factory=Counter)  # hosts of running associations
    started_at: float = field(default_factory=time.monotonic)

    @property
    def active(self) -> int:
        return sum(self.peers.values())


class AcceptorPool:
    """``n`` acceptor processes for connections ``deliver``-ed to them.

    ``sites()`` returns the current allow-list (``gateway.sites.SiteTable``); ``ask_sites()``
    asks for it to be looked at again (the answer comes through ``push_sites``); ``on_work``
    is called when an acceptor has stored an instance (wake the forwarder); ``on_done(host)``
    when an association from ``host`` ended.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        n: int,
        fast: bool,
        address: tuple[str, int],
        sites: Callable[[], SiteTable],
        ask_sites: Callable[[], None],
        on_work: Callable[[], None],
        on_done: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.n = n
        self.fast = fast
        self.address = address
        self._sites = sites
        self._ask_sites = ask_sites
        self._on_work = on_work
        self._on_done = on_done
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._acceptors: list[_Acceptor] = []
        self._stopping = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._thread: threading.Thread | None = None

    # -- start / stop ------------------------------------------------------------------

    def start(self) -> None:
        """Start the acceptor processes; returns once every one is ready."""
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
        self._thread = threading.Thread(target=self._watch, name="gateway-acceptors", daemon=True)
        self._thread.start()
        logger.info(
            "acceptor processes started",
            extra={"action": "acceptors_started", "count": self.n, "port": self.address[1]},
        )

    def _spawn(self, index: int) -> _Acceptor:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config = {
            "settings": json.loads(self.settings.model_dump_json(exclude={"api_password"})),
            "address": list(self.address),
            "fast": self.fast,
            "sites": self._sites(),
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
        with self._lock:
            acceptors = list(self._acceptors)
        for acceptor in acceptors:  # EOF: each acceptor aborts its associations and exits
            try:
                acceptor.ctrl.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        for acceptor in acceptors:
            acceptor.ctrl.close()
        end = time.monotonic() + timeout
        for acceptor in acceptors:
            try:
                acceptor.process.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                acceptor.process.kill()
                acceptor.process.wait()
        self._selector.close()

    # -- connections and the allow-list ---------------------------------------------------

    def deliver(self, conn: socket.socket, peer: tuple[str, int], tls: bool) -> bool:
        """Hand ``conn`` to the acceptor with the fewest associations (``gateway.intake``'s
        ``Deliver``); this process's descriptor is closed either way."""
        try:
            message = json.dumps({"peer": [peer[0], peer[1]], "tls": tls}).encode()
            for _ in range(3):
                with self._lock:
                    ready = [a for a in self._acceptors if a.ready]
                    if not ready:
                        break
                    acceptor = min(ready, key=lambda a: (a.active, a.index))
                    acceptor.peers[peer[0]] += 1
                try:
                    with self._send_lock:
                        socket.send_fds(acceptor.ctrl, [message], [conn.fileno()])
                except OSError:
                    with self._lock:
                        acceptor.ready = False
                        acceptor.peers[peer[0]] -= 1
                    continue
                return True
            logger.error(
                "no acceptor process available; connection closed",
                extra={"action": "association_dropped", "peer": peer[0]},
            )
            return False
        finally:
            conn.close()

    def push_sites(self, table: SiteTable) -> None:
        """Send the allow-list to every acceptor process (they use it from then on)."""
        message = json.dumps({"sites": table}).encode()
        with self._lock:
            acceptors = [a for a in self._acceptors if a.ready]
        for acceptor in acceptors:
            try:
                with self._send_lock:
                    acceptor.ctrl.send(message)
            except OSError:
                pass  # dying: the watcher replaces it, and the new one starts with the list

    def pids(self) -> list[int]:
        """The acceptor processes' ids (running or not)."""
        with self._lock:
            return [a.process.pid for a in self._acceptors]

    def all_running(self) -> bool:
        """Every acceptor process is alive and has said it is ready."""
        with self._lock:
            return all(a.ready and a.process.poll() is None for a in self._acceptors)

    @property
    def associations(self) -> int:
        with self._lock:
            return sum(a.active for a in self._acceptors)

    # -- the watcher thread ----------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                events = self._selector.select(0.5)
            except (OSError, ValueError):
                return
            for key, _ in events:
                acceptor: _Acceptor = key.data
                try:
                    message = acceptor.ctrl.recv(256)
                except OSError:
                    message = b""
                if message == WORK:
                    self._on_work()
                elif message.startswith(DONE):
                    host = message[len(DONE) :].decode(errors="replace")
                    with self._lock:
                        if acceptor.peers[host] > 0:
                            acceptor.peers[host] -= 1
                    self._on_done(host)
                elif message == ASK_SITES:
                    self._ask_sites()
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
        with self._lock:
            dead.ready = False
            lost, dead.peers = dead.peers, Counter()
        for host, count in lost.items():
            for _ in range(count):
                self._on_done(host)
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


__all__ = ["AcceptorPool", "usable_cpus", "worker_count"]
