"""The gateway on both paths, ``TELEREAD_GATEWAY_FAST_PATH=on`` (pynetdicom's internals copied,
``gateway.fastpath``) and ``off`` (stock pynetdicom): C-STORE from dcmtk, MPPS, hostile PDUs
(and the fuzz set's malformed PDUs, ``test_gateway_fuzz.py``, on both too), the message size cap,
DICOM TLS, a kill -9 soak, and idle or half-sent connections that must not block intake. Then
what the switch does when another pynetdicom is installed (simulated through the version
check's seam). A site added while ``teleread serve`` runs with acceptor processes is in
``tests/acceptance/test_end_to_end.py``."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pynetdicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from fuzz.cstore import CT_STORAGE, Peer, associate_rq, c_store_rq, echo, pdata
from gateway import fastpath, mpps, status
from gateway.config import GatewaySettings
from gateway.errors import GatewayError
from gateway.ops import format_status, spool_status
from gateway.service import Gateway
from gateway.transport import A_ABORT_INVALID_PDU, GatewayRequestHandler
from storage import FilesystemStore
from tests.dicom_factory import make_ct, make_dx, write
from tests.integration.test_gateway_durability import GatewayProcess, run_county, run_soak
from tests.integration.test_gateway_support import after_meta, free_port
from tests.integration.test_gateway_tls import Pki, client_context, pki  # noqa: F401

CALLING = "CT_TS01"
DCMTK = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed")
NODELAY = {**os.environ, "TCP_NODELAY": "1"}


@pytest.fixture(params=["on", "off"])
def fast_path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_gateway(tmp_path: Path, fast_path: str) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def make(**overrides: Any) -> Gateway:
        values: dict[str, Any] = {
            "ae_title": "TELEREAD",
            "host": "127.0.0.1",
            "port": 0,
            "spool_dir": tmp_path / f"spool{len(started)}",
            "api_url": "http://127.0.0.1:9",  # forwarding off: the county is never asked
            "spool_min_free_bytes": 0,
            "network_timeout_seconds": 5.0,
            "workers": 1,
            "fast_path": fast_path,
            **overrides,
        }
        gw = Gateway(
            settings=GatewaySettings(**values),
            store=FilesystemStore(tmp_path / "store"),
            sites={CALLING: "TS01"},
        )
        gw.start(forward=False)
        started.append(gw)
        assert gw.path is not None and gw.path.mode == ("fast" if fast_path == "on" else "stock")
        return gw

    yield make
    for gw in started:
        gw.stop()


def _spooled_datasets(gw: Gateway) -> dict[str, bytes]:
    rows = gw.spool.outbox.query("SELECT sop_instance_uid, path FROM outbox")
    return {sop: after_meta(gw.spool.read_at(path)) for sop, path in rows}


def _storescu(port: int, files: list[Path], *, calling: str = CALLING) -> None:
    subprocess.run(
        ["storescu", "-aet", calling, "-aec", "TELEREAD", "127.0.0.1", str(port)]
        + [str(f) for f in files],
        env=NODELAY,
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.dcmtk
@DCMTK
def test_storescu_ct_and_dx_spooled_as_sent(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = make_gateway()
    datasets = [make_ct(instance_number=i + 1) for i in range(3)] + [make_dx()]
    files = [write(ds, tmp_path / "send" / f"{i}.dcm") for i, ds in enumerate(datasets)]
    _storescu(gw.port, files)
    spooled = _spooled_datasets(gw)
    for ds, path in zip(datasets, files, strict=True):
        assert spooled[ds.SOPInstanceUID] == after_meta(path.read_bytes())


def _mpps_create(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    step = Dataset()
    step.StudyInstanceUID = study_uid
    ds.ScheduledStepAttributesSequence = [step]
    return ds


def _mpps_completed(series_uid: str, sops: list[str]) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    refs = []
    for sop in sops:
        ref = Dataset()
        ref.ReferencedSOPClassUID = CT_STORAGE
        ref.ReferencedSOPInstanceUID = sop
        refs.append(ref)
    series.ReferencedImageSequence = refs
    ds.PerformedSeriesSequence = [series]
    return ds


def test_mpps_in_progress_then_completed(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway()
    study, series = generate_uid(), generate_uid()
    cts = [make_ct(study, series_uid=series, instance_number=i + 1) for i in range(2)]
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(mpps.MPPS_SOP_CLASS)
    ae.add_requested_context(CT_STORAGE, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="TELEREAD")
    assert assoc.is_established
    try:
        pps = generate_uid()
        st, _ = assoc.send_n_create(_mpps_create(study), mpps.MPPS_SOP_CLASS, pps)
        assert int(st.Status) == mpps.SUCCESS
        assert [int(assoc.send_c_store(ds).Status) for ds in cts] == [status.SUCCESS] * 2
        done = _mpps_completed(series, [ds.SOPInstanceUID for ds in cts])
        st, _ = assoc.send_n_set(done, mpps.MPPS_SOP_CLASS, pps)
        assert int(st.Status) == mpps.SUCCESS
        st, _ = assoc.send_n_set(done, mpps.MPPS_SOP_CLASS, pps)  # may no longer be updated
        assert int(st.Status) == mpps.PROCESSING_FAILURE
    finally:
        assoc.release()
    step = gw.mpps.get(pps)
    assert step is not None and step["status"] == "COMPLETED"
    assert sorted(gw.mpps.instances_of(pps)) == sorted(ds.SOPInstanceUID for ds in cts)


def _abort_expected(peer: Peer) -> None:
    started = time.monotonic()
    assert peer.read_pdu() == (0x07, A_ABORT_INVALID_PDU[6:])  # A-ABORT, invalid parameter
    assert time.monotonic() - started < 3.0
    assert peer.read_pdu() is None  # and the connection is closed


def test_hostile_pdus_and_the_size_cap(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(max_instance_bytes=64 * 1024)
    host, port = "127.0.0.1", gw.port
    # a P-DATA-TF declaring 4 GiB: refused before its body
    peer = Peer(host, port, timeout=5.0)
    try:
        assert peer.associate([(1, CT_STORAGE, [ExplicitVRLittleEndian])])
        peer.send(struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF) + b"\x00" * 1024)
        _abort_expected(peer)
    finally:
        peer.close()
    # an A-ASSOCIATE-RQ pynetdicom would crash on (an even presentation context ID)
    peer = Peer(host, port, timeout=5.0)
    try:
        peer.send(associate_rq([(2, CT_STORAGE, [ExplicitVRLittleEndian])]))
        _abort_expected(peer)
    finally:
        peer.close()
    # a first PDU that is not an A-ASSOCIATE-RQ
    peer = Peer(host, port, timeout=5.0)
    try:
        peer.send(struct.pack(">BBL", 0x04, 0, 8) + b"\x00" * 8)
        _abort_expected(peer)
    finally:
        peer.close()
    # a C-STORE over max_instance_bytes aborts its association only
    big = make_ct(rows=256, cols=256)  # 128 KB of pixels
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(CT_STORAGE, [ExplicitVRLittleEndian])
    assoc = ae.associate(host, port, ae_title="TELEREAD")
    assert assoc.is_established
    assoc.send_c_store(big)
    end = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < end:
        time.sleep(0.02)
    assert assoc.is_aborted
    assert echo(host, port)
    assert _spooled_datasets(gw) == {}


def test_dicom_tls(make_gateway: Callable[..., Gateway], pki: Pki) -> None:  # noqa: F811
    gw = make_gateway(
        tls_port=0,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_ca=pki.ca,
        tls_require_client_cert=True,
    )
    assert gw.tls_port
    ds = make_ct()
    for context, expected in (
        (client_context(pki), True),
        (client_context(pki, cert="rogue"), False),
    ):
        ae = AE(ae_title=CALLING)
        ae.add_requested_context(CT_STORAGE, [ExplicitVRLittleEndian])
        tls_args = (context, "127.0.0.1")
        assoc = ae.associate("127.0.0.1", gw.tls_port, ae_title="TELEREAD", tls_args=tls_args)
        assert assoc.is_established == expected
        if expected:
            assert int(assoc.send_c_store(ds).Status) == status.SUCCESS
            assoc.release()
    assert list(_spooled_datasets(gw)) == [ds.SOPInstanceUID]


@pytest.mark.dcmtk
@DCMTK
def test_kill_9_soak_on_stock_pynetdicom(tmp_path: Path) -> None:
    """``test_gateway_durability.py``'s soak runs the default (the fast path); this one the
    stock path, shorter."""
    result = run_soak(tmp_path, instances=30, kills=1, env={"TELEREAD_GATEWAY_FAST_PATH": "off"})
    assert result.problems == [] and result.kills == 1
    assert result.succeeded == result.stored_ok == result.announced_once == 30


def _hold(port: int, idle: int, half: int) -> list[socket.socket]:
    """``idle`` connections that send nothing and ``half`` that send half a PDU."""
    held = []
    for _ in range(idle):
        held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    rq = associate_rq([(1, CT_STORAGE, [ExplicitVRLittleEndian])], calling=CALLING)
    for i in range(half):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(rq[: 3 + i % (len(rq) - 3)])  # from a bare header to all but the last bytes
        held.append(s)
    return held


@pytest.mark.dcmtk
@DCMTK
@pytest.mark.parametrize("fast_path", ["on"])  # held by gateway.intake, before either path
def test_idle_and_half_sent_connections_do_not_block_intake(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    """100 idle TCP connections and 20 half-sent PDUs held open: a modality's study still
    goes in at once (they hold no association slot; they are closed after the request
    timeout), with acceptor processes as installed on a multi-core machine. The connections
    wait in ``gateway.intake`` until a whole A-ASSOCIATE-RQ is in, before either DICOM path
    sees them: the stock path's storing is ``test_storescu_ct_and_dx_spooled_as_sent``."""
    gw = make_gateway(workers=2, association_request_timeout_seconds=2.0)
    files = [
        write(make_ct(instance_number=i + 1), tmp_path / "study" / f"{i}.dcm") for i in range(10)
    ]
    held = _hold(gw.port, 100, 20)
    try:
        started = time.monotonic()
        _storescu(gw.port, files)
        assert time.monotonic() - started < 5.0
        assert len(_spooled_datasets(gw)) == 10
        # they are all closed after the request timeout (2 s here), none ever served
        end = time.monotonic() + 20
        while time.monotonic() < end and gw.intake is not None and gw.intake.counts().waiting:
            time.sleep(0.1)
        assert gw.intake is not None and gw.intake.counts().waiting == 0
    finally:
        for s in held:
            s.close()


