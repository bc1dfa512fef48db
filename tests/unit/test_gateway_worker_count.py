"""The number of receiving processes a gateway chooses as installed (TELEREAD_GATEWAY_WORKERS
unset): one acceptor process per CPU it may run on, or the gateway process alone on one CPU."""

import os
import subprocess
import sys

import pytest

CHOICE = (
    "from gateway.config import GatewaySettings; from gateway.workers import worker_count; "
    "print(worker_count(GatewaySettings(api_url='http://127.0.0.1:9')))"
)


def _choice_on(cpus: set[int]) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEREAD_")}
    out = subprocess.run(
        [sys.executable, "-c", CHOICE],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    return int(out.stdout)


def test_one_acceptor_per_usable_cpu_by_default() -> None:
    cpus = os.sched_getaffinity(0)
    assert _choice_on({min(cpus)}) == 1  # one CPU: the gateway process receives itself
    if len(cpus) < 2:
        pytest.skip("one CPU here")
    assert _choice_on(set(sorted(cpus)[:2])) == 2
    assert _choice_on(cpus) == len(cpus)


def test_a_setting_overrides_the_choice() -> None:
    env = {**os.environ, "TELEREAD_GATEWAY_WORKERS": "3"}
    out = subprocess.run(
        [sys.executable, "-c", CHOICE], env=env, capture_output=True, text=True, check=True
    )
    assert int(out.stdout) == 3
