"""Connections that never finish their request headers are closed.

uvicorn closes a keep-alive connection that stays idle between requests
(``timeout_keep_alive``), but a connection that sends nothing, or its request line and
headers a byte at a time, is kept forever: enough of them exhaust file descriptors and
memory. ``protocol_class(seconds)`` is uvicorn's own httptools protocol with one timer
added: armed when the connection opens and when a request begins, cleared when its headers
are complete; when it fires the connection is closed. A slow *body* is the business of
``viewer_api.limits.RequestGate`` (408 after ``body_idle_seconds`` of silence).

It overrides four callbacks of ``uvicorn.protocols.http.httptools_impl.HttpToolsProtocol``
(``connection_made``, ``connection_lost``, ``on_message_begin``, ``on_headers_complete``)
and reads its ``loop`` and ``transport``; ``tests/unit/test_slow_clients.py`` checks them on
the installed uvicorn. ``TELEREAD_API_HEADER_TIMEOUT_SECONDS=0`` serves with uvicorn's stock
protocol instead.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that closes a connection whose request line and headers are not
    complete ``header_timeout`` seconds after the connection opened or the request began."""

    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            logger.info(
                "connection closed: request headers not received in time",
                extra={"action": "http_header_timeout", "client": (self.client or ("", 0))[0]},
            )
            self.transport.close()


def protocol_class(header_timeout: float) -> type[asyncio.Protocol] | str:
    """What to pass as ``uvicorn.Config(http=...)``: the guarded protocol, or uvicorn's
    default (``"auto"``) when ``header_timeout`` is 0."""
    if header_timeout <= 0:
        return "auto"
    return type(
        "HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout}
    )


__all__ = ["HeaderTimeoutProtocol", "protocol_class"]
