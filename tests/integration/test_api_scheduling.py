"""The API's event loop and its request threads run under Linux's SCHED_BATCH
(``teleread.services.batch_scheduling``); the process's other threads do not."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

from storage.filesystem import FilesystemStore
from teleread.services import ApiServer
from tests.processes import free_port
from viewer_api.main import create_app
from viewer_api.settings import ApiSettings
from worklist.db import make_engine, make_sessionmaker, upgrade

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SCHED_BATCH is Linux's")


def _policies() -> dict[int, int]:
    out = {}
    for task in os.listdir("/proc/self/task"):
        try:
            out[int(task)] = os.sched_getscheduler(int(task))
        except OSError:  # the thread has just ended
            pass
    return out


def test_the_request_threads_run_as_batch_and_the_rest_do_not(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'teleread.db'}"
    upgrade(url)
    engine = make_engine(url)
    app = create_app(
        session_factory=make_sessionmaker(engine),
        store=FilesystemStore(tmp_path / "objects"),
        settings=ApiSettings(secret_key="scheduling-test-secret-0123456789abcdef"),
    )
    before = set(_policies())
    port = free_port()
    server = ApiServer(app, host="127.0.0.1", port=port)
    server.start()
    try:
        # a log-in runs in a request thread (the event loop's thread starts it)
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/token",
            data={"username": "nobody", "password": "wrong-password"},
        )
        assert r.status_code == 401
        policies = _policies()
        new = {tid: p for tid, p in policies.items() if tid not in before}
        assert sum(p == os.SCHED_BATCH for p in new.values()) >= 2  # the loop, a request thread
        assert policies[os.getpid()] == os.SCHED_OTHER  # the caller's own thread is untouched
    finally:
        server.stop()
        engine.dispose()
