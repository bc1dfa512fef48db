"""`teleread` commands as real processes on 127.0.0.1, for tests of the production shape
(several API replicas, a separate gateway, migrations run by hand)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

TELEREAD = [sys.executable, "-m", "teleread.cli"]
SECRET_KEY = "cluster-test-secret-key-0123456789abcdef"
# how long a started server may take to answer: a ceiling, not a wait (the loops poll the
# condition); generous because argon2 hashing of the demo accounts and migrations crawl on a
# loaded 2-core machine
STARTUP_SECONDS = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def teleread_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child ``teleread``: this one without TELEREAD_* settings
    (a developer's shell must not leak in), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEREAD_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Proc:
    """One ``teleread`` child process; its output goes to ``log``."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.args = list(args)
        self.log = log
        self._out = log.open("ab")
        self.popen = subprocess.Popen(
            [*TELEREAD, *args], env=dict(env), stdout=self._out, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._out.close()


def wait_healthy(base_url: str, proc: Proc, timeout: float = STARTUP_SECONDS) -> None:
    """Until ``GET /healthz`` answers 200; fails early when the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.args} exited {proc.popen.returncode}:\n{proc.output()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base_url} not healthy after {timeout} s:\n{proc.output()}")


def start_api(
    *, database_url: str, port: int, env: Mapping[str, str], log: Path, migration_wait: float = 120
) -> Proc:
    return Proc(
        [
            "api",
            "--database-url",
            database_url,
            "--host",
            "127.0.0.1",
            "--http-port",
            str(port),
            "--migration-wait",
            str(migration_wait),
        ],
        teleread_env({"TELEREAD_API_SECRET_KEY": SECRET_KEY, **env}),
        log,
    )


@contextlib.contextmanager
def api_replicas(
    *, database_url: str, env: Mapping[str, str], logs: Path, count: int = 2
) -> Iterator[list[str]]:
    """``count`` ``teleread api`` processes on one database (replicas, as docker-compose
    runs them), each answering; their base URLs. Logs go to ``logs/api<n>.log``."""
    procs: list[Proc] = []
    try:
        bases = []
        for n in range(count):
            port = free_port()
            procs.append(
                start_api(database_url=database_url, port=port, env=env, log=logs / f"api{n}.log")
            )
            bases.append(f"http://127.0.0.1:{port}")
        for base, proc in zip(bases, procs, strict=True):
            wait_healthy(base, proc)
        yield bases
    finally:
        for proc in procs:
            proc.stop()
