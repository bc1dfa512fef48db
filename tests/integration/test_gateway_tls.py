"""Transport security with certificates made here (trustme): DICOM TLS into the gateway
(pynetdicom and dcmtk as the SCU, client certificates, plain DICOM on the TLS port, acceptor
processes) and HTTPS from the gateway to the county API (trusted CA, untrusted certificate,
the explicit insecure switch)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import ValidationError
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from gateway import status
from gateway.config import GatewaySettings
from gateway.errors import GatewayError
from gateway.ops import format_status, spool_status
from gateway.outbox import ANNOUNCED, UPLOADED
from gateway.service import Gateway
from gateway.transport import server_tls_context
from tests.dicom_factory import make_ct, write
from tests.integration.test_gateway_support import CountyHandler, CountyState, SwitchableStore

CALLING = "CT_TS01"
CT = "1.2.840.10008.5.1.4.1.1.2"


@dataclass
class Pki:
    """A CA, the gateway's server certificate, a modality's client certificate, and a
    client certificate from a CA the gateway does not trust; all PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path
    rogue_ca: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, rogue = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("ct-ts01.township.example")
    stranger = rogue.issue_cert("ct-ts01.township.example")
    files = {
        "ca": ca.cert_pem,
        "server_cert": server.cert_chain_pems[0],
        "server_key": server.private_key_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
        "rogue_cert": stranger.cert_chain_pems[0],
        "rogue_key": stranger.private_key_pem,
        "rogue_ca": rogue.cert_pem,
    }
    paths = {}
    for name, blob in files.items():
        path = d / f"{name}.pem"
        blob.write_to_path(str(path))
        paths[name] = path
    return Pki(**paths)


def client_context(pki: Pki, *, cert: str | None = "client") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        ctx.load_cert_chain(str(getattr(pki, f"{cert}_cert")), str(getattr(pki, f"{cert}_key")))
    return ctx


@pytest.fixture
def make_gateway(tmp_path: Path, pki: Pki) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def make(**overrides: Any) -> Gateway:
        values: dict[str, Any] = {
            "ae_title": "TELEREAD",
            "host": "127.0.0.1",
            "port": 0,
            "tls_port": 0,
            "tls_cert": pki.server_cert,
            "tls_key": pki.server_key,
            "tls_ca": pki.ca,
            "spool_dir": tmp_path / "spool",
            "api_url": "http://127.0.0.1:9",
            "spool_min_free_bytes": 0,
            "network_timeout_seconds": 5.0,
            "workers": 1,
        }
        values.update(overrides)
        gw = Gateway(
            settings=GatewaySettings(**values),
            store=SwitchableStore(tmp_path / "store"),
            sites={CALLING: "TS01"},
        )
        gw.start(forward=False)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


def _store(port: int | None, ds: Dataset, tls: ssl.SSLContext | None) -> int | None:
    """C-STORE ``ds``; its status, or None when no association was made."""
    assert port is not None
    ae = AE(ae_title=CALLING)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 10
    ae.add_requested_context(CT, [ExplicitVRLittleEndian])
    tls_args = (tls, "127.0.0.1") if tls is not None else None
    assoc = ae.associate("127.0.0.1", port, ae_title="TELEREAD", tls_args=tls_args)
    if not assoc.is_established:
        return None
    try:
        rsp = assoc.send_c_store(ds)
        return int(rsp.Status) if "Status" in rsp else None
    finally:
        assoc.release()


def _echo(port: int | None, tls: ssl.SSLContext | None) -> bool:
    assert port is not None
    ae = AE(ae_title=CALLING)
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context("1.2.840.10008.1.1")
    tls_args = (tls, "127.0.0.1") if tls is not None else None
    assoc = ae.associate("127.0.0.1", port, ae_title="TELEREAD", tls_args=tls_args)
    if not assoc.is_established:
        return False
    try:
        return int(assoc.send_c_echo().Status) == status.SUCCESS
    finally:
        assoc.release()


def _rows(gw: Gateway) -> int:
    return int(gw.spool.outbox.query("SELECT COUNT(*) FROM outbox")[0][0])


# --- DICOM TLS ------------------------------------------------------------------------------


def test_pynetdicom_stores_over_tls_with_a_client_certificate(
    make_gateway: Callable[..., Gateway], pki: Pki
) -> None:
    gw = make_gateway(tls_require_client_cert=True)
    assert gw.tls_port and gw.tls_port != gw.port
    ds = make_ct()
    assert _store(gw.tls_port, ds, client_context(pki)) == status.SUCCESS
    assert gw.spool.outbox.query("SELECT sop_instance_uid FROM outbox")[0][0] == ds.SOPInstanceUID
    assert _echo(gw.port, None)  # the plain port still serves


