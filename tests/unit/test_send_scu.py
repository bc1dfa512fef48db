"""teleread.send against a real pynetdicom storage SCP on 127.0.0.1."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from teleread.demo import DemoStudy, write_demo_studies
from teleread.send import SUCCESS, format_progress, send_paths
from tests.dicom_factory import make_ct, make_dx, write

OUT_OF_RESOURCES = 0xA700


@dataclass
class Received:
    """What the SCP got: dataset bytes by (SOP instance UID, transfer syntax)."""

    datasets: dict[tuple[str, str], bytes] = field(default_factory=dict)
    associations: set[int] = field(default_factory=set)
    calling: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Scp:
    port: int
    received: Received


def dataset_bytes(part10: bytes) -> bytes:
    """The bytes after the file meta group (its group length tells where that ends)."""
    assert part10[128:132] == b"DICM"
    (group_length,) = struct.unpack("<I", part10[140:144])
    return part10[144 + group_length :]


def start_scp(
    *,
    ae_title: str = "STORESCP",
    require_called: bool = False,
    contexts: list[tuple[str, list[str]]] | None = None,
    status_for: Callable[[str], int] = lambda uid: SUCCESS,
) -> tuple[Any, Scp]:
    received = Received()

    def handle_store(event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        key = (uid, str(event.context.transfer_syntax))
        with received.lock:
            received.datasets[key] = event.request.DataSet.getvalue()
            received.associations.add(id(event.assoc))
            received.calling.add(event.assoc.requestor.ae_title)
        return status_for(uid)

    ae = AE(ae_title=ae_title)
    ae.require_called_aet = require_called
    if contexts is None:
        contexts = [
            (str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
            for cx in AllStoragePresentationContexts
        ]
    for abstract, syntaxes in contexts:
        ae.add_supported_context(abstract, syntaxes)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store)]
    )
    assert server is not None
    return server, Scp(port=server.server_address[1], received=received)


@pytest.fixture
def scp() -> Iterator[Scp]:
    server, info = start_scp()
    yield info
    server.shutdown()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> list[DemoStudy]:
    return write_demo_studies(
        tmp_path_factory.mktemp("demo"), seed=5, ct_slices=8, ct_size=64, dx_size=64
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_sends_demo_studies_and_other_syntaxes_byte_identical(
    scp: Scp, demo: list[DemoStudy], tmp_path: Path
) -> None:
    extra = [
        Path(get_testdata_file(name))  # type: ignore[arg-type]
        for name in ("MR_small_implicit.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm")
    ]
    calls: list[tuple[int, int, int]] = []
    folders = [s.directory for s in demo]
    result = send_paths(
        [*folders, *extra],
        host="127.0.0.1",
        port=scp.port,
        called_aet="STORESCP",
        calling_aet="CT_TS01",
        progress=lambda *a: calls.append(a),
    )
    files = [f for s in demo for f in s.files] + extra
    assert result.failed == 0, result.summary()
    assert result.sent == len(files) == len(scp.received.datasets)
    assert result.associations == 1 and not result.errors and not result.skipped
    assert result.bytes_sent == sum(f.stat().st_size for f in files)
    assert result.elapsed > 0 and result.instances_per_second > 0 and result.mb_per_second > 0
    for outcome in result.files:
        assert outcome.status == SUCCESS
        sent = outcome.path.read_bytes()
        got = scp.received.datasets[outcome.sop_instance_uid, outcome.transfer_syntax_uid]
        assert got == dataset_bytes(sent), outcome.path
    assert {o.transfer_syntax_uid for o in result.files} >= {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.4.91",
    }
    assert scp.received.calling == {"CT_TS01"}
    assert calls[0] == (0, len(files), 0)
    assert calls[-1] == (len(files), len(files), result.bytes_sent)
    assert [c[0] for c in calls] == list(range(len(files) + 1))
    assert f"sent {len(files)}, failed 0" in result.summary()


def test_more_contexts_than_allowed_split_into_associations(scp: Scp, tmp_path: Path) -> None:
    paths = [
        write(make_ct(), tmp_path / "ct1.dcm"),
        write(make_dx(), tmp_path / "dx1.dcm"),
        write(make_ct(), tmp_path / "ct2.dcm"),
        Path(get_testdata_file("MR_small_implicit.dcm")),  # type: ignore[arg-type]
        Path(get_testdata_file("rtplan.dcm")),  # type: ignore[arg-type]
    ]
    result = send_paths(
        paths,
        host="127.0.0.1",
        port=scp.port,
        called_aet="STORESCP",
        calling_aet="SCU",
        max_contexts=2,
    )
    assert result.sent == 5 and result.failed == 0, result.summary()
    assert result.associations == 2 == len(scp.received.associations)


def test_skips_non_dicom_and_dicomdir(scp: Scp, tmp_path: Path) -> None:
    write(make_ct(), tmp_path / "a" / "ct.dcm")
    (tmp_path / "a" / "README.txt").write_text("not dicom")
    (tmp_path / "a" / "DICOMDIR").write_bytes(
        Path(get_testdata_file("DICOMDIR")).read_bytes()  # type: ignore[arg-type]
    )
    result = send_paths(
        [tmp_path / "a", tmp_path / "missing.dcm"],
        host="127.0.0.1",
        port=scp.port,
        called_aet="STORESCP",
        calling_aet="SCU",
    )
    assert result.sent == 1 and result.failed == 0
    reasons = {p.name: why for p, why in result.skipped}
    assert reasons["DICOMDIR"] == "DICOMDIR"
    assert reasons["missing.dcm"] == "no such file"
    assert reasons["README.txt"].startswith("not a DICOM Part-10 file")


def test_closed_port_fails_fast_and_clearly(tmp_path: Path) -> None:
    paths = [write(make_ct(), tmp_path / f"ct{i}.dcm") for i in range(3)]
    port = free_port()
    started = time.monotonic()
    result = send_paths(
        [tmp_path], host="127.0.0.1", port=port, called_aet="X", calling_aet="SCU", max_contexts=1
    )
    assert time.monotonic() - started < 5
    assert result.sent == 0 and result.failed == len(paths)
    assert len(result.errors) == 1
    assert f"X@127.0.0.1:{port}" in result.errors[0]
    assert "could not connect" in result.errors[0]
    assert "could not connect" in result.summary()


def test_rejected_association_says_so(tmp_path: Path) -> None:
    server, info = start_scp(ae_title="TELEREAD", require_called=True)
    try:
        path = write(make_ct(), tmp_path / "ct.dcm")
        result = send_paths(
            [path], host="127.0.0.1", port=info.port, called_aet="WRONG", calling_aet="SCU"
        )
    finally:
        server.shutdown()
    assert result.sent == 0 and result.failed == 1
    assert "rejected" in result.errors[0] and "Called AE title not recognised" in result.errors[0]


def test_unaccepted_context_and_failure_status_are_per_file(tmp_path: Path) -> None:
    bad = make_ct()
    server, info = start_scp(
        contexts=[(CTImageStorage, ["1.2.840.10008.1.2.1"])],
        status_for=lambda uid: OUT_OF_RESOURCES if uid == bad.SOPInstanceUID else SUCCESS,
    )
    try:
        paths = [
            write(make_ct(), tmp_path / "ok.dcm"),
            write(bad, tmp_path / "bad.dcm"),
            write(make_dx(), tmp_path / "dx.dcm"),
        ]
        result = send_paths(
            paths, host="127.0.0.1", port=info.port, called_aet="STORESCP", calling_aet="SCU"
        )
    finally:
        server.shutdown()
    by_name = {o.path.name: o for o in result.files}
    assert by_name["ok.dcm"].ok
    assert by_name["bad.dcm"].status == OUT_OF_RESOURCES and not by_name["bad.dcm"].ok
    assert by_name["dx.dcm"].status is None
    assert "accepted no presentation context" in by_name["dx.dcm"].error
    assert (result.sent, result.failed) == (1, 2)
    assert "status 0xA700" in result.summary()


def test_format_progress() -> None:
    assert format_progress(0, 40, 0, width=10) == "[..........]  0/40  0.0 MB"
    assert format_progress(20, 40, 5_000_000, width=10) == "[#####.....] 20/40  5.0 MB"
    line = format_progress(40, 40, 10_000_000, elapsed=2.0, width=4)
    assert line == "[####] 40/40  10.0 MB  20.0 inst/s  5.0 MB/s"
    assert format_progress(0, 0, 0, width=3) == "[###] 0/0  0.0 MB"


def test_silent_listener_times_out_instead_of_hanging(tmp_path: Path) -> None:
    path = write(make_ct(), tmp_path / "ct.dcm")
    with socket.socket() as listener:  # accepts TCP, never answers the A-ASSOCIATE-RQ
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        started = time.monotonic()
        result = send_paths(
            [path], host="127.0.0.1", port=port, called_aet="X", calling_aet="SCU", timeout=1.0
        )
        assert time.monotonic() - started < 5
    assert result.sent == 0 and result.failed == 1
    assert "no answer in time" in result.errors[0]
