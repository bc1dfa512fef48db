"""The gateway's allow-list: which site an AE title belongs to, and where that site's
devices may call from (networks, TLS client certificates)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import trustme

from gateway.config import GatewaySettings, accepted_called_aes
from gateway.errors import GatewayError
from gateway.sites import SiteDirectory, certificate_sha256, split_table
from teleread.cli import main

CERT_A, CERT_B = "a" * 64, "b" * 64


def directory() -> SiteDirectory:
    return SiteDirectory(
        {"CT_TS01": "TS01", "CT_TS02": "TS02", "CT_TS03": "TS03"},
        devices={
            "TS01": {"networks": ["10.1.0.0/16", "2001:db8::/32"], "certificates": [CERT_A]},
            "TS02": {"certificates": [CERT_B]},
        },
    )


def test_an_unbound_site_is_accepted_from_anywhere() -> None:
    sites = directory()
    assert sites.device_refusal("TS03", address="192.0.2.7") is None
    assert sites.device_refusal("NOPE", address="192.0.2.7") is None


def test_a_bound_site_from_its_networks_or_with_its_certificate() -> None:
    sites = directory()
    for address in ("10.1.200.3", "::ffff:10.1.0.9", "2001:db8::5"):
        assert sites.device_refusal("TS01", address=address) is None, address
    assert "neither" in (sites.device_refusal("TS01", address="10.2.0.1") or "")
    assert sites.device_refusal("TS01", address="not an address") is not None
    assert sites.device_refusal("TS01", address="10.2.0.1", certificate_sha256=CERT_A) is None
    # only certificates: no address is enough
    assert sites.device_refusal("TS02", address="10.1.0.1") is not None
    assert sites.device_refusal("TS02", address="10.1.0.1", certificate_sha256=CERT_B) is None


def test_a_certificate_of_another_site_is_refused_even_from_the_right_network() -> None:
    sites = directory()
    reason = sites.device_refusal("TS01", address="10.1.0.1", certificate_sha256=CERT_B)
    assert reason is not None and "TS02" in reason
    assert sites.device_refusal("TS03", address="10.1.0.1", certificate_sha256=CERT_A)
    # an unregistered certificate changes nothing
    assert sites.device_refusal("TS03", address="10.1.0.1", certificate_sha256="c" * 64) is None


def test_an_unreadable_network_never_widens_a_site() -> None:
    sites = SiteDirectory({"CT_TS01": "TS01"}, devices={"TS01": {"networks": ["10.1.0.0/99"]}})
    assert sites.device_refusal("TS01", address="10.1.0.1") is not None


def test_the_table_round_trips_and_an_old_cache_still_reads() -> None:
    sites = directory()
    mapping, devices = split_table(json.loads(json.dumps(sites.table())))
    again = SiteDirectory(mapping, devices=devices)
    assert again.table() == sites.table()
    mapping, devices = split_table({"CT_TS01": "TS01"})  # a sites.json from before
    assert mapping == {"CT_TS01": "TS01"} and devices == {}


def test_accepted_called_ae_titles() -> None:
    settings = GatewaySettings(ae_title="Gw1", called_ae_titles=["other"])
    assert accepted_called_aes(settings) == {"GW1", "OTHER", "STROKE", "CHESTPAIN"}
    assert accepted_called_aes(GatewaySettings(accept_any_called_ae=True)) is None


def test_certificate_fingerprint(tmp_path: Path) -> None:
    cert = trustme.CA().issue_cert("ct-ts01.example")
    path = tmp_path / "ct.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(path))  # key first, then certs
    assert len(certificate_sha256(path)) == 64
    (tmp_path / "bad.pem").write_text("no certificate here")
    with pytest.raises(GatewayError):
        certificate_sha256(tmp_path / "bad.pem")


def test_sites_bind_and_unbind_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    data = str(tmp_path / "data")
    ca = trustme.CA()
    certs = []
    for name in ("ts07", "ts08"):
        path = tmp_path / f"{name}.pem"
        ca.issue_cert(f"ct-{name}.example").cert_chain_pems[0].write_to_path(str(path))
        certs.append(path)
    args = ["--data-dir", data]
    add = ["sites", "add", "TS07", "--name", "七号镇", "--ae", "CT_TS07", "--from", "10.7.0.9/24"]
    assert main([*add, "--cert", str(certs[0]), *args]) == 0
    out = capsys.readouterr().out
    assert "from 10.7.0.0/24" in out and "ts07.pem" in out
    assert main(["sites", "add", "TS08", "--name", "八号镇", "--ae", "CT_TS08", *args]) == 0
    assert "any address" in capsys.readouterr().out
    # a certificate belongs to one site; a network must be one
    assert main(["sites", "bind", "TS08", "--cert", str(certs[0]), *args]) == 1
    assert main(["sites", "bind", "TS08", "--from", "10.8.0.0/33", *args]) == 1
    assert "invalid network" in capsys.readouterr().err
    assert main(["sites", "bind", "TS08", "--cert", str(certs[1]), "--from", "::1", *args]) == 0
    assert "from ::1/128" in capsys.readouterr().out
    assert main(["sites", "list", *args]) == 0
    listed = capsys.readouterr().out
    assert "10.7.0.0/24" in listed and "::1/128" in listed
    # where its signed reports go as DICOM SR
    assert main(["sites", "set-pacs", "TS08", "PACS_TS08@10.8.0.5:104", *args]) == 0
    assert "reports' SRs to PACS_TS08@10.8.0.5:104" in capsys.readouterr().out
    assert main(["sites", "set-pacs", "TS08", "PACS@nowhere", *args]) == 1
    assert "not an AE@host:port" in capsys.readouterr().err
    fingerprint = certificate_sha256(certs[0])
    unbind = ["sites", "unbind", "TS07", "--from", "10.7.0.0/24", "--cert", fingerprint]
    assert main([*unbind, *args]) == 0
    assert "any address" in capsys.readouterr().out


def test_county_file_sites_may_name_their_networks(tmp_path: Path) -> None:
    from teleread.provision import load_spec

    path = tmp_path / "county.yaml"
    path.write_text("sites: [{code: TS01, name: x, networks: [10.1.2.3/24, '::1']}]")
    assert load_spec(path).sites[0].networks == ("10.1.2.0/24", "::1/128")


def test_refusals_are_kept_for_the_county_up_to_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway import outbox as outbox_module

    monkeypatch.setattr(outbox_module, "MAX_REFUSALS_KEPT", 2)
    box = outbox_module.Outbox(tmp_path / "outbox.db")
    try:
        for i in range(3):
            box.note_refusal({"calling_ae": f"AE{i}", "peer": "192.0.2.1", "reason": "r"})
        kept = box.pending_refusals()
        assert [r["calling_ae"] for r in kept] == ["AE0", "AE1"]
        assert box.counters()["associations_refused"] == 3  # all counted
        box.forget_refusals([int(kept[0]["id"])])
        assert [r["calling_ae"] for r in box.pending_refusals()] == ["AE1"]
    finally:
        box.close()
