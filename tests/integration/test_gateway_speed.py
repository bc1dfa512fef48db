"""Parallel associations into a gateway with acceptor processes (``workers`` > 1): every
instance stored, byte-identical, announced exactly once; the one-process path keeps working
with the same peers. Speed itself is measured by ``bench/ingest.py``, not here."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE

from gateway import status
from gateway.config import GatewaySettings
from gateway.outbox import ANNOUNCED
from gateway.service import Gateway
from storage.recompressed import original_of
from tests.dicom_factory import make_ct, part10_bytes, write
from tests.integration.test_gateway_support import (  # noqa: F401
    County,
    SwitchableStore,
    after_meta,
    county,
)

CALLING = "CT_TS01"


@pytest.fixture
def make_gateway(tmp_path: Path, county: County) -> Iterator[Callable[..., Gateway]]:  # noqa: F811
    started: list[Gateway] = []

    def make(**overrides: object) -> Gateway:
        settings = GatewaySettings(
            ae_title="TELEREAD",
            host="127.0.0.1",
            port=0,
            spool_dir=tmp_path / "spool",
            api_url=county.url,
            api_username="gw",
            api_password="pw",
            announce_delay_seconds=0.05,
            backoff_initial_seconds=0.05,
            backoff_max_seconds=0.5,
            spool_min_free_bytes=0,
            **overrides,
        )
        gw = Gateway(settings=settings, store=SwitchableStore(tmp_path / "store"))
        started.append(gw)
        gw.start()
        return gw

    yield make
    for gw in started:
        gw.stop()


def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _send(port: int, datasets: list[Dataset], out: list[int]) -> None:
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(datasets[0].SOPClassUID, [datasets[0].file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title="TELEREAD")
    assert assoc.is_established
    try:
        for ds in datasets:
            out.append(int(assoc.send_c_store(ds).Status))
    finally:
        assoc.release()


def _studies(n_assoc: int, per: int) -> list[list[Dataset]]:
    out = []
    for _ in range(n_assoc):
        study, series = generate_uid(), generate_uid()
        out.append(
            [
                make_ct(
                    study,
                    series_uid=series,
                    instance_number=i + 1,
                    study_description="腹部CT",
                    rows=32,
                    cols=32,
                )
                for i in range(per)
            ]
        )
    return out


def _check_all_arrived(gw: Gateway, county: County, batches: list[list[Dataset]]) -> None:  # noqa: F811
    total = sum(len(b) for b in batches)
    store: SwitchableStore = gw.store  # type: ignore[assignment]

    def announced() -> bool:
        rows = gw.spool.outbox.query("SELECT COUNT(*) FROM outbox WHERE state = ?", (ANNOUNCED,))
        return int(rows[0][0]) >= total

    _wait(announced)
    sops = [i["sop_instance_uid"] for i in county.state.instances]
    assert len(sops) == len(set(sops)) == total  # announced exactly once each
    for batch in batches:
        for ds in batch:
            key = f"TS01/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
            assert after_meta(original_of(store.get(key))) == after_meta(part10_bytes(ds))


def test_four_parallel_associations_into_acceptor_processes(
    make_gateway: Callable[..., Gateway],
    county: County,  # noqa: F811
) -> None:
    gw = make_gateway(workers=2)
    assert gw.pool is not None and gw.host is None
    batches = _studies(4, 15)
    results: list[list[int]] = [[] for _ in batches]
    threads = [
        threading.Thread(target=_send, args=(gw.port, batch, out))
        for batch, out in zip(batches, results, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r == [status.SUCCESS] * 15 for r in results), results
    _check_all_arrived(gw, county, batches)
    # the acceptors received; this process's forwarding ran niced, yielding the CPUs to them
    thread = gw.forwarder._thread
    assert thread is not None and thread.native_id is not None
    stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
    assert int(stat.rsplit(")", 1)[1].split()[16]) == gw.settings.forwarder_nice == 10


def test_a_killed_acceptor_process_is_replaced_and_rejects_an_unknown_calling_ae(
    make_gateway: Callable[..., Gateway],
    county: County,  # noqa: F811
) -> None:
    gw = make_gateway(workers=2)
    assert gw.pool is not None
    victim = gw.pool.pids()[0]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        assert gw.pool is not None
        return victim not in gw.pool.pids() and gw.pool.all_running()

    _wait(replaced)
    # the replacement knows the sites: an unknown calling AE is rejected, a known one stores
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="TELEREAD")
    assert assoc.is_rejected
    ok = AE(ae_title=CALLING)
    ok.add_requested_context("1.2.840.10008.1.1")
    assoc = ok.associate("127.0.0.1", gw.port, ae_title="TELEREAD")
    assert assoc.is_established
    assert int(assoc.send_c_echo().Status) == status.SUCCESS
    assoc.release()
    batches = _studies(2, 5)
    for batch in batches:
        out: list[int] = []
        _send(gw.port, batch, out)
        assert out == [status.SUCCESS] * 5
    _check_all_arrived(gw, county, batches)


@pytest.mark.dcmtk
@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed")
def test_parallel_storescu_peers_with_acceptor_processes(
    make_gateway: Callable[..., Gateway],
    county: County,  # noqa: F811
    tmp_path: Path,
) -> None:
    gw = make_gateway(workers=0)  # one per CPU
    batches = _studies(4, 10)
    procs = []
    for n, batch in enumerate(batches):
        folder = tmp_path / f"send{n}"
        folder.mkdir()
        for i, ds in enumerate(batch):
            write(ds, folder / f"{i}.dcm")
        procs.append(
            subprocess.Popen(
                [
                    *("storescu", "-aet", CALLING, "-aec", "TELEREAD", "+sd", "+r"),
                    *("127.0.0.1", str(gw.port), str(folder)),
                ],
                env={**os.environ, "TCP_NODELAY": "1"},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    for p in procs:
        output, _ = p.communicate(timeout=60)
        assert p.returncode == 0, output.decode(errors="replace")
    _check_all_arrived(gw, county, batches)
