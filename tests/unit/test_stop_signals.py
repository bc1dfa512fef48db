"""``teleread.signals.StopSignals``: a burst of SIGTERMs stops a waiting process (the
handler takes no lock, so a signal arriving inside another's handling cannot deadlock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

PROGRAM = """
import signal
import sys
from teleread.signals import StopSignals
signals = StopSignals().install()
print("ready", flush=True)
signals.wait()
# the rest of the burst may still be on its way: it must not kill the process on its way out
# (at exit the interpreter gives SIGTERM back its default action)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("stopped", signals.received, flush=True)
"""


def test_a_burst_of_sigterms_stops_the_waiter() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", PROGRAM], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for _ in range(200):
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert out.strip() == f"stopped {int(signal.SIGTERM)}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_wait_returns_after_its_seconds_or_when_told_to_stop_going() -> None:
    from teleread.signals import StopSignals

    signals = StopSignals()  # not installed: no signal will come
    began = time.monotonic()
    assert signals.wait(0.3) is False
    assert time.monotonic() - began >= 0.3
    assert signals.wait(keep_going=lambda: False) is False
