"""Shared set-up for the workflow tests (no tests here): a real webhook receiver on loopback
that checks the HMAC signature, and the county app served by a real uvicorn."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import uvicorn
from fastapi import FastAPI

from tests.integration.test_gateway_support import free_port
from worklist.webhooks import EVENT_HEADER, SIGNATURE_HEADER, verify

WEBHOOK_SECRET = "webhook-secret-0123456789"


@dataclass
class Received:
    kind: str
    body: dict[str, Any]
    signature_ok: bool
    at: float = field(default_factory=time.time)  # when it arrived (wall clock)


@dataclass
class Receiver:
    """Answers 500 to the first ``fail_first`` requests, then 204; keeps what it got."""

    url: str
    secret: str
    fail_first: int = 0
    received: list[Received] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: Any, raw: bytes) -> int:
        with self.lock:
            self.requests += 1
            if self.requests <= self.fail_first:
                return 500
            ok = verify(raw, self.secret, headers.get(SIGNATURE_HEADER))
            self.received.append(Received(headers.get(EVENT_HEADER, ""), json.loads(raw), ok))
            return 204 if ok else 401


def start_receiver(secret: str = WEBHOOK_SECRET, fail_first: int = 0) -> Iterator[Receiver]:
    port = free_port()
    receiver = Receiver(f"http://127.0.0.1:{port}/hook", secret, fail_first)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            code = receiver.handle(self.headers, raw)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class LiveServer:
    """``app`` on a real uvicorn at 127.0.0.1 (a thread), for streaming responses."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
