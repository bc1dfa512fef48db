"""The gateway's county client across API replicas: a dead or failing URL is passed over at
once, the one that answered is kept, and ``CountyUnavailable`` comes only when every URL
fails. Real HTTP servers on 127.0.0.1 (the shared small county API)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from gateway.config import GatewaySettings
from gateway.county import CountyClient, county_urls
from gateway.errors import CountyUnavailable
from tests.integration.test_gateway_support import County, CountyState, _Handler, free_port

SITES = [{"code": "TS01", "name": "Township 1", "ae_titles": ["CT_TS01"]}]


class CountingState(CountyState):
    """Counts requests; answers 502 to the first ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        super().__init__(sites=list(SITES))
        self.requests = 0
        self.fail_first = fail_first


class _CountingHandler(_Handler):
    state: CountingState

    def _count(self) -> bool:
        with self.state.lock:
            self.state.requests += 1
            failing = self.state.requests <= self.state.fail_first
        if failing:
            self._reply(502, {"detail": "bad gateway"})
        return not failing

    def do_GET(self) -> None:
        if self._count():
            super().do_GET()

    def do_POST(self) -> None:
        if self._count():
            super().do_POST()


def _serve(state: CountingState) -> tuple[ThreadingHTTPServer, County]:
    handler = type("Handler", (_CountingHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, County(f"http://127.0.0.1:{server.server_address[1]}", state)


@pytest.fixture
def replicas() -> Iterator[list[County]]:
    servers = [_serve(CountingState()) for _ in range(2)]
    try:
        yield [county for _, county in servers]
    finally:
        for server, _ in servers:
            server.shutdown()
            server.server_close()


def _requests(county: County) -> int:
    state = county.state
    assert isinstance(state, CountingState)
    return state.requests


def test_a_dead_replica_is_passed_over_at_once_and_the_live_one_kept(
    replicas: list[County],
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    live = replicas[0]
    client = CountyClient(f"{dead}, {live.url}/", "gw", "pw")
    try:
        started = time.monotonic()
        assert [s.code for s in client.config()] == ["TS01"]
        assert time.monotonic() - started < 2.0
        before = _requests(live)
        for _ in range(3):
            client.config()
        assert _requests(live) == before + 3  # straight to the live one, no more detours
    finally:
        client.close()


def test_a_failing_replica_fails_over_and_the_client_stays(replicas: list[County]) -> None:
    first, second = replicas
    client = CountyClient(f"{first.url},{second.url}", "gw", "pw")
    try:
        client.config()
        assert _requests(first) == 2 and _requests(second) == 0  # log-in, configuration
        first.state.down = True  # answers 503
        client.config()
        assert _requests(second) == 1
        first.state.down = False  # back, but the client keeps the one that answered
        client.config()
        assert _requests(first) == 3 and _requests(second) == 2
    finally:
        client.close()


def test_unavailable_only_when_every_url_fails(replicas: list[County]) -> None:
    for county in replicas:
        county.state.down = True
    client = CountyClient(",".join(c.url for c in replicas), "gw", "pw")
    try:
        with pytest.raises(CountyUnavailable) as failed:
            client.config()
        assert all(c.url in str(failed.value) for c in replicas)
        replicas[1].state.down = False
        assert [s.code for s in client.config()] == ["TS01"]
    finally:
        client.close()


def test_one_url_is_tried_again_at_once() -> None:
    """A load balancer whose replica just died answers 502 once; the retry reaches a live one."""
    server, county = _serve(CountingState(fail_first=1))
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
