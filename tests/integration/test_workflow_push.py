"""Push, end to end: a stroke study driven past half its read deadline shows up as an
escalation on the SSE stream (a real uvicorn on 127.0.0.1, read with httpx streaming) and at
a webhook receiver on loopback that checks the HMAC signature."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_api_world import Study, World, build_world
from tests.integration.test_workflow_support import (
    WEBHOOK_SECRET,
    LiveServer,
    Receiver,
    start_receiver,
)
from viewer_api.routes.events import stop_streams
from worklist import escalation, webhooks

READ_TIMEOUT = 10.0


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from start_receiver()


@pytest.fixture
def live(world: World) -> Iterator[LiveServer]:
    app: Any = world.client.app
    with LiveServer(app) as server:
        yield server


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event id, data) per SSE message; comments and ``retry:`` lines skipped."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in fields:
                yield fields.get("id", ""), json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":") and ":" in line:
            name, _, value = line.partition(":")
            fields[name] = value.lstrip(" ")


def next_of(stream: Iterator[tuple[str, dict[str, Any]]], kind: str) -> tuple[str, dict[str, Any]]:
    for _ in range(50):
        event_id, data = next(stream)
        if data["kind"] == kind:
            return event_id, data
    raise AssertionError(f"no {kind} event")


def escalate(world: World, seconds: float) -> None:
    """What housekeeping does every few seconds, at the app's clock."""
    with world.factory.begin() as session:
        escalation.scan(session=session, now=world.clock.tick(seconds))


def deliver(world: World, url: str) -> webhooks.RunStats:
    """What housekeeping does after the escalation scan: queue and send webhook events."""
    with httpx.Client(timeout=5) as http:
        return webhooks.run_once(
            factory=world.factory, client=http, urls=[url], secret=WEBHOOK_SECRET, clock=world.clock
        )


def test_stroke_escalation_reaches_stream_and_webhook(
    world: World, live: LiveServer, receiver: Receiver
) -> None:
    stroke = Study("TS01", "CT", "头颅CT平扫 急性脑卒中", patient_name="王^小明")
    world.announce(stroke)
    assert deliver(world, receiver.url).delivered == 1  # the new urgent study
    timeout = httpx.Timeout(READ_TIMEOUT)
    with httpx.Client(base_url=live.base_url, timeout=timeout) as client:
        params = {"access_token": world.tokens["dr_li"], "after": "0"}
        with client.stream("GET", "/api/v1/events", params=params) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = sse_events(response)
            urgent_id, urgent = next(stream)
            assert (urgent["kind"], urgent["study_uid"]) == ("study_urgent", stroke.uid)
            assert urgent["payload"]["category"] == "stroke"

            escalate(world, 9 * 60)  # not yet half of 20 minutes
            escalate(world, 61)  # 10 min 1 s: half the deadline passed, nobody claimed
            event_id, data = next(stream)
            assert data["kind"] == "escalation" and data["study_uid"] == stroke.uid
            assert data["payload"]["level"] == 1 and data["payload"]["category"] == "stroke"
            assert int(event_id) == data["id"] > int(urgent_id)
            assert "王" not in json.dumps(data)

        # a reconnecting EventSource resumes after Last-Event-ID (header auth this time)
        headers = {**world.headers("dr_wang"), "Last-Event-ID": urgent_id}
        with client.stream("GET", "/api/v1/events", headers=headers) as response:
            assert next(sse_events(response))[1]["kind"] == "escalation"

        # the other township's clinic does not see it; its own clinic does
        assert world.get("nurse_ts02", "/api/v1/events/recent").json() == []
        mine = world.get("nurse_ts01", "/api/v1/events/recent").json()
        assert [e["kind"] for e in mine] == ["study_urgent", "escalation"]

    # the same events at the webhook, signed; an overdue study escalates once more
    escalate(world, 10 * 60)
    assert deliver(world, receiver.url).delivered == 2
    # deliveries go out in parallel: the ids, not the order of arrival, give the sequence
    arrived = sorted(receiver.received, key=lambda r: r.body["id"])
    got = [(r.kind, r.body["payload"].get("level"), r.signature_ok) for r in arrived]
    assert got == [("study_urgent", None, True), ("escalation", 1, True), ("escalation", 2, True)]
    assert all(r.body["study_uid"] == stroke.uid for r in receiver.received)


def test_stream_ends_on_shutdown_and_heartbeat_format(world: World, live: LiveServer) -> None:
    with httpx.Client(base_url=live.base_url, timeout=httpx.Timeout(READ_TIMEOUT)) as client:
        assert client.get("/api/v1/events").status_code == 401
        bad = client.get("/api/v1/events", params={"access_token": world.tokens["gw_ts01"]})
        assert bad.status_code == 403
        with client.stream("GET", "/api/v1/events", headers=world.headers("boss")) as response:
            lines = response.iter_lines()
            assert next(lines) == "retry: 3000"
            started = time.monotonic()
            stop_streams(world.client.app)  # type: ignore[arg-type]
            rest = list(lines)  # the server ends the stream
            assert time.monotonic() - started < 5
            assert all(not line.startswith("data:") for line in rest)
