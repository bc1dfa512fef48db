"""gateway.fastpath: the switch (auto/on/off against the pynetdicom version), the pins that
make a pynetdicom upgrade fail loudly here instead of running stale copies (every copied or
relied-on function, every private name the package touches), the hand-encoded C-STORE-RSP and
file meta equal to what pydicom / pynetdicom encode, and a real association through the fast
path storing, answering, releasing, aborting and idling without spinning."""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pynetdicom
import pynetdicom._config
import pynetdicom._globals
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
from pynetdicom.transport import AssociationServer, AssociationSocket, RequestHandler

from gateway import fastpath
from gateway.fastpath import VERIFIED_PYNETDICOM, FastPathUnavailable, choose
from gateway.fastpath.assoc import FastRequestHandler
from gateway.fastpath.pdata import encode_c_store_rsp
from gateway.part10 import PREAMBLE, StoreMeta, encode_meta, spool_info_of
from gateway.transport import AssociationHost, ConnectionLimits, on_connection_open
from tests.dicom_factory import make_ct
from tests.integration.test_gateway_support import hosted

# sha256 (first 16 hex digits) of the pynetdicom sources gateway.fastpath copies, overrides,
# stands in for or relies on; a new pynetdicom changes them: re-read the copies against the
# new sources, then update these and VERIFIED_PYNETDICOM
PINNED_SOURCES: dict[Any, str] = {
    # copied (gateway.fastpath.dul / .assoc), with the changes their docstrings name
    DULServiceProvider.run_reactor: "e3a10eb3a0931e48",
    DULServiceProvider._read_pdu_data: "19f2d4e38c13c835",
    Association._run_reactor: "f28838c5559e462a",
    RequestHandler._create_association: "05c8d12b79863cdb",
    # overridden or stood in for
    DULServiceProvider.__init__: "c82dafa9438ddf70",
    DULServiceProvider.send_pdu: "7cbce5da8594124e",
    DULServiceProvider.kill_dul: "5ceccf8dd01c2072",
    Association.__init__: "eb07516b8009ad8f",
    Association.kill: "8f9713666a7f4cff",
    Association._serve_request: "2f24c1759cdf6c8c",
    DIMSEServiceProvider.send_msg: "a839cf2fb46976d9",
    StorageServiceClass.SCP: "63afca7fc6c6e7ee",
    # called, or whose attributes are read
    DULServiceProvider._decode_pdu: "fc71dd1bf853e1ce",
    DULServiceProvider._is_transport_event: "8725ed03bb8fbdef",
    DULServiceProvider._process_recv_primitive: "4c0ebbb3e646e35e",
    AssociationSocket.__init__: "1f0325fdef2cc353",
    AssociationServer.__init__: "edacb98bdfb7b974",
    pynetdicom._config: "c98c80b019811fc0",
    pynetdicom._globals: "412b52e6607f753f",
}
# every private pynetdicom name gateway/fastpath/*.py uses -> the pinned sources defining it
PRIVATE_NAMES: dict[str, tuple[Any, ...]] = {
    "_accepted_cx": (Association.__init__,),
    "_config": (pynetdicom._config,),
    "_create_association": (RequestHandler._create_association,),
    "_decode_pdu": (DULServiceProvider._decode_pdu,),
    "_dul_ready": (Association.__init__,),
    "_globals": (pynetdicom._globals,),
    "_handlers": (AssociationServer.__init__,),
    "_idle_timer": (DULServiceProvider.__init__,),
    "_is_connected": (AssociationSocket.__init__,),
    "_is_paused": (Association.__init__, Association.kill),
    "_is_transport_event": (DULServiceProvider._is_transport_event,),
    "_kill": (Association.__init__, Association.kill),
    "_kill_thread": (DULServiceProvider.__init__, DULServiceProvider.kill_dul),
    "_process_recv_primitive": (DULServiceProvider._process_recv_primitive,),
    "_reactor_checkpoint": (Association.__init__, Association.kill),
    "_read_pdu_data": (DULServiceProvider._read_pdu_data,),
    "_recv_pdu": (DULServiceProvider.__init__,),
    "_run_loop_delay": (DULServiceProvider.__init__,),
    "_run_reactor": (Association._run_reactor,),
    "_sent_release": (Association.__init__,),
    "_serve_request": (Association._serve_request,),
    "_server": (Association.__init__,),
}
FASTPATH = Path(fastpath.__file__).parent


def _digest(obj: Any) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def test_pynetdicom_is_the_verified_version_and_the_pins_hold() -> None:
    assert pynetdicom.__version__ == VERIFIED_PYNETDICOM, (
        f"pynetdicom {pynetdicom.__version__}: the gateway runs stock pynetdicom until the fast "
        "path's copies are re-verified (see gateway/fastpath/__init__.py)"
    )
    for obj, digest in PINNED_SOURCES.items():
        assert _digest(obj) == digest, getattr(obj, "__qualname__", obj)


