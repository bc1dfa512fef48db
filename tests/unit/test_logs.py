"""JSON logs and the patient-data filter: the formatter and filter on their own, and a short
process that warns and crashes (``tests/integration/test_serve_logs.py`` runs a whole
``teleread serve``)."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from teleread.cli import main
from teleread.logs import (
    REDACTED,
    JsonFormatter,
    RedactPatientData,
    is_patient_key,
    log_format,
    make_handler,
    redact,
)


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through ``make_handler("json")`` into a string."""
    stream = io.StringIO()
    logger = logging.getLogger(f"teleread.test_logs.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = make_handler("json", stream)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def _records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_record_with_extras(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture
    logger.info(
        "study %s claimed\nby %s",
        "1.2.3",
        "dr_li",
        extra={"action": "study_claimed", "study_uid": "1.2.3", "count": 2, "ok": True},
    )
    (rec,) = _records(stream)
    assert rec["level"] == "INFO" and rec["logger"] == logger.name
    assert rec["message"] == "study 1.2.3 claimed\nby dr_li"  # one line on the wire
    assert len(stream.getvalue().splitlines()) == 1
    assert (rec["action"], rec["study_uid"], rec["count"], rec["ok"]) == (
        "study_claimed",
        "1.2.3",
        2,
        True,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["time"])
    assert abs(datetime.fromisoformat(rec["time"]).timestamp() - time.time()) < 60
    assert "exception" not in rec and "args" not in rec and "msg" not in rec


def test_exceptions_are_one_string_field(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    try:
        raise RuntimeError("store unreachable")
    except RuntimeError:
        logger.exception("upload failed", extra={"action": "upload_failed"})
    (rec,) = _records(stream)
    assert rec["level"] == "ERROR"
    assert rec["exception"].startswith("Traceback")
    assert "RuntimeError: store unreachable" in rec["exception"]


def test_values_that_are_not_json_become_strings(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture
    logger.info(
        "x", extra={"path": Path("/a/b"), "uids": ("1.2", "1.3"), "at": datetime(2026, 1, 2)}
    )
    (rec,) = _records(stream)
    assert rec["path"] == "/a/b" and rec["uids"] == ["1.2", "1.3"]
    assert rec["at"] == "2026-01-02T00:00:00"


@pytest.mark.parametrize(
    "key",
    [
        "patient_name",
        "patient_id",
        "PatientName",
        "PatientID",
        "patient-birth-date",
        "PatientBirthDate",
        "patient_sex",
        "OtherPatientIDs",
        "other_patient_names",
        "accession_number",
        "AccessionNumber",
        "communicated_to_name",
        "communicated_to_phone",
        "findings",
        "password",
        "token",
        "Authorization",
    ],
)
def test_patient_keys_are_known(key: str) -> None:
    assert is_patient_key(key)


@pytest.mark.parametrize(
    "key", ["action", "study_uid", "sop_uid", "site", "calling_ae", "error", "user_id", "path"]
)
def test_operational_keys_pass(key: str) -> None:
    assert not is_patient_key(key)


def test_the_filter_redacts_extras_nested_values_and_mapping_args(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture
    logger.warning(
        "ingest of %(study)s for %(patient_name)s refused",
        {"study": "1.2.3", "patient_name": "张^三"},
        extra={
            "action": "ingest_refused",
            "study_uid": "1.2.3",
            "patient_name": "张^三",
            "PatientID": "P001",
            "detail": {"site": "TS01", "instances": [{"PatientName": "张^三", "sop": "1.2.3.4"}]},
        },
    )
    raw = stream.getvalue()
    assert "张" not in raw and "P001" not in raw
    (rec,) = _records(stream)
    assert rec["message"] == f"ingest of 1.2.3 for {REDACTED} refused"
    assert rec["patient_name"] == REDACTED and rec["PatientID"] == REDACTED
    assert rec["detail"] == {
        "site": "TS01",
        "instances": [{"PatientName": REDACTED, "sop": "1.2.3.4"}],
    }
    assert rec["study_uid"] == "1.2.3" and rec["action"] == "ingest_refused"


def test_dicts_among_positional_arguments_are_redacted(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture
    logger.info("header %s of %s", {"PatientName": "张^三", "Modality": "CT"}, "1.2.3")
    (rec,) = _records(stream)
    assert "张" not in rec["message"] and "'Modality': 'CT'" in rec["message"]
    assert rec["message"].endswith("of 1.2.3")


def test_redact_copies_and_leaves_other_values() -> None:
    data = {"patient_id": "P1", "uids": ["1.2"], "n": 3}
    assert redact(data) == {"patient_id": REDACTED, "uids": ["1.2"], "n": 3}
    assert data["patient_id"] == "P1"  # the caller's dict is untouched
    assert redact("text") == "text" and redact(None) is None


def test_the_filter_also_guards_the_text_format() -> None:
    stream = io.StringIO()
    handler = make_handler("text", stream)
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    record.__dict__["patient_name"] = "张^三"  # as extra={...} sets it
    assert any(isinstance(f, RedactPatientData) for f in handler.filters)
    handler.handle(record)
    assert record.__dict__["patient_name"] == REDACTED
    assert stream.getvalue().rstrip().endswith("INFO t: hello")
    assert isinstance(make_handler("json", stream).formatter, JsonFormatter)


def test_log_format_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert log_format({}) == "text"
    assert log_format({"TELEREAD_LOG_FORMAT": " JSON "}) == "json"
    with pytest.raises(ValueError, match="TELEREAD_LOG_FORMAT"):
        log_format({"TELEREAD_LOG_FORMAT": "yaml"})


def test_the_command_refuses_an_unknown_format(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("TELEREAD_LOG_FORMAT", "xml")
    assert main(["demo-studies", str(tmp_path)]) == 2
    assert "TELEREAD_LOG_FORMAT must be one of text, json" in capsys.readouterr().err


# --- a real process ------------------------------------------------------------------------

CRASH = """
import threading, warnings
from teleread.logs import configure_logging
configure_logging(fmt="json")
warnings.warn("an old API")
t = threading.Thread(target=lambda: 1 / 0, name="worker")
t.start(); t.join()
raise RuntimeError("boom")
"""


def test_warnings_and_crashes_are_json_lines_too() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CRASH],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 1
    records = [json.loads(line) for line in proc.stderr.splitlines()]  # every line parses
    by_logger = {(r["logger"], r.get("action")): r for r in records}
    assert "an old API" in by_logger[("py.warnings", None)]["message"]
    thread = by_logger[("teleread", "thread_crash")]
    assert thread["thread_name"] == "worker" and "ZeroDivisionError" in thread["exception"]
    crash = by_logger[("teleread", "crash")]
    assert crash["level"] == "CRITICAL" and "RuntimeError: boom" in crash["exception"]
