"""Shared helpers for the gateway tests: a small real county API on 127.0.0.1 (http.server)
that validates announcements against the API's own schema and records them, and an object
store wrapper around a real ``FilesystemStore`` that can be switched off."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from gateway.intake import Intake, IntakeLimits
from gateway.transport import AssociationHost
from storage.base import ObjectInfo
from storage.errors import StoreUnavailable
from storage.filesystem import FilesystemStore

TOKEN = "test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def hosted(host: AssociationHost, limits: IntakeLimits | None = None) -> Iterator[int]:
    """Serve an association host on a free loopback port through the gateway's own intake;
    yields the port; the host is closed afterwards."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    host.server_address = listener.getsockname()

    def deliver(conn: socket.socket, peer: tuple[str, int], tls: bool) -> bool:
        host.process_request(conn, peer)
        return True

    intake = Intake([(listener, False)], deliver, limits or IntakeLimits())
    host.on_done = lambda peer: intake.association_ended(str(peer[0]))
    intake.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        intake.stop()
        host.close()


def after_meta(part10: bytes) -> bytes:
    """The dataset bytes of a Part-10 file (everything after the file meta group)."""
    assert part10[128:132] == b"DICM"
    group_len = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_len :]


@dataclass
class CountyState:
    sites: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    down: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def instances(self) -> list[dict[str, Any]]:
        with self.lock:
            return [i for c in self.calls for i in c["instances"]]


class JsonHandler(BaseHTTPRequestHandler):
    """A quiet HTTP handler answering JSON: the base of the stand-in county servers."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class CountyHandler(JsonHandler):
    state: CountyState

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.reply(401, {"detail": "not authenticated"})
            return False
        return True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.state.down:
            self.reply(503, {"detail": "down"})
            return
        if self.path == "/api/v1/auth/token":
            self.reply(200, {"access_token": TOKEN, "token_type": "bearer"})
            return
        if self.path != "/api/v1/ingest/instances" or not self._authorised():
            if self.path != "/api/v1/ingest/instances":
                self.reply(404, {"detail": "not found"})
            return
        from viewer_api.schemas import IngestIn  # the API's own contract

        payload = json.loads(body)
        try:
            IngestIn.model_validate(payload)
        except Exception as exc:
            self.reply(422, {"detail": str(exc)[:2000]})
            return
        with self.state.lock:
            if payload["site"] not in {s["code"] for s in self.state.sites}:
                self.reply(422, {"detail": "unknown site"})
                return
            dup = sum(1 for i in payload["instances"] if i["sop_instance_uid"] in self.state.seen)
            self.state.seen.update(i["sop_instance_uid"] for i in payload["instances"])
            self.state.calls.append(payload)
        self.reply(200, {"accepted": len(payload["instances"]) - dup, "duplicates": dup})

    def do_GET(self) -> None:
        if self.state.down:
            self.reply(503, {"detail": "down"})
            return
        if self.path != "/api/v1/gateway/config":
            self.reply(404, {"detail": "not found"})
            return
        if self._authorised():
            with self.state.lock:
                self.reply(200, {"sites": list(self.state.sites)})


@dataclass
class County:
    url: str
    state: CountyState


@pytest.fixture
def county() -> Iterator[County]:
    state = CountyState(sites=[{"code": "TS01", "name": "Township 1", "ae_titles": ["CT_TS01"]}])
    handler = type("Handler", (CountyHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield County(f"http://127.0.0.1:{server.server_address[1]}", state)
    finally:
        server.shutdown()
        server.server_close()


class SwitchableStore(FilesystemStore):
    """A real FilesystemStore that raises ``StoreUnavailable`` while ``down`` and records the
    order of successful puts."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.down = False
        self.put_keys: list[str] = []

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("test store is down")

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        size: int | None = None,
        content_type: str = "application/dicom",
        sha256: str | None = None,
    ) -> ObjectInfo:
        self._check()
        info = super().put(key, data, size=size, content_type=content_type, sha256=sha256)
        self.put_keys.append(key)
        return info

    def stat(self, key: str) -> ObjectInfo:
        self._check()
        return super().stat(key)
