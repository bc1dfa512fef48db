"""A site's devices bound to where they call from: dcmtk's echoscu/storescu as the modality,
the real gateway, and the county's site list (a stand-in county, or the real API on a
SQLite database for the end-to-end case). A site with networks accepts its AE titles only
from them (or with one of its TLS client certificates); a certificate of another site is
refused; a site without either behaves as before; a called AE title that is not the
gateway's is refused."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvicorn

from gateway.config import GatewaySettings
from gateway.outbox import ANNOUNCED
from gateway.service import Gateway
from gateway.sites import certificate_sha256
from storage import FilesystemStore
from tests.dicom_factory import make_ct, write
from tests.integration.test_api_world import PASSWORDS, World, build_world
from tests.integration.test_gateway_support import (  # noqa: F401
    County,
    SwitchableStore,
    county,
)
from worklist import accounts
from worklist.audit import list_events
from worklist.db import make_engine, make_sessionmaker, utcnow

pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed"),
]

ELSEWHERE = "10.77.0.0/16"  # a township LAN the test's loopback connections are not from


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def echo(port: int, calling: str, called: str = "TELEREAD") -> subprocess.CompletedProcess[str]:
    return _run("echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(port))


def refused(run: subprocess.CompletedProcess[str], reason: str) -> bool:
    out = run.stdout + run.stderr
    return run.returncode != 0 and "Association Rejected" in out and reason in out


def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _rows(gw: Gateway) -> int:
    return int(gw.spool.outbox.query("SELECT COUNT(*) FROM outbox")[0][0])


@pytest.fixture
def make_gateway(tmp_path: Path, county: County) -> Iterator[Callable[..., Gateway]]:  # noqa: F811
    started: list[Gateway] = []

    def make(**overrides: Any) -> Gateway:
        values: dict[str, Any] = {
            "ae_title": "TELEREAD",
            "host": "127.0.0.1",
            "port": 0,
            "spool_dir": tmp_path / f"spool{len(started)}",
            "api_url": county.url,
            "api_username": "gw",
            "api_password": "pw",
            "spool_min_free_bytes": 0,
            "workers": 1,
        }
        values.update(overrides)
        gw = Gateway(settings=GatewaySettings(**values), store=SwitchableStore(tmp_path / "s"))
        gw.start(forward=False)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


def _bind(county: County, code: str, networks: list[str]) -> None:  # noqa: F811
    with county.state.lock:
        for site in county.state.sites:
            if site["code"] == code:
                site["networks"] = networks


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "acceptor-processes"])
def test_site_networks_bind_its_ae_titles(
    make_gateway: Callable[..., Gateway],
    county: County,  # noqa: F811
    workers: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with county.state.lock:
        county.state.sites.append({"code": "TS02", "name": "T2", "ae_titles": ["DR_TS02"]})
    _bind(county, "TS01", [ELSEWHERE])
    gw = make_gateway(workers=workers)
    caplog.set_level(logging.WARNING, logger="gateway.handlers")

    # TS01's AE title from an address outside TS01's networks: refused, and said so
    run = echo(gw.port, "CT_TS01")
    assert refused(run, "Calling AE Title Not Recognized"), run.stdout + run.stderr
    if workers == 1:  # an acceptor process logs in its own process
        [record] = [r for r in caplog.records if getattr(r, "action", "") == "association_rejected"]
        assert record.__dict__["calling_ae"] == "CT_TS01"
        assert record.__dict__["peer"] == "127.0.0.1"
        assert record.__dict__["site"] == "TS01"
        assert "network" in record.__dict__["reason"]
    # a site without networks is accepted from anywhere, as before
    assert echo(gw.port, "DR_TS02").returncode == 0
    # counted for `teleread gateway status` and /metrics, from any receiving process
    assert gw.spool.outbox.counters()["associations_refused"] == 1

    # the loopback network registered to TS01: stores at once (a refusal looks again first)
    _bind(county, "TS01", [ELSEWHERE, "127.0.0.0/8"])
    ct = write(make_ct(rows=32, cols=32), Path(gw.settings.spool_dir).parent / "ct.dcm")
    run = _run(
        "storescu", "-aet", "CT_TS01", "-aec", "TELEREAD", "127.0.0.1", str(gw.port), f"{ct}"
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert _rows(gw) == 1


def test_called_ae_title_checked(
    make_gateway: Callable[..., Gateway],
    county: County,  # noqa: F811
) -> None:
    gw = make_gateway(called_ae_titles=["TELEREAD_B"])
    run = echo(gw.port, "CT_TS01", "ANY-SCP")
    assert refused(run, "Called AE Title Not Recognized"), run.stdout + run.stderr
    for called in ("TELEREAD", "teleread", "STROKE", "CHESTPAIN", "TELEREAD_B"):
        assert echo(gw.port, "CT_TS01", called).returncode == 0, called
    gw.stop()
    anything = make_gateway(accept_any_called_ae=True)
    assert echo(anything.port, "CT_TS01", "ANY-SCP").returncode == 0


# -- DICOM TLS: a client certificate registered to its site --------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    blobs = {"ca": ca.cert_pem}
    server = ca.issue_cert("127.0.0.1", "localhost")
    blobs |= {"server_cert": server.cert_chain_pems[0], "server_key": server.private_key_pem}
    for name in ("ts01", "ts02"):
        cert = ca.issue_cert(f"ct-{name}.township.example")
        blobs |= {f"{name}_cert": cert.cert_chain_pems[0], f"{name}_key": cert.private_key_pem}
    paths = {}
    for name, blob in blobs.items():
        paths[name] = d / f"{name}.pem"
        blob.write_to_path(str(paths[name]))
    return paths


def test_tls_client_certificate_tied_to_its_site(
    make_gateway: Callable[..., Gateway],
    county: County,  # noqa: F811
    pki: dict[str, Path],
    tmp_path: Path,
) -> None:
    version = _run("storescu", "--version").stdout
    if "OpenSSL" not in version:
        pytest.skip("this dcmtk was built without OpenSSL (no TLS)")
    with county.state.lock:
        county.state.sites[:] = [
            {
                "code": "TS01",
                "name": "T1",
                "ae_titles": ["CT_TS01"],
                "networks": [ELSEWHERE],
                "certificates": [certificate_sha256(pki["ts01_cert"])],
            },
            {
                "code": "TS02",
                "name": "T2",
                "ae_titles": ["CT_TS02"],
                "certificates": [certificate_sha256(pki["ts02_cert"])],
            },
        ]
    gw = make_gateway(
        tls_port=0, tls_cert=pki["server_cert"], tls_key=pki["server_key"], tls_ca=pki["ca"]
    )
    ct = write(make_ct(rows=32, cols=32), tmp_path / "ct.dcm")

    def store(calling: str, cert: str) -> subprocess.CompletedProcess[str]:
        return _run(
            *("storescu", "-aet", calling, "-aec", "TELEREAD", "+cf", str(pki["ca"])),
            *("+tls", str(pki[f"{cert}_key"]), str(pki[f"{cert}_cert"])),
            *("127.0.0.1", str(gw.tls_port), str(ct)),
        )

    # TS01's own certificate: accepted from an address outside its networks
    run = store("CT_TS01", "ts01")
    assert run.returncode == 0, run.stdout + run.stderr
    assert _rows(gw) == 1
    # without it (plain DICOM from the same address): refused
    assert refused(echo(gw.port, "CT_TS01"), "Calling AE Title Not Recognized")
    # TS02's certificate with TS01's AE title: refused, whatever TS01's networks say
    run = store("CT_TS01", "ts02")
    assert refused(run, "Calling AE Title Not Recognized"), run.stdout + run.stderr
    assert _rows(gw) == 1


# -- end to end: `teleread sites bind` on the county's database -> API -> gateway -------------


@pytest.fixture
def world(sqlite_template: Path, tmp_path: Path) -> Iterator[World]:
    path = tmp_path / "teleread.db"
    shutil.copyfile(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    try:
        yield from build_world(make_sessionmaker(engine), tmp_path)
    finally:
        engine.dispose()


@pytest.fixture
def api_url(world: World) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(world.client.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait(lambda: server.started, 20)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_bound_site_from_the_county_database(world: World, api_url: str, tmp_path: Path) -> None:
    with world.factory.begin() as session:
        accounts.bind_site_devices(session=session, code="TS01", networks=[ELSEWHERE], now=utcnow())
    config = world.get("gw_all", "/api/v1/gateway/config").json()
    ts01 = next(s for s in config["sites"] if s["code"] == "TS01")
    assert ts01["networks"] == [ELSEWHERE] and ts01["certificates"] == []
    settings = GatewaySettings(
        ae_title="TELEREAD",
        host="127.0.0.1",
        port=0,
        spool_dir=tmp_path / "spool",
        api_url=api_url,
        api_username="gw_all",
        api_password=PASSWORDS["gw_all"],
        announce_delay_seconds=0.05,
        spool_min_free_bytes=0,
        status_report_seconds=0.2,
        workers=1,
    )
    gw = Gateway(settings=settings, store=FilesystemStore(tmp_path / "objects"))
    gw.start()
    try:
        ct = make_ct(rows=32, cols=32)
        path = write(ct, tmp_path / "ct.dcm")
        send = ("storescu", "-aet", "CT_TS01", "-aec", "TELEREAD", "127.0.0.1", str(gw.port))
        run = _run(*send, str(path))
        assert refused(run, "Calling AE Title Not Recognized"), run.stdout + run.stderr

        # the refusal reaches the county's audit trail with the gateway's next status report
        def audited() -> list[Any]:
            with world.factory() as session:
                return list(list_events(session=session, action="association_refused"))

        _wait(lambda: bool(audited()))
        [event] = audited()
        assert (event.username, event.outcome, event.object_id) == ("gw_all", "refused", "TS01")
        assert event.detail is not None
        assert (event.detail["calling_ae"], event.detail["peer"]) == ("CT_TS01", "127.0.0.1")
        assert "network" in event.detail["reason"]
        # the gateway forgets a refusal once the county has answered its status report, which
        # is just after the audit row above is committed
        _wait(lambda: not gw.spool.outbox.pending_refusals())
        with world.factory.begin() as session:
            accounts.bind_site_devices(
                session=session, code="TS01", networks=["127.0.0.1"], now=utcnow()
            )
        run = _run(*send, str(path))
        assert run.returncode == 0, run.stdout + run.stderr

        def announced() -> bool:
            rows = gw.spool.outbox.query("SELECT state FROM outbox")
            return bool(rows) and rows[0][0] == ANNOUNCED

        _wait(announced)
        detail = world.get("dr_li", f"/api/v1/studies/{ct.StudyInstanceUID}")
        assert detail.status_code == 200 and detail.json()["site"] == "TS01"
    finally:
        gw.stop()