def _private_names_used() -> dict[str, set[str]]:
    """Private names (``_x``) the fast path's modules touch: attributes, definitions,
    imported names and modules."""
    used: dict[str, set[str]] = {}
    for path in sorted(FASTPATH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Attribute):
                names = [node.attr]
            elif isinstance(node, ast.FunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pynetdicom"):
                names = [*(node.module or "").split("."), *(a.name for a in node.names)]
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    used.setdefault(name, set()).add(path.name)
    return used


def test_every_private_pynetdicom_name_the_fast_path_uses_is_pinned() -> None:
    package = Path(pynetdicom.__file__).parent
    source = "\n".join(p.read_text() for p in package.glob("*.py"))
    theirs = {
        name: where
        for name, where in _private_names_used().items()
        if re.search(rf"\b{re.escape(name)}\b", source)  # ours, if pynetdicom never says it
    }
    missing = {name: sorted(where) for name, where in theirs.items() if name not in PRIVATE_NAMES}
    assert not missing, f"pin these (PRIVATE_NAMES, PINNED_SOURCES): {missing}"
    for name, owners in PRIVATE_NAMES.items():
        assert all(owner in PINNED_SOURCES for owner in owners), name
        assert any(
            name in inspect.getsource(owner) or getattr(owner, "__name__", "").endswith(name)
            for owner in owners
        ), name  # the pinned source says it, or is the private module itself
    assert set(PRIVATE_NAMES) <= set(theirs), "a pin for a name no longer used"


def test_the_switch() -> None:
    assert choose("auto", VERIFIED_PYNETDICOM).fast
    assert choose("on", VERIFIED_PYNETDICOM).fast
    off = choose("off", VERIFIED_PYNETDICOM)
    assert not off.fast and off.warning is None and off.mode == "stock"
    other = choose("auto", "3.1.0")
    assert not other.fast and other.warning is not None and "3.1.0" in other.warning
    assert other.as_dict()["mode"] == "stock"
    with pytest.raises(FastPathUnavailable):
        choose("on", "3.1.0")
    assert choose("auto").pynetdicom == pynetdicom.__version__


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
def server() -> Iterator[tuple[int, AssociationHost, list[Any]]]:
    received: list[Any] = []

    def on_store(event: Any) -> int:
        received.append(bytes(event.request.DataSet.getbuffer()))
        return 0xA700 if len(received) == 2 else 0x0000

    ae = AE(ae_title="FAST")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    host = ae.make_server(
        ("127.0.0.1", 0),
        evt_handlers=[
            (evt.EVT_CONN_OPEN, on_connection_open, [ConnectionLimits()]),
            (evt.EVT_C_STORE, on_store),
        ],
        server_class=AssociationHost,
        request_handler=FastRequestHandler,
        limits=ConnectionLimits(),
    )
    assert isinstance(host, AssociationHost)
    with hosted(host) as port:
        yield port, host, received


def _client() -> AE:
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    return ae


def test_store_echo_release_and_abort(server: tuple[int, AssociationHost, list[Any]]) -> None:
    port, srv, received = server
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


def test_idle_association_does_not_spin(server: tuple[int, AssociationHost, list[Any]]) -> None:
    port, _, _ = server
    assoc = _client().associate("127.0.0.1", port, ae_title="FAST")
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


STOCK_ONLY = """
import sys, tempfile
from pathlib import Path
import pynetdicom
pynetdicom.__version__ = "9.0.0"
sys.modules["pynetdicom._globals"] = None  # a private module the copies import: gone
from pynetdicom import AE
from gateway.config import GatewaySettings
from gateway.service import Gateway
from storage import FilesystemStore
from tests.dicom_factory import make_ct

tmp = Path(tempfile.mkdtemp())
settings = GatewaySettings(host="127.0.0.1", port=0, spool_dir=tmp / "spool", workers=1,
                           api_url="http://127.0.0.1:9", spool_min_free_bytes=0)
gw = Gateway(settings=settings, store=FilesystemStore(tmp / "store"), sites={"CT_TS01": "TS01"})
gw.start(forward=False)
ds = make_ct()
ae = AE(ae_title="CT_TS01")
ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
assoc = ae.associate("127.0.0.1", gw.port, ae_title="TELEREAD")
print(int(assoc.send_c_store(ds).Status), gw.path.mode)
assoc.release()
gw.stop()
print(sorted(m for m in sys.modules if m.startswith("gateway.fastpath.")))
"""


def test_the_stock_path_never_imports_the_copies() -> None:
    """A pynetdicom whose private internals moved: the gateway starts on stock pynetdicom and
    stores, without ever importing the fast path's modules (never an ImportError)."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", STOCK_ONLY],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "0 stock"
    assert lines[1] == "[]"
