"""The client address behind a reverse proxy: X-Forwarded-For is believed only from the
addresses in TELEREAD_API_TRUSTED_PROXIES, and only when it is an IP address (a real uvicorn
on 127.0.0.1; the audit trail records the address the API believed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from storage.filesystem import FilesystemStore
from teleread.services import ApiServer
from tests.processes import free_port
from viewer_api.main import create_app
from viewer_api.settings import ApiSettings
from worklist.db import make_engine, make_sessionmaker, upgrade
from worklist.models import AuditEvent

SECRET = "trusted-proxy-test-secret-0123456789abcdef"
FORWARDED = "203.0.113.7"  # a documentation address: the "real" client behind the proxy


def _logins_from_behind_a_proxy(tmp_path: Path, trusted: str, headers: list[str]) -> list[str]:
    """One refused log-in per X-Forwarded-For value; the client addresses they were audited
    with, in order."""
    url = f"sqlite:///{tmp_path / 'teleread.db'}"
    upgrade(url)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    app = create_app(
        session_factory=factory,
        store=FilesystemStore(tmp_path / "objects"),
        settings=ApiSettings(secret_key=SECRET, trusted_proxies=trusted),
    )
    port = free_port()
    server = ApiServer(app, host="127.0.0.1", port=port)
    server.start()
    try:
        for n, header in enumerate(headers):
            r = httpx.post(
                f"http://127.0.0.1:{port}/api/v1/auth/token",
                data={"username": f"nobody{n}", "password": "wrong-password"},
                headers={"X-Forwarded-For": header},
            )
            assert r.status_code == 401
        with factory() as session:
            addresses = session.scalars(select(AuditEvent.client_addr).order_by(AuditEvent.id))
            return list(addresses)
    finally:
        server.stop()
        engine.dispose()


@pytest.mark.parametrize(
    ("trusted", "audited"),
    [
        ("127.0.0.1", FORWARDED),  # the proxy on this machine: its header is believed
        ("10.0.0.0/8, 127.0.0.0/8", FORWARDED),  # networks too
        ("172.30.0.2", "127.0.0.1"),  # someone else is the proxy: the header is ignored
        ("", "127.0.0.1"),  # no proxy at all
    ],
)
def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    tmp_path: Path, trusted: str, audited: str
) -> None:
    assert _logins_from_behind_a_proxy(tmp_path, trusted, [FORWARDED]) == [audited]


def test_what_is_not_an_address_leaves_the_proxys_own(tmp_path: Path) -> None:
    """Even from a trusted proxy: markup, a name or a zone index is never the client."""
    junk = ["<script>alert(1)</script>", f"{FORWARDED}, <b>", "fe80::1%eth0", "county.example"]
    assert _logins_from_behind_a_proxy(tmp_path, "127.0.0.1", junk) == ["127.0.0.1"] * 4


@pytest.fixture(autouse=True)
def _no_uvicorn_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    yield
