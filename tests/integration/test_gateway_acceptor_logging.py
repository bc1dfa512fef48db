"""An acceptor process logs like the gateway process that started it: ``describe_logging``
in a process set up by ``teleread.logs``, ``apply_logging`` in a fresh one (as
``gateway.acceptor`` does with its config JSON), both real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

PARENT = """
import json, sys
from teleread.logs import configure_logging
configure_logging(fmt=sys.argv[1])
from gateway.acceptor import describe_logging
print(json.dumps(describe_logging()))
"""

CHILD = """
import json, logging, sys, threading, warnings
from gateway.acceptor import apply_logging
apply_logging(json.loads(sys.stdin.read()))
log = logging.getLogger("gateway.handlers")
log.warning("refused", extra={"action": "store_malformed", "PatientName": "Wang^Fang",
                              "detail": {"patient_id": "PID-77", "sop_uid": "1.2.3"}})
log.debug("not at this level")
logging.getLogger("pynetdicom").info("pynetdicom chatter")
warnings.warn("an old API")
t = threading.Thread(target=lambda: 1 / 0, name="assoc")
t.start(); t.join()
raise RuntimeError("boom")
"""


def _run(code: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def _child_stderr(fmt: str) -> tuple[dict[str, Any], str]:
    parent = _run(PARENT, fmt)
    assert parent.returncode == 0, parent.stderr
    described = json.loads(parent.stdout)
    child = _run(CHILD, stdin=parent.stdout)
    assert child.returncode == 1
    return described, child.stderr


def test_json_set_up_carries_over() -> None:
    described, stderr = _child_stderr("json")
    assert described["formatters"]["f0"]["()"] == "teleread.logs.JsonFormatter"
    assert described["filters"]["r0_0"]["()"] == "teleread.logs.RedactPatientData"
    records = [json.loads(line) for line in stderr.splitlines()]  # every line parses
    by_action = {r.get("action"): r for r in records}
    refused = by_action["store_malformed"]
    assert refused["PatientName"] == "[redacted]"
    assert refused["detail"] == {"patient_id": "[redacted]", "sop_uid": "1.2.3"}
    assert "Wang" not in stderr and "PID-77" not in stderr
    assert "chatter" not in stderr and "not at this level" not in stderr  # same levels
    assert any("an old API" in r["message"] for r in records if r["logger"] == "py.warnings")
    assert "ZeroDivisionError" in by_action["thread_crash"]["exception"]
    assert "RuntimeError: boom" in by_action["acceptor_crash"]["exception"]


def test_text_set_up_carries_over() -> None:
    described, stderr = _child_stderr("text")
    assert described["formatters"]["f0"]["fmt"] == "%(asctime)s %(levelname)s %(name)s: %(message)s"
    line = next(line for line in stderr.splitlines() if "refused" in line)
    assert " WARNING gateway.handlers: refused" in line
    assert "Wang" not in stderr and "PID-77" not in stderr


@pytest.mark.parametrize("config", [None, {"version": 1, "root": {"handlers": ["missing"]}}])
def test_no_or_bad_set_up_falls_back_to_plain_text(config: dict[str, Any] | None) -> None:
    code = "import json, logging, sys\nfrom gateway.acceptor import apply_logging\n"
    code += "apply_logging(json.loads(sys.stdin.read()), logging.INFO)\n"
    code += "logging.getLogger('gateway.handlers').info('stored')\n"
    proc = _run(code, stdin=json.dumps(config))
    assert proc.returncode == 0, proc.stderr
    assert "gateway.handlers[" in proc.stderr and " INFO stored" in proc.stderr
    if config is not None:
        assert "did not apply here" in proc.stderr
