"""Pure parts of the workflow: signatures, backoff, settings, escalation levels, SSE format."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from viewer_api.event_streams import format_event
from viewer_api.schemas import EventOut
from worklist.escalation import due_level
from worklist.models import Study
from worklist.settings import WorklistSettings
from worklist.webhooks import backoff, sign, verify

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def test_signature_is_hmac_sha256_of_body() -> None:
    body = b'{"kind":"escalation"}'
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(body, "s3cret") == f"sha256={expected}"
    assert verify(body, "s3cret", sign(body, "s3cret"))
    assert not verify(body + b" ", "s3cret", sign(body, "s3cret"))
    assert not verify(body, "other", sign(body, "s3cret"))
    assert not verify(body, "s3cret", None)


def test_backoff_doubles_and_caps() -> None:
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff(30) == timedelta(hours=1)


def test_webhook_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEREAD_WORKLIST_WEBHOOK_URLS", "http://a.example/h, https://b.example/x")
    monkeypatch.setenv("TELEREAD_WORKLIST_WEBHOOK_SECRET", "0123456789abcdef")
    assert WorklistSettings().webhook_urls == ["http://a.example/h", "https://b.example/x"]
    monkeypatch.setenv("TELEREAD_WORKLIST_WEBHOOK_URLS", '["http://c.example/"]')
    assert WorklistSettings().webhook_urls == ["http://c.example/"]
    monkeypatch.setenv("TELEREAD_WORKLIST_WEBHOOK_SECRET", "short")
    with pytest.raises(ValidationError, match="WEBHOOK_SECRET"):
        WorklistSettings()
    monkeypatch.setenv("TELEREAD_WORKLIST_WEBHOOK_SECRET", "0123456789abcdef")
    monkeypatch.setenv("TELEREAD_WORKLIST_WEBHOOK_URLS", "ftp://x")
    with pytest.raises(ValidationError, match="http"):
        WorklistSettings()
    monkeypatch.delenv("TELEREAD_WORKLIST_WEBHOOK_URLS")
    monkeypatch.delenv("TELEREAD_WORKLIST_WEBHOOK_SECRET")
    assert WorklistSettings().webhook_urls == []  # no webhooks: no secret needed


def test_due_level() -> None:
    st = Study(received_at=T0, deadline_at=T0 + timedelta(minutes=20))
    assert due_level(st, T0 + timedelta(minutes=9, seconds=59)) == 0
    assert due_level(st, T0 + timedelta(minutes=10)) == 1
    assert due_level(st, T0 + timedelta(minutes=20)) == 2
    assert due_level(Study(received_at=T0, deadline_at=None), T0 + timedelta(days=9)) == 0


def test_sse_message_format() -> None:
    event = EventOut(
        id=42, kind="escalation", study_uid="1.2", site_code="TS01", created_at=T0, payload={}
    )
    text = format_event(event)
    assert text.startswith("id: 42\nevent: escalation\ndata: {")
    assert text.endswith("}\n\n") and text.count("\n") == 4