@pytest.mark.dcmtk
@DCMTK
def test_limits_per_source_address(make_gateway: Callable[..., Gateway]) -> None:
    """One address may hold ``max_associations_per_address`` associations: one more is
    rejected at once (A-ASSOCIATE-RJ, transient, local limit exceeded) and is accepted again
    when one ends. Of its waiting connections the oldest beyond ``max_pending_per_address``
    is closed, so the newest still gets its chance."""
    gw = make_gateway(max_associations_per_address=2, max_pending_per_address=3)
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(CT_STORAGE, [ExplicitVRLittleEndian])
    first, second = (ae.associate("127.0.0.1", gw.port, ae_title="TELEREAD") for _ in range(2))
    try:
        assert first.is_established and second.is_established
        # dcmtk as the third: a pynetdicom requestor may report a fast rejection as an abort
        # (its association thread checks the socket after the DUL thread has closed it)
        third = subprocess.run(
            ["echoscu", "-aet", CALLING, "-aec", "TELEREAD", "127.0.0.1", str(gw.port)],
            env=NODELAY,
            capture_output=True,
            text=True,
            timeout=30,
        )
        said = third.stdout + third.stderr
        assert third.returncode != 0
        assert "Rejected Transient" in said and "Local Limit Exceeded" in said, said
        first.release()
        _wait_for(lambda: gw.intake is None or gw.intake.counts().associations < 2, 20, "end")
        fourth = ae.associate("127.0.0.1", gw.port, ae_title="TELEREAD")
        assert fourth.is_established
        fourth.release()
    finally:
        second.release()
    idle = _hold(gw.port, 5, 0)
    try:
        # the two oldest are closed by the gateway (EOF), the three newest still wait
        for s in idle[:2]:
            assert s.recv(1) == b""
        _wait_for(
            lambda: gw.intake is not None and gw.intake.counts().waiting == 3, 20, "3 waiting"
        )
    finally:
        for s in idle:
            s.close()


