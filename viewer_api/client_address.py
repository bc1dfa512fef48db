"""The client's address behind a reverse proxy: ``X-Forwarded-For`` (and ``-Proto``) believed
from the trusted proxies only (``TELEREAD_API_TRUSTED_PROXIES``), and only when it names an
IP address.

uvicorn's ``ProxyHeadersMiddleware`` does the reading: from a trusted peer it takes the
rightmost address of the header that is not itself a trusted proxy. It passes on whatever
text stands there, though (``<script>``, a host name, a 2 kB string), and that address goes
into the audit trail and keys the log-in throttle. ``ClientAddress`` runs it inside the app
(so every server and the test client see the same rule; ``ApiServer`` turns uvicorn's own
copy off) and keeps its answer only when it is an IP address, normalised (``::ffff:10.0.0.1``
is ``10.0.0.1``); otherwise the peer's address stands, as from an untrusted peer.
"""

from __future__ import annotations

import ipaddress
from typing import Any, cast

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

# where the peer's own address waits while uvicorn's middleware rewrites ``client``
_PEER = "teleread.peer"


def ip_address(text: str) -> str | None:
    """``text`` as a normalised IP address, or None: not an address (a zone index, as in
    ``fe80::1%eth0``, is refused too: free text)."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            return None
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
    return str(ip)


def parse_trusted_proxies(value: str) -> list[str]:
    """The entries of ``TELEREAD_API_TRUSTED_PROXIES``: addresses, networks (``10.0.0.0/8``)
    or ``*``; ``ValueError`` names the first that is none of those (uvicorn would take it
    as a literal host name and silently never match it)."""
    entries = [p.strip() for p in value.split(",") if p.strip()]
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"not an address or network: {entry!r}") from None
    return entries


class ClientAddress:
    """ASGI middleware: ``scope["client"]`` becomes the forwarded client's address when the
    peer is a trusted proxy and the header names an IP address; else it stays the peer's."""

    def __init__(self, app: ASGIApp, *, trusted_proxies: str) -> None:
        self.app = app
        entries = parse_trusted_proxies(trusted_proxies)
        # uvicorn types ASGI with its own TypedDicts, Starlette with plain mappings: the same
        # protocol, hence the casts
        forwarded = ProxyHeadersMiddleware(
            cast(Any, self._checked), trusted_hosts=["*"] if "*" in entries else entries
        )
        self._forwarded = cast(ASGIApp, forwarded)
        self._any = bool(entries)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope[_PEER] = scope.get("client")
        await self._forwarded(scope, receive, send)

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.pop(_PEER, None)
        client = scope.get("client")
        if client is not None and client != peer:
            address = ip_address(str(client[0]))
            scope["client"] = peer if address is None else (address, client[1])
        await self.app(scope, receive, send)


__all__ = ["ClientAddress", "ip_address", "parse_trusted_proxies"]
