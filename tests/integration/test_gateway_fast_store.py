"""The fast C-STORE path (gateway.fastpath, taken in the DUL thread) against the path through
pynetdicom's DIMSE layer: same statuses, same spooled bytes, whatever the fragmentation; other
messages on the same association still reach pynetdicom; broken framing inside a fast message
aborts that association only."""

from __future__ import annotations

import struct
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway import status
from gateway.config import GatewaySettings
from gateway.service import Gateway
from storage import FilesystemStore
from tests.dicom_factory import make_ct, make_dx, write
from tests.unit.test_gateway_fastpath_pdata import store_rq

CALLING = "CT_TS01"


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def make(name: str, **overrides: Any) -> Gateway:
        settings = GatewaySettings(
            ae_title="TELEREAD",
            host="127.0.0.1",
            port=0,
            spool_dir=tmp_path / name / "spool",
            api_url="http://127.0.0.1:9",  # forwarding off: the county is never asked
            spool_min_free_bytes=0,
            workers=1,  # in this process: the test looks at its associations
            **overrides,
        )
        gw = Gateway(
            settings=settings,
            store=FilesystemStore(tmp_path / name / "store"),
            sites={CALLING: "TS01"},
        )
        gw.start(forward=False)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


def _fast_stores(gw: Gateway) -> int:
    assert gw.host is not None
    return sum(getattr(a.dul, "fast_stores", 0) for a in gw.host.active_associations)


def _associate(gw: Gateway, *datasets: Dataset) -> Any:
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(Verification)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="TELEREAD")
    assert assoc.is_established
    return assoc


def _spooled(gw: Gateway) -> dict[str, bytes]:
    rows = gw.spool.outbox.query("SELECT sop_instance_uid, path FROM outbox ORDER BY id")
    return {sop: gw.spool.read_at(path) for sop, path in rows}


def _datasets() -> list[Dataset]:
    with warnings.catch_warnings():  # pydicom rightly warns about the bad UID
        warnings.simplefilter("ignore")
        bad_uid = make_ct(SeriesInstanceUID="1.2.03.x")
    no_study = make_ct()
    del no_study.StudyInstanceUID
    implicit = make_ct()
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return [make_ct(), make_dx(), implicit, bad_uid, no_study]


@pytest.mark.parametrize("max_pdu", [0, 4096])
def test_fast_and_pynetdicom_paths_answer_and_spool_alike(
    make_gateway: Callable[..., Gateway], max_pdu: int
) -> None:
    fast = make_gateway("fast", max_pdu=max_pdu)
    slow = make_gateway("slow", max_pdu=max_pdu, fast_path="off")  # stock pynetdicom
    datasets = _datasets()
    answers: dict[str, list[int]] = {}
    comments: dict[str, list[str]] = {}
    for name, gw in (("fast", fast), ("slow", slow)):
        assoc = _associate(gw, *datasets)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                responses = [assoc.send_c_store(ds) for ds in datasets]
            answers[name] = [int(r.Status) for r in responses]
            comments[name] = [str(r.get("ErrorComment", "")) for r in responses]
            assert int(assoc.send_c_echo().Status) == status.SUCCESS
            answers[name + " fast"] = [_fast_stores(gw)]
        finally:
            assoc.release()
    assert answers["fast"] == answers["slow"]
    assert answers["fast"][:3] == [status.SUCCESS] * 3
    assert answers["fast"][3:] == [status.CANNOT_UNDERSTAND] * 2
    # a refusal says why, in the response's Error Comment, on both paths
    assert comments["fast"] == comments["slow"]
    assert comments["fast"][:3] == [""] * 3
    assert comments["fast"][3].startswith("SeriesInstanceUID missing or not a valid UID")
    assert comments["fast"][4] == "StudyInstanceUID missing or not a valid UID: ''"
    assert answers["fast fast"] == [len(datasets)] and answers["slow fast"] == [0]
    assert _spooled(fast) == _spooled(slow)  # byte for byte, file meta included
    assert len(_spooled(fast)) == 3


def test_bytes_as_sent_arrive_as_sent(
    make_gateway: Callable[..., Gateway], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dataset's bytes are spooled as they came off the wire, in 4 KiB fragments."""
    gw = make_gateway("gw", max_pdu=4096)
    ct = make_ct()
    path = write(ct, tmp_path / "ct.dcm")
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the file's bytes
    assoc = _associate(gw, ct)
    try:
        assert int(assoc.send_c_store(path).Status) == status.SUCCESS
        assert _fast_stores(gw) == 1
    finally:
        assoc.release()
    raw = path.read_bytes()
    (spooled,) = _spooled(gw).values()
    dataset_at = 132 + 12 + struct.unpack_from("<L", raw, 132 + 8)[0]
    assert spooled.endswith(raw[dataset_at:])


def _pdu(context_id: int, control: int, data: bytes) -> bytes:
    item = struct.pack(">LBB", len(data) + 2, context_id, control) + data
    return struct.pack(">BBL", 4, 0, len(item)) + item


def test_broken_framing_inside_a_fast_message_aborts_that_association(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway("gw")
    ct = make_ct()
    assoc = _associate(gw, ct)
    context_id = next(
        cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == ct.SOPClassUID
    )
    command = store_rq(sop=ct.SOPInstanceUID, sop_class=ct.SOPClassUID)
    sock = assoc.dul.socket.socket
    sock.sendall(_pdu(context_id, 0x03, command))  # a C-STORE-RQ: the fast path takes it
    sock.sendall(_pdu(context_id, 0x03, command))  # its command again, no dataset between
    end = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < end:
        time.sleep(0.02)
    assert assoc.is_aborted
    again = _associate(gw, ct)  # the gateway serves the next association as before
    try:
        assert int(again.send_c_echo().Status) == status.SUCCESS
        assert int(again.send_c_store(ct).Status) == status.SUCCESS
    finally:
        again.release()


def test_an_instance_over_the_size_cap_aborts_its_association_only(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway("gw", max_instance_bytes=64 * 1024)
    big, small = make_ct(rows=256, cols=256), make_ct(rows=64, cols=64)  # 128 KB, 8 KB pixels
    assoc = _associate(gw, big)
    assoc.send_c_store(big)
    end = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < end:
        time.sleep(0.02)
    assert assoc.is_aborted
    again = _associate(gw, small)
    try:
        assert int(again.send_c_store(small).Status) == status.SUCCESS
    finally:
        again.release()
    assert len(_spooled(gw)) == 1
