"""The client address the API believes: ``X-Forwarded-For`` only from a trusted proxy and only
when it names an IP address; anything else leaves the peer's own address."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from viewer_api.client_address import ClientAddress, ip_address
from viewer_api.settings import ApiSettings

SECRET = "client-address-test-secret-0123456789abcdef"
PROXY = ("10.0.0.5", 51000)
STRANGER = ("198.51.100.20", 51000)


def believed(trusted: str, peer: tuple[str, int], *headers: tuple[str, str]) -> tuple[str, str]:
    """(client address, scheme) the app behind the middleware sees."""
    seen: dict[str, object] = {}

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        seen.update(scope)

    scope = {
        "type": "http",
        "scheme": "http",
        "client": peer,
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers],
    }
    asyncio.run(ClientAddress(app, trusted_proxies=trusted)(scope, None, None))  # type: ignore[arg-type]
    client = seen["client"]
    assert isinstance(client, tuple)
    return str(client[0]), str(seen["scheme"])


XFF = "X-Forwarded-For"


@pytest.mark.parametrize(
    ("trusted", "peer", "header", "client"),
    [
        ("10.0.0.5", PROXY, "203.0.113.7", "203.0.113.7"),
        ("10.0.0.0/8", PROXY, "203.0.113.7:4711", "203.0.113.7"),  # a port is dropped
        ("10.0.0.5", PROXY, "::ffff:203.0.113.7", "203.0.113.7"),
        ("10.0.0.5", PROXY, "2001:DB8::0:1", "2001:db8::1"),  # normalised
        # a chain: the rightmost hop that is not a trusted proxy
        ("10.0.0.0/8", PROXY, "198.51.100.1, 203.0.113.7, 10.0.0.9", "203.0.113.7"),
        # from a trusted proxy, what is not an address falls back to the proxy's own
        ("10.0.0.5", PROXY, "<script>alert(1)</script>", "10.0.0.5"),
        ("10.0.0.5", PROXY, "203.0.113.7, <script>", "10.0.0.5"),
        ("10.0.0.5", PROXY, "fe80::1%eth0", "10.0.0.5"),
        ("10.0.0.5", PROXY, "county.example", "10.0.0.5"),
        ("10.0.0.5", PROXY, "9" * 3000, "10.0.0.5"),
        # from anyone else the header changes nothing
        ("10.0.0.5", STRANGER, "203.0.113.7", "198.51.100.20"),
        ("", PROXY, "203.0.113.7", "10.0.0.5"),
        ("*", STRANGER, "203.0.113.7", "203.0.113.7"),
    ],
)
def test_forwarded_for(trusted: str, peer: tuple[str, int], header: str, client: str) -> None:
    assert believed(trusted, peer, (XFF, header))[0] == client


def test_forwarded_proto_from_a_trusted_proxy_only() -> None:
    proto = ("X-Forwarded-Proto", "https")
    assert believed("10.0.0.5", PROXY, proto) == ("10.0.0.5", "https")
    assert believed("10.0.0.5", STRANGER, proto) == ("198.51.100.20", "http")


def test_the_setting_takes_addresses_and_networks_only() -> None:
    ApiSettings(secret_key=SECRET, trusted_proxies="172.30.0.2, 10.0.0.0/8, ::1, *")
    with pytest.raises(ValidationError, match="county_proxy"):
        ApiSettings(secret_key=SECRET, trusted_proxies="172.30.0.2,county_proxy")
    assert ip_address(" 10.0.0.1 ") == "10.0.0.1" and ip_address("10.0.0.256") is None
