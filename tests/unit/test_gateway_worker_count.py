"""The number of receiving processes a gateway chooses as installed (TELEREAD_GATEWAY_WORKERS
unset): one acceptor process per CPU it may run on, or the gateway process alone on one CPU.
The CPUs it may run on are its affinity (what ``taskset`` sets), set here on this thread."""

import os
from collections.abc import Iterator

import pytest

from gateway.config import GatewaySettings
from gateway.workers import worker_count


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No TELEREAD_ setting of the developer's shell; this thread's affinity restored after."""
    for name in list(os.environ):
        if name.startswith("TELEREAD_"):
            monkeypatch.delenv(name)
    cpus = os.sched_getaffinity(0)
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


def _choice_on(cpus: set[int]) -> int:
    os.sched_setaffinity(0, cpus)
    return worker_count(GatewaySettings(api_url="http://127.0.0.1:9"))


def test_one_acceptor_per_usable_cpu_by_default(installed: None) -> None:
    cpus = os.sched_getaffinity(0)
    assert _choice_on({min(cpus)}) == 1  # one CPU: the gateway process receives itself
    if len(cpus) < 2:
        pytest.skip("one CPU here")
    assert _choice_on(set(sorted(cpus)[:2])) == 2
    assert _choice_on(cpus) == len(cpus)


def test_a_setting_overrides_the_choice(installed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEREAD_GATEWAY_WORKERS", "3")
    assert worker_count(GatewaySettings(api_url="http://127.0.0.1:9")) == 3
