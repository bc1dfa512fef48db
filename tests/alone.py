"""pytest plugin: the ``alone`` marker, for a test that measures a latency the product
promises (a replica killed, every instance still announced within 5 s): run among the other
pytest-xdist workers' tests it would measure how busy the machine is instead.

Under xdist every test holds a shared lock while it runs (set-up, call, tear-down); an
``alone`` test takes it exclusively, so the others wait while it runs. It takes a turnstile
lock first, which the others pass through on their way to the shared lock: they cannot keep
it out for ever. The lock files live in the run's temporary root, beside the workers' own
(``popen-gwN``). Without xdist nothing changes: the test is alone anyway."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Generator
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "alone: runs while no other test does (pytest-xdist workers wait): it measures a latency",
    )


def _lock_dir(config: pytest.Config) -> Path | None:
    basetemp = config.option.basetemp  # a worker's: <the run's root>/popen-gwN
    if not os.environ.get("PYTEST_XDIST_WORKER") or not basetemp:
        return None
    return Path(basetemp).parent


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    root = _lock_dir(item.config)
    if root is None:
        return (yield)
    alone = item.get_closest_marker("alone") is not None
    with (root / "alone.turnstile").open("a") as turnstile, (root / "alone.lock").open("a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        return (yield)  # closing the files releases both locks
