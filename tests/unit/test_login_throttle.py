"""The failed-log-in throttle on its own: an account's lock-out doubling up to its cap and
ending at a success, an address's failures holding back only the names that failed there,
the memory bound, and counting from many threads."""

from __future__ import annotations

import threading

from viewer_api.security import LoginThrottle

CLINIC = "10.8.0.1"


def throttle(**overrides: float) -> LoginThrottle:
    options: dict[str, float] = {
        "max_failures": 3,
        "lockout_seconds": 10,
        "lockout_max_seconds": 60,
        "forget_seconds": 3600,
        "max_failures_per_address": 0,
        "window_seconds": 300,
    }
    options.update(overrides)
    return LoginThrottle(**options)  # type: ignore[arg-type]


def test_an_account_is_locked_with_exponential_back_off_capped_and_reset_on_success() -> None:
    t = throttle()
    assert [t.lockout_for(n) for n in range(1, 9)] == [0, 0, 10, 20, 40, 60, 60, 60]
    for _ in range(2):
        t.failed("dr_li", CLINIC, 0)
    assert t.retry_after("dr_li", CLINIC, 0) == 0
    t.failed("dr_li", CLINIC, 0)  # the third: locked 10 s, from every address
    assert t.retry_after("dr_li", CLINIC, 1) == 9
    assert t.retry_after(" DR_LI", "203.0.113.9", 1) == 9  # the name as typed otherwise
    assert t.retry_after("dr_wang", CLINIC, 1) == 0
    t.failed("dr_li", "203.0.113.9", 10)  # once the lock ends, one more failure: twice as long
    assert t.retry_after("dr_li", CLINIC, 10) == 20
    for at in (30, 70, 130):
        t.failed("dr_li", CLINIC, at)
    assert t.retry_after("dr_li", CLINIC, 130) == 60  # the cap
    t.succeeded("dr_li", CLINIC)
    assert t.retry_after("dr_li", CLINIC, 131) == 0
    t.failed("dr_li", CLINIC, 131)  # counting starts again
    assert t.retry_after("dr_li", CLINIC, 131) == 0
    # failures long ago are forgotten
    for _ in range(2):
        t.failed("dr_wang", CLINIC, 0)
    t.failed("dr_wang", CLINIC, 3601)
    assert t.retry_after("dr_wang", CLINIC, 3601) == 0


def test_an_address_over_its_limit_holds_only_the_names_that_failed_there() -> None:
    t = throttle(max_failures=0, max_failures_per_address=5, window_seconds=60)
    for name in ("a", "b", "c", "d"):
        t.failed(name, CLINIC, 0)
    assert t.retry_after("a", CLINIC, 1) == 0  # under the limit: nobody is held
    t.failed("e", CLINIC, 10)
    assert t.retry_after("a", CLINIC, 11) == 49  # until the window moves past "a"'s failure
    assert t.retry_after("e", CLINIC, 11) == 49  # until the address is under its limit
    assert t.retry_after("a", "10.8.0.2", 11) == 0  # another address
    assert t.retry_after("nurse", CLINIC, 11) == 0  # a name that has not failed there
    t.succeeded("b", CLINIC)  # the right password releases its own name only
    assert t.retry_after("b", CLINIC, 12) == 0 and t.retry_after("c", CLINIC, 12) > 0
    assert t.retry_after("e", CLINIC, 60.5) == 0  # the window moved on


def test_memory_is_bounded_and_zero_turns_the_limits_off() -> None:
    t = throttle(max_failures_per_address=5, max_entries=100)
    for i in range(1000):
        t.failed(f"user{i}", f"10.1.{i // 250}.{i % 250}", 100)
    assert len(t) <= 200
    off = throttle(max_failures=0, max_failures_per_address=0)
    for _ in range(10):
        off.failed("a", "x", 0)
    assert off.retry_after("a", "x", 1) == 0 and len(off) == 0


def test_counts_from_many_threads() -> None:
    t = throttle(max_failures=1000, lockout_seconds=5)

    def hammer() -> None:
        for _ in range(100):
            t.failed("a", "x", 1)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert t.retry_after("a", "x", 2) == 0  # 800 < 1000
    for _ in range(200):
        t.failed("a", "x", 2)
    assert t.retry_after("a", "x", 2) > 0