def test_untrusted_or_missing_client_certificate_refused(
    make_gateway: Callable[..., Gateway], pki: Pki
) -> None:
    gw = make_gateway(tls_require_client_cert=True)
    assert _store(gw.tls_port, make_ct(), client_context(pki, cert="rogue")) is None
    assert _store(gw.tls_port, make_ct(), client_context(pki, cert=None)) is None
    untrusting = ssl.create_default_context(cafile=str(pki.rogue_ca))  # we distrust it
    assert _store(gw.tls_port, make_ct(), untrusting) is None
    assert _rows(gw) == 0
    assert _store(gw.tls_port, make_ct(), client_context(pki)) == status.SUCCESS


def test_client_certificate_optional_unless_required(
    make_gateway: Callable[..., Gateway], pki: Pki
) -> None:
    gw = make_gateway()  # tls_ca set, certificates checked when offered
    assert _store(gw.tls_port, make_ct(), client_context(pki, cert=None)) == status.SUCCESS
    assert _store(gw.tls_port, make_ct(), client_context(pki, cert="rogue")) is None


def test_plain_dicom_on_the_tls_port_fails_cleanly(
    make_gateway: Callable[..., Gateway], pki: Pki
) -> None:
    gw = make_gateway(tls_require_client_cert=True)
    started = time.monotonic()
    assert _store(gw.tls_port, make_ct(), None) is None
    assert time.monotonic() - started < 8.0
    assert _echo(gw.tls_port, client_context(pki))
    assert _echo(gw.port, None)
    assert _rows(gw) == 0


def test_a_silent_client_does_not_block_tls_handshakes(
    make_gateway: Callable[..., Gateway], pki: Pki
) -> None:
    """pynetdicom's own server shakes hands in its accept loop: one connection that sends
    nothing would stop every TLS association behind it."""
    gw = make_gateway()
    with socket.create_connection(("127.0.0.1", gw.tls_port), timeout=5):
        started = time.monotonic()
        assert _echo(gw.tls_port, client_context(pki))
        assert time.monotonic() - started < 5.0


def test_tls_with_acceptor_processes(make_gateway: Callable[..., Gateway], pki: Pki) -> None:
    gw = make_gateway(workers=2, tls_require_client_cert=True)
    assert gw.pool is not None and gw.tls_port
    statuses = [_store(gw.tls_port, make_ct(), client_context(pki)) for _ in range(3)]
    assert statuses == [status.SUCCESS] * 3
    assert _store(gw.tls_port, make_ct(), client_context(pki, cert="rogue")) is None
    assert _store(gw.tls_port, make_ct(), None) is None  # plain DICOM on the TLS port
    assert _echo(gw.port, None)
    assert _rows(gw) == 3


def test_teleread_send_over_tls(
    make_gateway: Callable[..., Gateway], pki: Pki, tmp_path: Path
) -> None:
    from teleread.send import client_tls_context, send_paths

    gw = make_gateway(tls_require_client_cert=True)
    folder = tmp_path / "send"
    for i in range(2):
        write(make_ct(instance_number=i + 1), folder / f"ct{i}.dcm")
    tls = client_tls_context(pki.ca, pki.client_cert, pki.client_key)
    assert gw.tls_port is not None
    result = send_paths(
        [folder], host="127.0.0.1", port=gw.tls_port, called_aet="TELEREAD",
        calling_aet=CALLING, tls=tls,
    )  # fmt: skip
    assert (result.sent, result.failed) == (2, 0), result.summary()
    refused = send_paths(
        [folder], host="127.0.0.1", port=gw.tls_port, called_aet="TELEREAD",
        calling_aet=CALLING, tls=client_tls_context(pki.ca), timeout=5.0,
    )  # fmt: skip
    assert refused.sent == 0 and refused.errors


