"""The gateway through a degraded uplink, with real parts: dcmtk ``storescu`` into the running
gateway, a real S3 server (SeaweedFS) reached through a loopback TCP hop that can be cut (the
township's line going down: connections reset, nothing listening), and the test county API
really stopped and started again on the same port.

- both down during a send: every C-STORE succeeds (spooled); after they return everything
  drains, checked by sha256 against what S3 holds and what the county was told;
- spool full while they are down: OUT_OF_RESOURCES, the gateway keeps serving, and the
  refused instances go through once there is room again;
- urgent first behind a bandwidth-capped upload path: a stroke study sent after a routine
  backlog is uploaded before the rest of that backlog;
- lossless recompression on the way to S3: pixels identical, the county told the stored
  object's size and sha256, the original's sha256 in the object's file meta note.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr
from pydicom import dcmread
from pydicom.uid import JPEGLSLossless, generate_uid

from gateway.config import GatewaySettings
from gateway.ops import spool_status
from gateway.outbox import ANNOUNCED, RECEIVED
from gateway.service import Gateway
from storage import MinioStore
from storage.base import ObjectStore
from storage.recompressed import original_of, read_note
from storage.settings import StorageSettings
from tests.dicom_factory import make_ct, make_dx, write
from tests.integration.test_gateway_durability import successes
from tests.integration.test_gateway_support import (
    CountyHandler,
    CountyState,
    SwitchableStore,
    after_meta,
    free_port,
)
from tests.servers.seaweed import S3Server

CALLING = "CT_TS01"
pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed"),
]


class CuttableHop:
    """A loopback TCP forwarder to ``upstream``; ``cut()`` resets every connection and stops
    listening, ``restore()`` listens again on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            listener.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


