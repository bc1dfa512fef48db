"""`teleread serve` as a process, logging JSON: every line parses, and neither the patient's
name nor ID reaches the log, from the gateway's own process or its acceptor processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import free_port
from tests.dicom_factory import make_ct, write

PATIENT_NAME = "保密^患者"
PATIENT_ID = "PID-SECRET-4242"


def _wait(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"teleread serve exited while waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


METRICS_TOKEN = "serve-logs-scrape-token-0123456789"


def _metric(port: int, name: str) -> float | None:
    scrape = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with urllib.request.urlopen(scrape, timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def _send_malformed(port: int) -> int:
    """C-STORE a CT without a StudyInstanceUID (but with the patient's name and ID): the
    gateway refuses it and logs a warning."""
    from pynetdicom import AE

    ds = make_ct(patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
    del ds.StudyInstanceUID
    ae = AE(ae_title="CT_TS01")
    ae.add_requested_context(ds.file_meta.MediaStorageSOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title="TELEREAD")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_teleread_serve_logs_json_without_patient_data(tmp_path: Path, workers: str) -> None:
    """With ``TELEREAD_GATEWAY_WORKERS=2`` the associations run in acceptor processes
    (``gateway.acceptor``): their lines are JSON and redacted too."""
    from teleread.send import send_paths

    data_dir = tmp_path / "data"
    dicom_port, http_port = free_port(), free_port()
    stdout_path, stderr_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    env = {
        **os.environ,
        "TELEREAD_LOG_FORMAT": "json",
        "TELEREAD_WORKLIST_STABLE_SECONDS": "1",
        "TELEREAD_GATEWAY_WORKERS": workers,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("TELEREAD_STORAGE_ROOT", None)
    env["TELEREAD_API_METRICS_TOKEN"] = METRICS_TOKEN
    cmd = [sys.executable, "-m", "teleread.cli", "serve", "--data-dir", str(data_dir)]
    cmd += ["--dicom-port", str(dicom_port), "--http-port", str(http_port)]
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
    try:
        _wait(lambda: b"Press Ctrl-C" in stdout_path.read_bytes(), 90, "start-up", proc)
        ct = make_ct(patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
        path = write(ct, tmp_path / "ct" / "1.dcm")
        result = send_paths(
            [path], host="127.0.0.1", port=dicom_port, called_aet="TELEREAD", calling_aet="CT_TS01"
        )
        assert result.sent == 1 and result.failed == 0, result.summary()
        assert _send_malformed(dicom_port) == 0xC000  # cannot understand
        # the county API indexes it; its /metrics (the metrics token) says so
        _wait(
            lambda: (_metric(http_port, "teleread_api_instances_ingested_total") or 0) >= 1,
            60,
            "the instance to be indexed",
            proc,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    raw = stderr_path.read_text(encoding="utf-8")
    lines = raw.splitlines()
    assert lines, "no log lines"
    records = [json.loads(line) for line in lines]  # every line parses
    for rec in records:
        assert isinstance(rec, dict)
        assert {"time", "level", "logger", "message"} <= rec.keys(), rec
    assert any(rec.get("action") for rec in records)  # the extras come through
    (refused,) = [rec for rec in records if rec.get("action") == "store_malformed"]
    assert refused["level"] == "WARNING" and refused["sop_uid"]
    if workers == "2":  # logged by an acceptor process, as were its other lines
        assert refused["pid"] != proc.pid
        assert len({rec["pid"] for rec in records}) >= 2
    else:
        assert refused["pid"] == proc.pid
    assert PATIENT_NAME.split("^")[0] not in raw and PATIENT_ID not in raw