# --- the switch -----------------------------------------------------------------------------


def test_another_pynetdicom_runs_stock_and_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing new installed: the version check's seam says 3.1.0. ``auto`` starts on stock
    pynetdicom, says so in the log and in the status, and stores; ``on`` refuses to start."""
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    assert fastpath.installed_pynetdicom() == "3.1.0"
    settings = GatewaySettings(
        host="127.0.0.1",
        port=0,
        spool_dir=tmp_path / "spool",
        api_url="http://127.0.0.1:9",
        spool_min_free_bytes=0,
        workers=1,
    )
    gw = Gateway(
        settings=settings, store=FilesystemStore(tmp_path / "store"), sites={CALLING: "TS01"}
    )
    with caplog.at_level("WARNING", logger="gateway.service"):
        gw.start(forward=False)
    try:
        assert gw.path is not None and not gw.path.fast
        assert gw.host is not None and gw.host.RequestHandlerClass is GatewayRequestHandler
        assert any(r.__dict__.get("action") == "fast_path_off" for r in caplog.records)
        ds = make_ct()
        ae = AE(ae_title=CALLING)
        ae.add_requested_context(CT_STORAGE, [ExplicitVRLittleEndian])
        assoc = ae.associate("127.0.0.1", gw.port, ae_title="TELEREAD")
        assert assoc.is_established
        assert int(assoc.send_c_store(ds).Status) == status.SUCCESS
        assoc.release()
        assert list(_spooled_datasets(gw)) == [ds.SOPInstanceUID]
        text = format_status(spool_status(settings.spool_dir))
        assert "fast path: stock" in text and "warning: fast path off" in text and "3.1.0" in text
    finally:
        gw.stop()
    strict = Gateway(
        settings=settings.model_copy(update={"fast_path": "on", "spool_dir": tmp_path / "s2"}),
        store=FilesystemStore(tmp_path / "store"),
        sites={CALLING: "TS01"},
    )
    with pytest.raises(GatewayError, match="needs pynetdicom"):
        strict.start(forward=False)
    strict.stop()


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --- large instances stream to the spool ----------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _big_ct(path: Path, frames: int) -> Dataset:
    ds = make_ct(rows=512, cols=512)
    ds.NumberOfFrames = frames
    ds.PixelData = bytes(frames * 512 * 512 * 2)
    write(ds, path)
    return ds


def _send_all(port: int, files: list[Path]) -> None:
    senders = [
        subprocess.Popen(
            ["storescu", "-aet", CALLING, "-aec", "TELEREAD", "127.0.0.1", str(port), str(f)],
            env=NODELAY,
        )
        for f in files
    ]
    assert all(p.wait(180) == 0 for p in senders)


@pytest.mark.dcmtk
@DCMTK
def test_large_instances_stream_to_the_spool(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    """Large instances in parallel: what was spooled is what was sent (the fast path streams
    past ``SPILL_BYTES`` to the spool file); a store cut off mid-dataset leaves no file."""
    gw = make_gateway(network_timeout_seconds=60.0)  # the default: a loaded machine is slow
    files = [tmp_path / f"big{i}.dcm" for i in range(3)]
    sent = [_big_ct(f, 24) for f in files]  # 12 MiB of pixels each
    _send_all(gw.port, files)
    spooled = _spooled_datasets(gw)
    for ds, path in zip(sent, files, strict=True):
        assert spooled[ds.SOPInstanceUID] == after_meta(path.read_bytes())
    # cut off: a connection that closes 8 MiB into a dataset (past the spill size)
    peer = Peer("127.0.0.1", gw.port, timeout=10.0)
    accepted = peer.associate([(1, CT_STORAGE, [ExplicitVRLittleEndian])])
    assert accepted
    sop = generate_uid()
    peer.send(pdata(1, 0x03, c_store_rq(CT_STORAGE, sop)))
    for _ in range(64):
        peer.send(pdata(1, 0x00, bytes(128 * 1024)))
    peer.close()
    end = time.monotonic() + 10
    while time.monotonic() < end and list(gw.spool.objects.glob(".tmp-*")):
        time.sleep(0.05)
    assert not list(gw.spool.objects.glob(".tmp-*"))
    assert sop not in _spooled_datasets(gw)


@pytest.mark.dcmtk
@DCMTK
def test_the_receiving_process_memory_stays_flat(tmp_path: Path) -> None:
    """Four parallel 32 MiB C-STOREs into ``python -m gateway`` receiving in its own process
    (forwarding on): its resident memory rises by far less than they weigh (holding them
    would take 128 MiB, twice that before streaming; ``bench/store_memory.py`` does 4 x 256
    MiB)."""
    files = [tmp_path / f"big{i}.dcm" for i in range(4)]
    for f in files:
        _big_ct(f, 64)  # 32 MiB of pixels each
    with run_county() as county:
        gw = GatewayProcess(
            spool=tmp_path / "spool",
            store=tmp_path / "store",
            county_url=county.url,
            port=free_port(),
            log=tmp_path / "gateway.log",
            env={"TELEREAD_GATEWAY_WORKERS": "1"},
        )
        try:
            gw.start()
            assert gw.proc is not None
            pid = gw.proc.pid
            time.sleep(0.5)
            before = peak = _rss_kib(pid)
            done = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, _rss_kib(pid))
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                _send_all(gw.port, files)
                time.sleep(0.5)  # the deferred header reads
            finally:
                done.set()
                sampler.join()
        finally:
            gw.terminate()
    assert (peak - before) / 1024 < 64, f"RSS rose {(peak - before) / 1024:.0f} MiB"


def test_the_first_association_is_accepted_as_soon_as_the_port_is_open(tmp_path: Path) -> None:
    """``python -m gateway`` with two acceptor processes and its site list from the county:
    the port listens only once they are ready and the list is read, so the first association
    after a TCP connect succeeds is accepted."""
    with run_county() as county:
        gw = GatewayProcess(
            spool=tmp_path / "spool",
            store=tmp_path / "store",
            county_url=county.url,
            port=free_port(),
            log=tmp_path / "gateway.log",
            env={"TELEREAD_GATEWAY_WORKERS": "2"},
        )
        try:
            gw.start()  # returns once a TCP connect succeeds
            ae = AE(ae_title=CALLING)
            ae.add_requested_context("1.2.840.10008.1.1")
            assoc = ae.associate("127.0.0.1", gw.port, ae_title="TELEREAD")
            assert assoc.is_established
            assert int(assoc.send_c_echo().Status) == status.SUCCESS
            assoc.release()
        finally:
            gw.terminate()
