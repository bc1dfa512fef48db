"""Pure parts of worklist: settings, text merging, the report hash, errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from worklist.errors import ClaimConflict, WorklistError
from worklist.ingest import merge_text_fields
from worklist.report_hashes import report_content_hash
from worklist.settings import Deadlines, WorklistSettings, get_settings


def test_settings_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    s = WorklistSettings()
    assert s.database_url == "sqlite:///teleread-data/teleread.db"
    assert s.lease == timedelta(seconds=900)
    assert s.deadlines == Deadlines()
    monkeypatch.setenv("TELEREAD_WORKLIST_CLAIM_LEASE_SECONDS", "60")
    monkeypatch.setenv("TELEREAD_WORKLIST_DEADLINE_STROKE_MINUTES", "10")
    s = WorklistSettings()
    assert s.lease == timedelta(seconds=60)
    assert s.deadlines.for_category("stroke") == timedelta(minutes=10)
    assert s.deadlines.for_category(None) == timedelta(minutes=1440)
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
        assert get_settings().claim_lease_seconds == 60
    finally:
        get_settings.cache_clear()


def test_merge_text_fields() -> None:
    merged = merge_text_fields({}, {"StudyDescription": " 头颅  CT ", "Empty": ""})
    assert merged == {"StudyDescription": "头颅 CT"}
    merged = merge_text_fields(merged, {"StudyDescription": "头颅 CT"})
    assert merged == {"StudyDescription": "头颅 CT"}
    merged = merge_text_fields(merged, {"StudyDescription": "急性脑卒中"})
    assert merged["StudyDescription"] == "头颅 CT | 急性脑卒中"
    huge = merge_text_fields(merged, {"StudyDescription": "x" * 5000})
    assert huge == merged  # bounded: an overlong addition is dropped


def test_report_hash_is_canonical() -> None:
    t = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    h = report_content_hash(
        findings="f", impression="i", recommendation="", status="final", signer="a", signed_at=t
    )
    same = report_content_hash(
        findings="f",
        impression="i",
        recommendation="",
        status="final",
        signer="a",
        signed_at=t.astimezone(timezone(timedelta(hours=8))),
    )
    assert h == same and len(h) == 64
    assert h != report_content_hash(
        findings="f ", impression="i", recommendation="", status="final", signer="a", signed_at=t
    )


def test_errors_have_default_messages() -> None:
    err = ClaimConflict()
    assert isinstance(err, WorklistError)
    assert "Another reader" in str(err)
    assert str(ClaimConflict("custom")) == "custom"
