"""A real `teleread serve` process on loopback, with its data directory in a temp dir."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.processes import STARTUP_SECONDS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Pipeline:
    data_dir: Path
    dicom_port: int
    http_port: int
    logins: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def client(self, username: str | None = None) -> httpx.Client:
        client = httpx.Client(base_url=self.base_url, timeout=30)
        if username:
            r = client.post(
                "/api/v1/auth/token",
                data={"username": username, "password": self.logins[username]},
            )
            r.raise_for_status()
            client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        return client

    def teleread(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "teleread.cli", *args, "--data-dir", str(self.data_dir)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A county of the module's own: for tests that look at the whole worklist or every
    conflict (the browser's pages do)."""
    with running_pipeline(tmp_path_factory) as started:
        yield started


@pytest.fixture(scope="package")  # ends with tests/acceptance, not idles on
def shared_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """One county for the modules whose tests look only at their own studies (their own UIDs,
    sites and conflicts): starting and stopping `teleread serve` costs seconds each time.
    Two acceptor processes whatever the machine (what a 2-core CI machine picks anyway)."""
    with running_pipeline(tmp_path_factory, {"TELEREAD_GATEWAY_WORKERS": "2"}) as started:
        yield started


@contextmanager
def running_pipeline(
    tmp_path_factory: pytest.TempPathFactory, env: dict[str, str] | None = None
) -> Iterator[Pipeline]:
    """``teleread serve`` on free loopback ports, with ``env`` added to its environment."""
    data_dir = tmp_path_factory.mktemp("teleread-data")
    dicom_port, http_port = free_port(), free_port()
    log_path = data_dir / "serve.log"
    env = {
        **os.environ,
        "TELEREAD_WORKLIST_STABLE_SECONDS": "3",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    env.pop("TELEREAD_STORAGE_ROOT", None)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "teleread.cli",
                "serve",
                "--data-dir",
                str(data_dir),
                "--dicom-port",
                str(dicom_port),
                "--http-port",
                str(http_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its acceptor processes end with it
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        logins_file = data_dir / "demo-logins.txt"
        while True:
            if proc.poll() is not None:
                pytest.fail(f"teleread serve exited:\n{log_path.read_text(errors='replace')}")
            if logins_file.exists() and b"Press Ctrl-C" in log_path.read_bytes():
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"teleread serve did not start:\n{log_path.read_text(errors='replace')}"
                )
            time.sleep(0.2)
        logins = {}
        for line in logins_file.read_text(encoding="utf-8").splitlines()[1:]:
            username, password, *_ = line.split("\t")
            logins[username] = password
        yield Pipeline(data_dir, dicom_port, http_port, logins, proc, log_path)
    finally:
        # nothing of it is kept: no graceful stop to wait seconds for (test_serve_logs stops
        # serve with SIGTERM and checks what it logs)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
