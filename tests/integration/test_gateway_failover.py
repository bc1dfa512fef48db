"""The gateway's county client across API replicas: a dead or failing URL is passed over at
once, the one that answered is kept, and ``CountyUnavailable`` comes only when every URL
fails. Real HTTP servers on 127.0.0.1 playing the replicas' log-in and configuration."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from gateway.config import GatewaySettings
from gateway.county import CountyClient, county_urls
from gateway.errors import CountyUnavailable
from tests.integration.test_gateway_support import JsonHandler
from tests.processes import free_port

TOKEN = "replica-test-token"
SITES = [{"code": "TS01", "name": "Township 1", "ae_titles": ["CT_TS01"]}]


@dataclass
class Replica:
    """One API replica: answers 503 while ``down``, 502 to its first ``fail_first`` requests
    (a load balancer whose upstream just died), and counts the requests it got."""

    url: str = ""
    down: bool = False
    fail_first: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _ReplicaHandler(JsonHandler):
    replica: Replica

    def _failing(self) -> bool:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.replica.lock:
            self.replica.requests += 1
            bad_gateway = self.replica.requests <= self.replica.fail_first
        if self.replica.down or bad_gateway:
            self.reply(503 if self.replica.down else 502, {"detail": "unavailable"})
            return True
        return False

    def do_POST(self) -> None:
        if not self._failing():
            self.reply(200, {"access_token": TOKEN, "token_type": "bearer"})

    def do_GET(self) -> None:
        if self._failing():
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.reply(401, {"detail": "not authenticated"})
        else:
            self.reply(200, {"sites": SITES})


def _serve(replica: Replica) -> ThreadingHTTPServer:
    handler = type("Handler", (_ReplicaHandler,), {"replica": replica})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    replica.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    both = [Replica(), Replica()]
    servers = [_serve(r) for r in both]
    try:
        yield both
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_a_dead_replica_is_passed_over_at_once_and_the_live_one_kept(
    replicas: list[Replica],
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    live = replicas[0]
    client = CountyClient(f"{dead}, {live.url}/", "gw", "pw")
    try:
        started = time.monotonic()
        assert [s.code for s in client.config()] == ["TS01"]
        assert time.monotonic() - started < 2.0
        before = live.requests
        for _ in range(3):
            client.config()
        assert live.requests == before + 3  # straight to the live one, no more detours
    finally:
        client.close()


def test_a_failing_replica_fails_over_and_the_client_stays(replicas: list[Replica]) -> None:
    first, second = replicas
    client = CountyClient(f"{first.url},{second.url}", "gw", "pw")
    try:
        client.config()
        assert first.requests == 2 and second.requests == 0  # log-in, configuration
        first.down = True  # answers 503
        client.config()
        assert second.requests == 1
        first.down = False  # back, but the client keeps the one that answered
        client.config()
        assert first.requests == 3 and second.requests == 2
    finally:
        client.close()


def test_unavailable_only_when_every_url_fails(replicas: list[Replica]) -> None:
    for county in replicas:
        county.down = True
    client = CountyClient(",".join(c.url for c in replicas), "gw", "pw")
    try:
        with pytest.raises(CountyUnavailable) as failed:
            client.config()
        assert all(c.url in str(failed.value) for c in replicas)
        replicas[1].down = False
        assert [s.code for s in client.config()] == ["TS01"]
    finally:
        client.close()


def test_one_url_is_tried_again_at_once() -> None:
    """A load balancer whose replica just died answers 502 once; the retry reaches a live one."""
    county = Replica(fail_first=1)
    server = _serve(county)
    client = CountyClient(county.url, "gw", "pw")
    try:
        assert [s.code for s in client.config()] == ["TS01"]
    finally:
        client.close()
        server.shutdown()
        server.server_close()


def test_the_setting_takes_one_url_or_a_list() -> None:
    assert county_urls("https://county.example/") == ["https://county.example"]
    assert county_urls("http://a:8000, http://b:8000,") == ["http://a:8000", "http://b:8000"]
    GatewaySettings(api_url="http://a:8000,http://b:8000")
    for bad in ("county.example", "http://a:8000,ftp://b", " , "):
        with pytest.raises(ValidationError, match="TELEREAD_GATEWAY_API_URL"):
            GatewaySettings(api_url=bad)
