"""The county API in several processes (``TELEREAD_API_WORKERS``) sharing one listening
socket: one process runs its Python under one GIL, and the API's routes are CPU work, so one
process answers about 220 requests/s on any machine (``bench/load.py``).

The parent (``teleread api`` or ``serve``) binds the socket, then starts each worker as
``python -m teleread.api_worker`` with the socket's descriptor inherited. A worker builds
its app itself from the environment the parent gives it (database URL, storage settings,
secret key: in its environment, readable by this user only, never in a file), starts
uvicorn on the shared socket (``teleread.services.ApiServer``: the slow-client protocol,
``freeze_startup_objects``) and tells the parent it is ready through a pipe. The kernel
hands each new connection to one worker waiting in ``accept``.

Written here rather than using uvicorn's own supervisor (``uvicorn.supervisors.Multiprocess``):
that one takes over the main thread and the process's signal handlers until its workers
stop, and builds each worker from a ``Config`` pickled into a multiprocessing child; ``serve``
keeps the gateway, housekeeping and the SR sender running beside the workers and stops them
in its own order, and a worker here builds its app from its environment alone.

What stays one per parent: housekeeping, the SR sender, the gateway (``serve``) and the
demo accounts, made before the workers start. What the workers share: the database (events
reach every worker's event streams through it: ``viewer_api.event_streams``), the object
store, and their ``/metrics`` figures (prometheus-client's multiprocess mode in a private
temporary directory: any worker's scrape sums them all). What each keeps to itself, as
replicas do: the token cache (a disabled account or revoked token is refused everywhere
within ``TELEREAD_API_USER_CACHE_SECONDS``), the log-in throttle (each worker counts its own
failures) and the event-stream caps (``max_streams_per_account`` and ``max_streams`` hold
per worker).

The parent supervises: a worker that exits is replaced (and its exit logged); one that
cannot start, or more than ``MAX_RESTARTS`` deaths within ``RESTART_WINDOW`` seconds,
stops the whole command with an error. SIGTERM or Ctrl-C stops every worker (each ends its
event streams and flushes its audit writer) and waits for it. A worker whose parent has
died (even by SIGKILL) stops itself: the kernel sends it SIGTERM (``PR_SET_PDEATHSIG``) and
it checks its parent every second anyway.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

# a worker imports the app and builds it in a few seconds; a loaded 2-core machine is slower
START_SECONDS = 120.0
STOP_SECONDS = 20.0
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
BACKLOG = 2048  # uvicorn's default
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # as viewer_api.metrics.database reads it
METRICS_DIR_PREFIX = "teleread-api-metrics-"


class WorkersFailed(RuntimeError):
    """The API worker processes could not be started or kept running."""


def remove_stale_metrics_dirs() -> None:
    """The metrics directories of parents that are gone (killed with SIGKILL: no ``stop``)."""
    root = Path(tempfile.gettempdir())
    for path in root.glob(f"{METRICS_DIR_PREFIX}*-*"):
        pid = path.name[len(METRICS_DIR_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or path.stat().st_uid != os.getuid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


def bind(host: str, port: int) -> socket.socket:
    """The listening socket the workers share (inheritable by them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise WorkersFailed(f"the API cannot listen on {host}:{port}: {exc}") from exc
    sock.set_inheritable(True)
    return sock


class ApiWorkers:
    """``count`` API worker processes on ``host:port``, each with ``env`` as its whole
    environment (plus the metrics directory); ``failed`` is set when they cannot be kept
    running (the caller stops)."""

    def __init__(
        self, count: int, *, host: str, port: int, env: Mapping[str, str], verbose: bool = False
    ) -> None:
        self.count = count
        self.host = host
        self.port = port
        self.failed = threading.Event()
        self._verbose = verbose
        remove_stale_metrics_dirs()
        # 0700; its name says whose it is
        self._metrics_dir = tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-")
        self._env = {**env, MULTIPROC_DIR_ENV: self._metrics_dir}
        self._sock: socket.socket | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._deaths: deque[float] = deque()
        self._monitor = threading.Thread(target=self._watch, name="api-workers", daemon=True)

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._procs]

    def start(self) -> None:
        """Bind, start every worker and wait until each is ready; ``WorkersFailed`` if not
        (nothing is left running)."""
        self._sock = bind(self.host, self.port)
        waiting: list[tuple[subprocess.Popen[bytes], int]] = []  # pipes not yet closed
        try:
            for _ in range(self.count):  # all at once: each takes seconds to import
                waiting.append(self._launch())
                with self._lock:
                    self._procs.append(waiting[-1][0])
            while waiting:
                self._await_ready(*waiting.pop(0))  # closes the pipe
        except BaseException:
            for _, ready_r in waiting:
                os.close(ready_r)
            self.stop()
            raise
        self._monitor.start()
        log.info(
            "API workers started",
            extra={"action": "api_workers_started", "workers": self.count, "pids": self.pids},
        )

    def stop(self) -> None:
        """SIGTERM every worker, wait for each (SIGKILL after ``STOP_SECONDS``), close the
        socket and remove the metrics directory."""
        self._stopping.set()
        if self._monitor.is_alive():
            self._monitor.join(timeout=5)
        with self._lock:
            procs, self._procs = self._procs, []
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    "API worker did not stop in time: killed",
                    extra={"action": "api_worker_killed", "pid": proc.pid},
                )
                proc.kill()
                proc.wait()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        return self._await_ready(*self._launch())

    def _launch(self) -> tuple[subprocess.Popen[bytes], int]:
        """A worker started; the pipe it writes "ready" to."""
        assert self._sock is not None
        ready_r, ready_w = os.pipe()
        listen_fd = self._sock.fileno()
        cmd = [
            sys.executable,
            "-m",
            "teleread.api_worker",
            "--listen-fd",
            str(listen_fd),
            "--ready-fd",
            str(ready_w),
            *(["--verbose"] if self._verbose else []),
        ]
        try:
            # a session of its own: a terminal's Ctrl-C reaches the parent alone, which stops
            # the workers in order (none is seen dying and replaced on the way)
            proc = subprocess.Popen(
                cmd, env=self._env, pass_fds=(listen_fd, ready_w), start_new_session=True
            )
        except BaseException:
            os.close(ready_r)
            raise
        finally:
            os.close(ready_w)
        return proc, ready_r

    def _await_ready(self, proc: subprocess.Popen[bytes], ready_r: int) -> subprocess.Popen[bytes]:
        """``proc`` once it said it is ready; ``WorkersFailed`` (and ``proc`` killed) if it
        exits first or takes longer than ``START_SECONDS``."""
        try:
            deadline = time.monotonic() + START_SECONDS
            while True:
                readable, _, _ = select.select([ready_r], [], [], 0.5)
                if readable:
                    if os.read(ready_r, 16).startswith(b"ready"):
                        return proc
                    break  # the pipe closed: the worker exited before it was ready
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                if self._stopping.is_set() and self._monitor.is_alive():
                    break  # a replacement started while the parent stops
        finally:
            os.close(ready_r)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        code = proc.wait()
        raise WorkersFailed(f"an API worker did not start (exit status {code}); see its log above")

    def _watch(self) -> None:
        """Replace a worker that exited, until too many died too fast."""
        from prometheus_client.multiprocess import mark_process_dead

        while not self._stopping.wait(0.5):
            with self._lock:
                dead = [p for p in self._procs if p.poll() is not None]
            for proc in dead:
                if self._stopping.is_set():
                    return
                log.error(
                    "API worker %d exited (status %s): starting another",
                    proc.pid,
                    proc.returncode,
                    extra={"action": "api_worker_died", "pid": proc.pid, "code": proc.returncode},
                )
                mark_process_dead(proc.pid, self._metrics_dir)  # its live gauges, if any
                now = time.monotonic()
                self._deaths.append(now)
                while self._deaths and self._deaths[0] < now - RESTART_WINDOW:
                    self._deaths.popleft()
                try:
                    if len(self._deaths) > MAX_RESTARTS:
                        raise WorkersFailed(
                            f"{len(self._deaths)} API workers died within {RESTART_WINDOW:.0f} s"
                        )
                    replacement = self._spawn()
                except WorkersFailed as exc:
                    if self._stopping.is_set():
                        return
                    log.error(str(exc), extra={"action": "api_workers_failed"})
                    self.failed.set()
                    return
                with self._lock:
                    self._procs[self._procs.index(proc)] = replacement


def worker_env(
    *, database_url: str, secret_key: str, storage_root: str | None = None
) -> dict[str, str]:
    """A worker's environment: the parent's, with what the parent decided (the database,
    the secret key, the embedded object store's directory) made explicit."""
    env = {k: v for k, v in os.environ.items() if k != MULTIPROC_DIR_ENV}
    env["TELEREAD_WORKLIST_DATABASE_URL"] = database_url
    env["TELEREAD_API_SECRET_KEY"] = secret_key
    if storage_root is not None:
        env["TELEREAD_STORAGE_ROOT"] = storage_root
    return env
