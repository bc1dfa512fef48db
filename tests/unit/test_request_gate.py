"""viewer_api.limits.RequestGate around a bare ASGI app: body caps before reading, a token
before a large body, slow senders, and the concurrency slots with their queue."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from viewer_api.limits import RequestGate, Slots
from viewer_api.security import SESSION_COOKIE, create_access_token
from viewer_api.settings import ApiSettings
from worklist.db import utcnow
from worklist.models import User

SECRET = "unit-test-secret-key-0123456789-abcdefgh"


def settings(**overrides: Any) -> ApiSettings:
    return ApiSettings(secret_key=SECRET, **overrides)


def token(s: ApiSettings, *, age: float = 0) -> str:
    user = User(id=7, username="u", role="gateway")
    return create_access_token(user=user, settings=s, now=utcnow() - timedelta(seconds=age))


class Recorder:
    """The app behind the gate: reads its whole body, answers its size, counts calls."""

    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.calls = 0
        self.hold = hold

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        total = 0
        while scope["method"] in ("POST", "PUT"):
            message = await receive()
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if self.hold is not None and scope["path"].startswith(("/api/", "/dicomweb/")):
            await self.hold.wait()
        await send({"type": "http.response.body", "body": str(total).encode()})


async def call(
    gate: Any,
    path: str = "/api/v1/x",
    *,
    method: str = "POST",
    headers: list[tuple[bytes, bytes]] | None = None,
    chunks: list[bytes] | None = None,
) -> tuple[int, dict[bytes, bytes], bytes, int]:
    """(status, headers, body, messages the gate pulled from the client)."""
    chunks = chunks if chunks is not None else []
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pending:
            pulled += 1
            return pending.pop(0)
        await asyncio.sleep(3600)  # a connected client that sends nothing more
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers or []}
    scope["query_string"] = b""
    await gate(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start.get("headers", [])), body, pulled


def length(n: int) -> tuple[bytes, bytes]:
    return (b"content-length", str(n).encode())


def bearer(t: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {t}".encode())


def test_declared_oversize_body_is_refused_unread() -> None:
    s = settings(max_json_bytes=4096)
    app = Recorder()
    gate = RequestGate(app, settings=s)
    status, _, _, pulled = asyncio.run(call(gate, headers=[length(5000)], chunks=[b"x" * 5000]))
    assert (status, pulled, app.calls) == (413, 0, 0)
    # the gateway's announcement may be larger: max_request_bytes
    big = [length(5000), bearer(token(s))]
    ingest = call(gate, "/api/v1/ingest/instances", headers=big, chunks=[b"x" * 5000])
    assert asyncio.run(ingest)[0] == 200


def test_streamed_oversize_body_stops_at_the_cap() -> None:
    s = settings(max_json_bytes=1024)
    gate = RequestGate(Recorder(), settings=s)
    headers = [(b"transfer-encoding", b"chunked"), bearer(token(s))]
    status, _, _, pulled = asyncio.run(call(gate, headers=headers, chunks=[b"x" * 400] * 100))
    assert status == 413
    assert pulled == 3  # 1200 bytes > 1024: stopped on the third chunk, not the hundredth


def test_small_bodies_and_bad_lengths() -> None:
    gate = RequestGate(Recorder(), settings=settings())
    status, _, body, _ = asyncio.run(call(gate, headers=[length(10)], chunks=[b"x" * 10]))
    assert (status, body) == (200, b"10")
    for bad in (b"abc", b"-1", b"+5", b" ", b"\xd9\xa1"):  # the last: an Arabic-Indic one
        assert asyncio.run(call(gate, headers=[(b"content-length", bad)]))[0] == 400
    assert asyncio.run(call(gate, headers=[(b"content-length", b"1" * 400)]))[0] == 413


def test_a_large_body_needs_a_valid_token_before_it_is_read() -> None:
    s = settings(unauthenticated_body_bytes=1000)
    app = Recorder()
    gate = RequestGate(app, settings=s)
    path = "/api/v1/ingest/instances"
    body = [b"x" * 5000]
    status, headers, _, pulled = asyncio.run(call(gate, path, headers=[length(5000)], chunks=body))
    assert (status, pulled, app.calls) == (401, 0, 0)
    assert headers[b"www-authenticate"] == b"Bearer"
    for bad in ("not-a-token", token(s, age=s.token_ttl_seconds + 60)):  # forged, expired
        refused = asyncio.run(call(gate, path, headers=[length(5000), bearer(bad)], chunks=body))
        assert (refused[0], refused[3]) == (401, 0)
    # a body of unknown length counts as large
    chunked = [(b"transfer-encoding", b"chunked")]
    assert asyncio.run(call(gate, path, headers=chunked, chunks=body))[0] == 401
    ok = asyncio.run(call(gate, path, headers=[length(5000), bearer(token(s))], chunks=body))
    assert (ok[0], ok[2]) == (200, b"5000")
    # a small body (a log-in form) needs none
    assert asyncio.run(call(gate, path, headers=[length(10)], chunks=[b"x" * 10]))[0] == 200


def test_a_client_that_stops_sending_its_body_gets_408() -> None:
    s = settings(body_idle_seconds=0.2)
    app = Recorder()
    gate = RequestGate(app, settings=s)
    headers = [length(100)]
    status, out, body, _ = asyncio.run(call(gate, headers=headers, chunks=[]))
    assert status == 408 and out[b"connection"] == b"close" and json.loads(body)["detail"]
    assert app.calls == 0


def test_excess_requests_wait_then_get_503_with_retry_after() -> None:
    s = settings(api_concurrency=2, image_concurrency=1, queue_seconds=0.3)

    async def scenario() -> tuple[list[int], list[int], dict[bytes, bytes], int]:
        hold = asyncio.Event()
        app = Recorder(hold)
        gate = RequestGate(app, settings=s)
        held = [asyncio.create_task(call(gate, method="GET")) for _ in range(2)]
        await asyncio.sleep(0.05)
        # a third waits its queue time, then 503; images have slots of their own
        status, headers, _, _ = await call(gate, method="GET")
        image = asyncio.create_task(call(gate, "/dicomweb/studies", method="GET"))
        # the probes never wait
        probe = await asyncio.wait_for(call(gate, "/healthz", method="GET"), 0.2)
        queued = asyncio.create_task(call(gate, method="GET"))
        await asyncio.sleep(0.05)
        hold.set()  # the two finish; the queued one gets a slot
        done = [r[0] for r in await asyncio.gather(*held, image, queued)]
        return [status, probe[0]], done, headers, app.calls

    refused, done, headers, calls = asyncio.run(scenario())
    assert refused == [503, 200]
    assert headers[b"retry-after"] == b"1"
    assert done == [200, 200, 200, 200]
    assert calls == 5  # the refused one never reached the app


def test_an_event_stream_gives_its_slot_back_once_it_has_started() -> None:
    s = settings(api_concurrency=1, queue_seconds=0.2)

    # the stream is still open (held) when the next request arrives: it gets the slot
    async def scenario() -> int:
        hold = asyncio.Event()
        app = Recorder(hold)
        gate = RequestGate(app, settings=s)
        stream = asyncio.create_task(call(gate, "/api/v1/events", method="GET"))
        await asyncio.sleep(0.05)
        other = asyncio.create_task(call(gate, "/api/v1/other", method="GET"))
        await asyncio.sleep(0.05)
        started = app.calls
        hold.set()
        await asyncio.gather(stream, other)
        return started

    assert asyncio.run(scenario()) == 2


def test_slots_hand_over_in_order_and_survive_cancellation() -> None:
    async def scenario() -> list[str]:
        slots = Slots("t", 1, queue_depth=3)
        order: list[str] = []
        assert await slots.acquire(1)

        async def waiter(name: str) -> None:
            if await slots.acquire(1):
                order.append(name)
                slots.release()

        a = asyncio.create_task(waiter("a"))
        await asyncio.sleep(0.01)
        cancelled = asyncio.create_task(waiter("x"))
        b = asyncio.create_task(waiter("b"))
        await asyncio.sleep(0.01)
        assert not await slots.acquire(1)  # three wait already: refused at once
        cancelled.cancel()
        slots.release()
        await asyncio.gather(a, b, return_exceptions=True)
        assert (slots.active, slots.waiting) == (0, 0)
        return order

    assert asyncio.run(scenario()) == ["a", "b"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_skip_the_gate(path: str) -> None:
    s = settings(api_concurrency=1, queue_depth=0)

    async def scenario() -> int:
        hold = asyncio.Event()
        gate = RequestGate(Recorder(hold), settings=s)
        busy = asyncio.create_task(call(gate, method="GET"))
        await asyncio.sleep(0.02)
        assert (await call(gate, method="GET"))[0] == 503  # no queue: refused at once
        status = (await asyncio.wait_for(call(gate, path, method="GET"), 1))[0]
        hold.set()
        await busy
        return status

    assert asyncio.run(scenario()) == 200


def test_a_json_body_with_too_many_keys_is_refused_before_parsing() -> None:
    s = settings(max_json_keys=100)
    app = Recorder()
    gate = RequestGate(app, settings=s)
    many = ("{" + ",".join(f'"k{i}":0' for i in range(101)) + "}").encode()
    json_type = (b"content-type", b"application/json")
    status, _, body, _ = asyncio.run(
        call(gate, headers=[length(len(many)), json_type], chunks=[many])
    )
    assert status == 413 and b"keys" in body and app.calls == 0
    few = many.replace(b',"k100":0', b"")
    assert asyncio.run(call(gate, headers=[length(len(few)), json_type], chunks=[few]))[0] == 200
    # the ingest routes take a gateway's large batches
    big = [length(len(many)), json_type, bearer(token(s))]
    assert asyncio.run(call(gate, "/api/v1/ingest/x", headers=big, chunks=[many]))[0] == 200


def test_the_web_pages_session_cookie_counts_as_a_token() -> None:
    s = settings(unauthenticated_body_bytes=1000)
    gate = RequestGate(Recorder(), settings=s)
    body = [b"x" * 5000]
    cookie = (b"cookie", f"other=1; {SESSION_COOKIE}={token(s)}".encode())
    assert asyncio.run(call(gate, headers=[length(5000), cookie], chunks=body))[0] == 200
    stale = (b"cookie", f"{SESSION_COOKIE}={token(s, age=s.token_ttl_seconds + 60)}".encode())
    assert asyncio.run(call(gate, headers=[length(5000), stale], chunks=body))[0] == 401
