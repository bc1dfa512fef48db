"""Hostile DICOM against the real gateway: hypothesis-generated C-STORE cases over raw
sockets and through pynetdicom as the SCU (the generators and checks live in
``fuzz/cstore.py``, whose command runs thousands). After every case the gateway must still
answer a C-ECHO on a fresh association, bad datasets get a named DIMSE failure status,
malformed PDUs end the association, no UID becomes a file name or object key, and no log
line carries the patient's name or ID."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from pydicom.uid import ExplicitVRLittleEndian

from fuzz.cstore import (
    BAD_UIDS,
    CT_STORAGE,
    VERIFICATION,
    Case,
    Harness,
    Peer,
    base,
    dataset_cases,
    echo,
    fresh_uid,
    fresh_uids,
    pdu_cases,
    replace_value,
    run_case_pynetdicom,
    running_gateway,
)
from gateway.transport import A_ABORT_INVALID_PDU

FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,  # the same cases on every CI run; fuzz/cstore.py explores more
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_gateway(tmp_path_factory.mktemp("fuzz"), network_timeout_seconds=2.0) as h:
        yield h
    assert h.trap.leaks() == [], "a log line carried the patient's name or ID"


@pytest.fixture(scope="module", params=["on", "off"])
def either_path(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Harness]:
    """The gateway on the fast path and on stock pynetdicom: the PDU-level hardening holds on
    both (the datasets' checks are the same function on both, ``test_gateway_fast_store.py``)."""
    with running_gateway(
        tmp_path_factory.mktemp("fuzz"), network_timeout_seconds=2.0, fast_path=request.param
    ) as h:
        yield h
    assert h.trap.leaks() == [], "a log line carried the patient's name or ID"


def _assert_clean(h: Harness, problems: list[str]) -> None:
    assert problems == [], problems
    assert h.trap.leaks() == []


@settings(FUZZ, max_examples=100)
@given(case=dataset_cases())
def test_bad_datasets_get_a_failure_status(harness: Harness, case: Case) -> None:
    _assert_clean(harness, harness.run(case))


@settings(FUZZ, max_examples=45)
@given(case=pdu_cases())
def test_malformed_pdus_end_the_association(either_path: Harness, case: Case) -> None:
    _assert_clean(either_path, either_path.run(case))


@settings(FUZZ, max_examples=30)
@given(case=dataset_cases().filter(lambda c: c.expect != "refused"))
def test_bad_datasets_from_pynetdicom(
    harness: Harness, case: Case, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("scu", numbered=True)
    _assert_clean(
        harness,
        harness.run(case, lambda c: run_case_pynetdicom(harness.host, harness.port, c, work)),
    )


@pytest.mark.parametrize("bad", BAD_UIDS)
def test_bad_uids_never_reach_a_path_or_key(harness: Harness, bad: str) -> None:
    b = base("ct", ExplicitVRLittleEndian)
    raw = bad.encode("latin-1", errors="replace")
    data = replace_value(b, 0x00080018, raw + b"\x00" * (len(raw) % 2))
    case = Case("bad_uid_both", "refused", command_sop_instance=bad, dataset=data)
    _assert_clean(harness, harness.run(case))
    rows = harness.rows()
    assert all(sop != bad for _, sop, _, _ in rows)


def test_valid_instance_still_stored(harness: Harness) -> None:
    b = base("dx", ExplicitVRLittleEndian)
    sop = fresh_uid()
    case = Case("valid", "success", ExplicitVRLittleEndian, b.sop_class, b.sop_class, sop)
    case.dataset = fresh_uids(b, sop)
    _assert_clean(harness, harness.run(case))
    assert any(row[1] == sop for row in harness.rows())


def test_declared_huge_pdu_is_refused_before_its_body(either_path: Harness) -> None:
    """pynetdicom alone would keep reading (and buffering) the 4 GiB it was promised."""
    peer = Peer(either_path.host, either_path.port, timeout=5.0)
    try:
        assert peer.associate([(1, CT_STORAGE, [ExplicitVRLittleEndian])])
        started = time.monotonic()
        peer.send(struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF) + b"\x00" * 1024)
        reply = peer.read_pdu()
        assert reply == (0x07, A_ABORT_INVALID_PDU[6:])  # A-ABORT, invalid PDU parameter
        assert time.monotonic() - started < 2.0
        assert peer.read_pdu() is None  # and the connection is closed
    finally:
        peer.close()
    assert echo(either_path.host, either_path.port)


def test_a_stalled_pdu_times_out(either_path: Harness) -> None:
    """Half a PDU, then silence: the association ends after network_timeout (2 s here)."""
    peer = Peer(either_path.host, either_path.port, timeout=15.0)
    try:
        assert peer.associate([(1, VERIFICATION, ["1.2.840.10008.1.2"])])
        peer.send(struct.pack(">BBL", 0x04, 0, 100) + b"\x00" * 10)
        started = time.monotonic()
        reply = peer.read_pdu()  # the gateway gives up; without a timeout it would wait forever
        assert reply is None or reply[0] == 0x07
        assert time.monotonic() - started < 10.0
    finally:
        peer.close()
    assert echo(either_path.host, either_path.port)


def test_garbage_connections_free_their_slot_at_once(tmp_path: Path) -> None:
    """A connection that sends garbage and hangs up must not hold one of the
    ``max_associations`` for ``acse_timeout`` (30 s here)."""
    with running_gateway(tmp_path, max_associations=2, acse_timeout_seconds=30.0) as h:
        for _ in range(6):
            with socket.create_connection((h.host, h.port), timeout=5) as s:
                s.sendall(b"\x01\x00\x00\x00\x00\x40" + b"GARBAGE")  # a short "A-ASSOCIATE-RQ"
                s.shutdown(socket.SHUT_WR)
                s.recv(64)
        time.sleep(0.3)
        started = time.monotonic()
        assert echo(h.host, h.port), "association slots still held by dead connections"
        assert time.monotonic() - started < 5.0


def test_unknown_sop_class_never_stored(harness: Harness) -> None:
    b = base("ct", ExplicitVRLittleEndian)
    sop, unknown = fresh_uid(), "1.2.826.0.1.3680043.9.7433.99.1"
    data = replace_value(b, 0x00080016, unknown.encode(), fresh_uids(b, sop))
    case = Case("unknown_sop_class", "refused", command_sop_class=unknown, dataset=data)
    case.command_sop_instance = sop
    _assert_clean(harness, harness.run(case))
    # proposing it as a presentation context is refused at negotiation
    peer = Peer(harness.host, harness.port)
    try:
        accepted = peer.associate(
            [(1, unknown, [ExplicitVRLittleEndian]), (3, VERIFICATION, [ExplicitVRLittleEndian])]
        )
        assert accepted is not None and 1 not in accepted
    finally:
        peer.release()


def test_structure_check_on_pydicom_test_files() -> None:
    """Every well-formed file pydicom ships passes ``check_structure``; its truncated ones
    and the one whose Number of Frames is not a number (``1A``) do not."""
    import pydicom.data
    from pydicom import dcmread

    from gateway.errors import InvalidInstance
    from gateway.wellformed import check_structure

    refused, passed = set(), 0
    bundled = Path(pydicom.data.__file__).parent / "test_files"  # no download
    for path in sorted(bundled.glob("*.dcm")):
        raw = Path(path).read_bytes()
        if raw[128:132] != b"DICM" or raw[132:136] != b"\x02\x00\x00\x00":
            continue  # no preamble or no group length: not what a C-STORE carries
        try:
            ts = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        except Exception:
            continue
        group_length = struct.unpack_from("<L", raw, 140)[0]
        try:
            check_structure(raw[144 + group_length :], ts)
            passed += 1
        except InvalidInstance:
            refused.add(Path(path).name)
    assert refused == {"MR_truncated.dcm", "rtplan_truncated.dcm", "badVR.dcm"}
    assert passed > 50
