"""viewer_api.slow_clients on the installed uvicorn: a connection that sends nothing, or
its headers too slowly, is closed; a normal keep-alive client is not disturbed."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from viewer_api.slow_clients import HeaderTimeoutProtocol, protocol_class

TIMEOUT = 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server() -> Iterator[int]:
    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/", hello)])
    port = _free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", http=protocol_class(TIMEOUT)
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.02)
    try:
        yield port
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes ``sock`` within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_silent_and_slow_header_connections_are_closed(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as silent:
        assert _closed_within(silent, TIMEOUT + 5)
    with socket.create_connection(("127.0.0.1", server)) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert _closed_within(slow, TIMEOUT + 5)


def test_keep_alive_requests_are_served(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as sock:
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(5)
            data = b""
            while not data.endswith(b"hi"):
                data += sock.recv(1024)
            assert data.startswith(b"HTTP/1.1 200")
            time.sleep(TIMEOUT * 1.5)  # idle longer than the header timeout between requests


def test_zero_means_uvicorns_own_protocol() -> None:
    assert protocol_class(0) == "auto"
    made = protocol_class(3)
    assert isinstance(made, type) and issubclass(made, HeaderTimeoutProtocol)
    assert made.header_timeout == 3