@pytest.mark.dcmtk
@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed")
def test_dcmtk_storescu_over_tls(
    make_gateway: Callable[..., Gateway], pki: Pki, tmp_path: Path
) -> None:
    if (
        "OpenSSL"
        not in subprocess.run(
            ["storescu", "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    ):
        pytest.skip("this dcmtk was built without OpenSSL (no TLS)")
    gw = make_gateway(tls_require_client_cert=True)
    path = write(make_ct(), tmp_path / "send" / "ct.dcm")
    peer = ["127.0.0.1", str(gw.tls_port), str(path)]
    base = ["storescu", "-aet", CALLING, "-aec", "TELEREAD", "+cf", str(pki.ca)]
    env = {**os.environ, "TCP_NODELAY": "1"}
    ok = subprocess.run(
        [*base, "+tls", str(pki.client_key), str(pki.client_cert), *peer],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert _rows(gw) == 1
    refused = subprocess.run(
        [*base, "+tls", str(pki.rogue_key), str(pki.rogue_cert), *peer],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert _echo(gw.port, None)


def test_tls_settings_are_checked(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ValidationError, match="TLS_CERT"):
        GatewaySettings(tls_port=2762)
    with pytest.raises(ValidationError, match="TLS_CA"):
        GatewaySettings(
            tls_port=2762,
            tls_cert=pki.server_cert,
            tls_key=pki.server_key,
            tls_require_client_cert=True,
        )
    with pytest.raises(GatewayError, match="cannot load"):
        server_tls_context(tmp_path / "missing.pem", pki.server_key)
    ctx = server_tls_context(pki.server_cert, pki.server_key, ca=pki.ca)
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    assert GatewaySettings().tls_port is None  # off by default


# --- HTTPS to the county --------------------------------------------------------------------


@dataclass
class HttpsCounty:
    url: str
    state: CountyState


@pytest.fixture
def https_county(pki: Pki) -> Iterator[HttpsCounty]:
    """The gateway tests' small county API (test_gateway_support), served over HTTPS with a
    certificate from the test CA."""
    state = CountyState(sites=[{"code": "TS01", "name": "Township 1", "ae_titles": [CALLING]}])
    handler = type("Handler", (CountyHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpsCounty(f"https://127.0.0.1:{server.server_address[1]}", state)
    finally:
        server.shutdown()
        server.server_close()


def _wait(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _forwarding_gateway(tmp_path: Path, county: HttpsCounty, **overrides: Any) -> Gateway:
    settings = GatewaySettings(
        host="127.0.0.1",
        port=0,
        spool_dir=tmp_path / "spool",
        api_url=county.url,
        api_username="gw",
        api_password="pw",
        spool_min_free_bytes=0,
        announce_delay_seconds=0.05,
        backoff_initial_seconds=0.05,
        backoff_max_seconds=0.3,
        **overrides,
    )
    gw = Gateway(
        settings=settings, store=SwitchableStore(tmp_path / "store"), sites={CALLING: "TS01"}
    )
    gw.start()
    return gw


def _state(gw: Gateway) -> tuple[str, int, str | None]:
    row = gw.spool.outbox.query("SELECT state, attempts, last_error FROM outbox")[0]
    return str(row[0]), int(row[1]), row[2]


def test_https_county_with_the_ca_bundle(
    tmp_path: Path, https_county: HttpsCounty, pki: Pki
) -> None:
    gw = _forwarding_gateway(tmp_path, https_county, api_ca_bundle=pki.ca)
    try:
        assert _store(gw.port, make_ct(), None) == status.SUCCESS
        _wait(lambda: _state(gw)[0] == ANNOUNCED)
        assert len(https_county.state.instances) == 1
    finally:
        gw.stop()


def test_untrusted_county_certificate_keeps_the_item_and_says_why(
    tmp_path: Path, https_county: HttpsCounty, pki: Pki
) -> None:
    gw = _forwarding_gateway(tmp_path, https_county)  # system CAs only: not ours
    try:
        ds = make_ct()
        assert _store(gw.port, ds, None) == status.SUCCESS
        _wait(lambda: _state(gw)[1] >= 2)  # retried, not dropped
        state, _, error = _state(gw)
        assert state == UPLOADED and "CERTIFICATE_VERIFY_FAILED" in (error or "")
        assert not https_county.state.instances
    finally:
        gw.stop()
    report = format_status(spool_status(tmp_path / "spool"))
    assert "certificate" in report and "TELEREAD_GATEWAY_API_CA_BUNDLE" in report
    assert spool_status(tmp_path / "spool")["pending"] == 1
    # trust the CA and start again: the kept item goes through
    gw = _forwarding_gateway(tmp_path, https_county, api_ca_bundle=pki.ca)
    try:
        _wait(lambda: _state(gw)[0] == ANNOUNCED)
        assert [i["sop_instance_uid"] for i in https_county.state.instances] == [ds.SOPInstanceUID]
    finally:
        gw.stop()


def test_insecure_switch_is_explicit_and_loud(
    tmp_path: Path, https_county: HttpsCounty, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway.county"):
        gw = _forwarding_gateway(tmp_path, https_county, api_tls_insecure_skip_verify=True)
    try:
        assert any("verification is OFF" in r.getMessage() for r in caplog.records)
        assert _store(gw.port, make_ct(), None) == status.SUCCESS
        _wait(lambda: _state(gw)[0] == ANNOUNCED)
    finally:
        gw.stop()
