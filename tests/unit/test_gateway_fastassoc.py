"""gateway.fastassoc copies pieces of pynetdicom 3.0.4: fail loudly when pynetdicom changes;
the hand-encoded C-STORE-RSP and file meta equal what pydicom / pynetdicom encode; a real
association through it stores, answers, releases and aborts, and idles without spinning."""

from __future__ import annotations

import hashlib
import inspect
import threading
import time
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pynetdicom
import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, encode, encode_file_meta
from pynetdicom.dul import DULServiceProvider
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from gateway.fastassoc import PYNETDICOM_VERSION, FastRequestHandler, encode_c_store_rsp
from gateway.part10 import PREAMBLE, StoreMeta, encode_meta, spool_info_of
from tests.dicom_factory import make_ct

# sha256 (first 16 hex digits) of the pynetdicom sources gateway.fastassoc copies or relies
# on; a new pynetdicom changes them: re-read the copies, then update these
PINNED_SOURCES: dict[Any, str] = {
    DULServiceProvider.run_reactor: "e3a10eb3a0931e48",
    DULServiceProvider.__init__: "c82dafa9438ddf70",
    Association._run_reactor: "f28838c5559e462a",
    Association.__init__: "eb07516b8009ad8f",
    Association.kill: "8f9713666a7f4cff",
    RequestHandler._create_association: "05c8d12b79863cdb",
    DIMSEServiceProvider.send_msg: "a839cf2fb46976d9",
    # gateway.fastpdata's path: the copied PDU reader, and what it stands in for
    DULServiceProvider._read_pdu_data: "19f2d4e38c13c835",
    StorageServiceClass.SCP: "63afca7fc6c6e7ee",
    Association._serve_request: "2f24c1759cdf6c8c",
}


def test_pynetdicom_is_the_copied_version() -> None:
    assert pynetdicom.__version__ == PYNETDICOM_VERSION
    for func, digest in PINNED_SOURCES.items():
        source = inspect.getsource(func).encode()
        assert hashlib.sha256(source).hexdigest()[:16] == digest, func.__qualname__


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC000, 0xB007])
@pytest.mark.parametrize("sop", ["1.2.3", "1.2.34"])  # odd and even lengths
def test_c_store_rsp_encoding_matches_pynetdicom(status: int, sop: str) -> None:
    rsp = C_STORE()
    rsp.MessageID = 7
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = CTImageStorage
    rsp.AffectedSOPInstanceUID = sop
    rsp.Status = status
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    expected = encode(msg.command_set, True, True)
    assert encode_c_store_rsp(CTImageStorage, 7, status, sop) == expected


def test_file_meta_encoding_matches_pydicom() -> None:
    sop = generate_uid()
    meta = StoreMeta(CTImageStorage, sop, ExplicitVRLittleEndian)
    raw = encode_meta(
        meta, calling_ae="CT_TS01", called_ae="STROKE", spool_info={"site": "TS01", "x": 1}
    )
    reference = create_file_meta(
        sop_class_uid=CTImageStorage, sop_instance_uid=sop, transfer_syntax=ExplicitVRLittleEndian
    )
    reference.SourceApplicationEntityTitle = "CT_TS01"
    # pynetdicom's elements, byte for byte, lead the group (after the group length)
    standard = encode_file_meta(reference)
    assert raw[12 : len(standard)] == standard[12:]
    read = dcmread(BytesIO(PREAMBLE + raw + b""), force=True).file_meta
    assert read.MediaStorageSOPInstanceUID == sop
    assert read.ReceivingApplicationEntityTitle == "STROKE"
    assert read.FileMetaInformationGroupLength == len(raw) - 12
    assert spool_info_of(read) == {"site": "TS01", "x": 1}
    assert spool_info_of(reference) is None


@pytest.fixture
def server() -> Iterator[tuple[ThreadedAssociationServer, list[Any]]]:
    received: list[Any] = []

    def on_store(event: Any) -> int:
        received.append(bytes(event.request.DataSet.getbuffer()))
        return 0xA700 if len(received) == 2 else 0x0000

    ae = AE(ae_title="FAST")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    srv = ae.make_server(
        ("127.0.0.1", 0),
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
        server_class=ThreadedAssociationServer,
        request_handler=FastRequestHandler,
    )
    assert isinstance(srv, ThreadedAssociationServer)
    ae._servers.append(srv)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, received
    srv.shutdown()


def _client() -> AE:
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    return ae


def test_store_echo_release_and_abort(server: tuple[ThreadedAssociationServer, list[Any]]) -> None:
    srv, received = server
    port = int(srv.server_address[1])
    assoc = _client().associate("127.0.0.1", port, ae_title="FAST")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    ds = make_ct()
    statuses = [int(assoc.send_c_store(ds).Status) for _ in range(3)]
    assert statuses == [0x0000, 0xA700, 0x0000]
    assert len(received) == 3
    assoc.release()
    assert assoc.is_released
    assoc = _client().associate("127.0.0.1", port, ae_title="FAST")
    assert assoc.is_established
    assoc.abort()
    end = time.monotonic() + 5
    while srv.active_associations and time.monotonic() < end:
        time.sleep(0.02)
    assert not srv.active_associations


def test_idle_association_does_not_spin(
    server: tuple[ThreadedAssociationServer, list[Any]],
) -> None:
    srv, _ = server
    assoc = _client().associate("127.0.0.1", int(srv.server_address[1]), ae_title="FAST")
    assert assoc.is_established
    try:
        time.sleep(0.2)
        cpu, wall = time.process_time(), time.monotonic()
        time.sleep(1.0)
        used = (time.process_time() - cpu) / (time.monotonic() - wall)
        # both ends of the association live in this process; stock pynetdicom polls every
        # 1 ms in three threads, the fast acceptor every POLL_SECONDS
        assert used < 0.5, f"idle association used {used:.0%} of a CPU"
    finally:
        assoc.release()