class StoppableCounty:
    """The test county API on a fixed port, really stopped and started; its state (the
    index of announced instances) outlives the stops."""

    def __init__(self) -> None:
        self.state = CountyState(
            sites=[{"code": "TS01", "name": "Township 1", "ae_titles": [CALLING]}]
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        handler = type("Handler", (CountyHandler,), {"state": self.state})
        server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        server.handle_error = lambda *_: None  # type: ignore[method-assign]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def stoppable_county() -> Iterator[StoppableCounty]:
    county = StoppableCounty()
    yield county
    county.stop()


@pytest.fixture
def s3_hop(s3_server: S3Server) -> Iterator[tuple[CuttableHop, MinioStore]]:
    host, port = s3_server.endpoint.split(":")
    hop = CuttableHop((host, int(port)))
    settings = StorageSettings(
        backend="s3",
        endpoint=f"127.0.0.1:{hop.port}",
        access_key=SecretStr(s3_server.access_key),
        secret_key=SecretStr(s3_server.secret_key),
        bucket=f"t-{uuid.uuid4().hex[:20]}",
        secure=False,
        region="us-east-1",
        connect_timeout_seconds=1.0,
        read_timeout_seconds=5.0,
    )
    store = MinioStore.from_settings(settings)
    store.ensure_bucket()
    yield hop, store
    hop.cut()


def _gateway(tmp_path: Path, store: ObjectStore, county_url: str, **overrides: object) -> Gateway:
    settings = GatewaySettings(
        ae_title="TELEREAD",
        host="127.0.0.1",
        port=0,
        spool_dir=tmp_path / "spool",
        api_url=county_url,
        api_username="gw",
        api_password=SecretStr("pw"),
        api_timeout_seconds=3.0,
        announce_delay_seconds=0.05,
        backoff_initial_seconds=0.05,
        backoff_max_seconds=0.5,
        spool_min_free_bytes=0,
        **{"workers": 1, **overrides},  # type: ignore[arg-type]
    )
    gw = Gateway(settings=settings, store=store)
    gw.start()
    return gw


def _storescu(port: int, files: list[Path], called: str = "TELEREAD") -> str:
    run = subprocess.run(
        [
            "storescu",
            "-v",
            "-nh",
            "-aet",
            CALLING,
            "-aec",
            called,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return run.stdout + run.stderr


def _wait(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _key(path: Path) -> str:
    ds = dcmread(path, stop_before_pixels=True)
    return f"TS01/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"


def _announced(gw: Gateway) -> int:
    return int(
        gw.spool.outbox.query("SELECT COUNT(*) FROM outbox WHERE state = ?", (ANNOUNCED,))[0][0]
    )


def _files(directory: Path, n: int) -> list[Path]:
    study, series = generate_uid(), generate_uid()
    return [
        write(make_dx(study, series_uid=series, instance_number=i + 1), directory / f"{i}.dcm")
        for i in range(n)
    ]


def test_s3_and_api_down_during_a_send_then_drain(
    tmp_path: Path, s3_hop: tuple[CuttableHop, MinioStore], stoppable_county: StoppableCounty
) -> None:
    hop, store = s3_hop
    county = stoppable_county
    gw = _gateway(tmp_path, store, county.url)
    try:
        before = _files(tmp_path / "before", 5)
        assert len(successes(_storescu(gw.port, before))) == 5
        _wait(lambda: _announced(gw) == 5)

        hop.cut()
        county.stop()
        during = _files(tmp_path / "during", 20)
        out = _storescu(gw.port, during)
        assert successes(out) == {str(f) for f in during}, out  # spooled: the send succeeds
        _wait(lambda: spool_status(gw.spool)["last_error"] is not None, 20)
        time.sleep(1.0)  # a while: several backoff rounds against dead ends
        st = spool_status(gw.spool)
        assert st["pending"] == 20
        assert st["oldest_unsent"] is not None
        counters = gw.spool.outbox.counters()
        assert counters["upload_failures"] + counters["announce_failures"] >= 1

        hop.restore()
        county.start()
        _wait(lambda: _announced(gw) == 25)
        assert spool_status(gw.spool)["pending"] == 0
    finally:
        gw.stop()
    announced = {i["sop_instance_uid"]: i for i in county.state.instances}
    assert len(county.state.seen) == 25
    for path in before + during:
        sent = path.read_bytes()
        key = _key(path)
        held = store.get(key)  # MinioStore.get checks the recorded sha256 itself
        assert after_meta(original_of(held)) == after_meta(sent)
        item = announced[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)]
        assert item["sha256"] == hashlib.sha256(held).hexdigest() == store.stat(key).sha256


def test_spool_full_out_of_resources_keeps_serving(
    tmp_path: Path, stoppable_county: StoppableCounty
) -> None:
    county = stoppable_county
    store = SwitchableStore(tmp_path / "store")
    files = _files(tmp_path / "send", 8)
    size = len(files[0].read_bytes())
    gw = _gateway(tmp_path, store, county.url, spool_max_bytes=int(size * 5.5))
    try:
        store.down = True
        county.stop()
        out = _storescu(gw.port, files)
        ok = successes(out)
        assert len(ok) == 5, out
        assert out.count("Out of Resources") + out.count("OutOfResources") >= 1 or (
            "A700" in out.upper()
        ), out
        counters = gw.spool.outbox.counters()
        assert counters["instances_refused_spool_full"] == 3
        echo = subprocess.run(
            ["echoscu", "-aet", CALLING, "-aec", "TELEREAD", "127.0.0.1", str(gw.port)],
            env={**os.environ, "TCP_NODELAY": "1"},
            capture_output=True,
            timeout=30,
        )
        assert echo.returncode == 0  # still serving
        store.down = False
        county.start()
        _wait(lambda: _announced(gw) == 5)
        rest = [f for f in files if str(f) not in ok]
        assert successes(_storescu(gw.port, rest)) == {str(f) for f in rest}
        _wait(lambda: _announced(gw) == 8)
    finally:
        gw.stop()
    for path in files:
        assert after_meta(original_of(store.get(_key(path)))) == after_meta(path.read_bytes())


def test_stroke_study_overtakes_a_routine_backlog_on_a_capped_uplink(
    tmp_path: Path, stoppable_county: StoppableCounty
) -> None:
    county = stoppable_county
    store = SwitchableStore(tmp_path / "store")
    routine = _files(tmp_path / "routine", 30)
    size = len(routine[0].read_bytes())
    # the backlog takes ~6 s to go up at this rate: time enough for the stroke study's
    # storescu to finish behind it on a loaded machine (at ~3 s one CI run found 9 left)
    gw = _gateway(tmp_path, store, county.url, bandwidth_limit_bytes_per_s=size * 5)
    try:
        assert len(successes(_storescu(gw.port, routine))) == 30
        study, series = generate_uid(), generate_uid()
        stroke = [
            write(
                make_ct(study, series_uid=series, instance_number=i + 1),
                tmp_path / "stroke" / f"{i}.dcm",
            )
            for i in range(5)
        ]
        assert len(successes(_storescu(gw.port, stroke))) == 5
        backlog_left = int(
            gw.spool.outbox.query("SELECT COUNT(*) FROM outbox WHERE state = ?", (RECEIVED,))[0][0]
        )
        _wait(lambda: _announced(gw) == 35)
    finally:
        gw.stop()
    assert backlog_left > 10  # the stroke study really arrived behind a backlog
    order = store.put_keys
    stroke_keys = {_key(p) for p in stroke}
    positions = [i for i, k in enumerate(order) if k in stroke_keys]
    # instance by instance as they arrive: at most a routine upload or two that started in a
    # gap between two stroke instances coming in over the association
    assert positions[-1] - positions[0] + 1 - len(stroke_keys) <= 2
    assert len(order) - 1 - positions[-1] >= backlog_left - 8  # the backlog waited
    # and the county heard of the stroke study before the rest of the backlog too
    sops = [i["sop_instance_uid"] for i in county.state.instances]
    stroke_sops = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in stroke}
    last_stroke = max(i for i, s in enumerate(sops) if s in stroke_sops)
    assert len(sops) - 1 - last_stroke >= backlog_left - 10


def test_recompressed_upload_to_s3_is_lossless_and_announced_as_stored(
    tmp_path: Path, s3_hop: tuple[CuttableHop, MinioStore], stoppable_county: StoppableCounty
) -> None:
    _, store = s3_hop
    county = stoppable_county
    gw = _gateway(tmp_path, store, county.url, recompress="jpegls")
    study, series = generate_uid(), generate_uid()
    files = [
        write(
            make_ct(study, series_uid=series, instance_number=i + 1, rows=128, cols=128),
            tmp_path / "ct" / f"{i}.dcm",
        )
        for i in range(3)
    ]
    try:
        assert len(successes(_storescu(gw.port, files))) == 3
        _wait(lambda: _announced(gw) == 3)
        counters = gw.spool.outbox.counters()
    finally:
        gw.stop()
    assert counters["bytes_saved_recompression"] > 0
    announced = {i["sop_instance_uid"]: i for i in county.state.instances}
    for path in files:
        sent = dcmread(path)
        held = store.get(_key(path))
        ds = dcmread(BytesIO(held))
        assert ds.file_meta.TransferSyntaxUID == JPEGLSLossless
        assert np.array_equal(ds.pixel_array, sent.pixel_array)
        note = read_note(held)
        assert note is not None
        rebuilt = original_of(held)  # the spooled file: the gateway's meta, the dataset as sent
        assert hashlib.sha256(rebuilt).hexdigest() == note["original_sha256"]
        assert after_meta(rebuilt) == after_meta(path.read_bytes())
        assert (
            note["original_dataset_sha256"]
            == hashlib.sha256(after_meta(path.read_bytes())).hexdigest()
        )
        item = announced[str(sent.SOPInstanceUID)]
        assert item["sha256"] == hashlib.sha256(held).hexdigest()
        assert item["size"] == len(held)
        assert item["transfer_syntax_uid"] == JPEGLSLossless
