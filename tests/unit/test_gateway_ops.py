"""``teleread gateway status`` figures and the Prometheus metrics endpoint, on a real spool
(read-only, as another process would see it) served over real loopback HTTP."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import SpoolFull
from gateway.forwarder import Forwarder
from gateway.heartbeat import StatusReporter, summary
from gateway.metrics import forward_lag, render, start_metrics_server
from gateway.ops import format_status, spool_status
from gateway.spool import Spool
from gateway.status import error_comment
from tests.dicom_factory import make_ct, make_dx
from tests.integration.test_gateway_support import SwitchableStore
from tests.unit.test_gateway_forwarder import RecordingCounty
from tests.unit.test_gateway_spool import received


def _fill(tmp_path: Path) -> tuple[Spool, SwitchableStore, RecordingCounty]:
    spool = Spool(tmp_path / "spool")
    store = SwitchableStore(tmp_path / "store")
    county = RecordingCounty()
    for ds in (make_ct(), make_ct(), make_dx(), make_dx(), make_dx()):  # 2 stroke, 3 routine
        inst, data, offset = received(ds)
        spool.store(inst, data, dataset_offset=offset)
    dup = make_dx()
    inst, data, offset = received(dup)
    spool.store(inst, data, dataset_offset=offset)
    spool.store(inst, data, dataset_offset=offset)  # duplicate
    dup.StudyDescription = "changed"
    inst2, data2, offset2 = received(dup)
    spool.store(inst2, data2, dataset_offset=offset2)  # a re-send with other bytes
    county.keep_first = {dup.SOPInstanceUID}  # which the county does not serve
    return spool, store, county


def test_status_counts_queue_errors_and_counters(tmp_path: Path) -> None:
    spool, store, county = _fill(tmp_path)
    fwd = Forwarder(spool, store, county, announce_delay=1e6)  # type: ignore[arg-type]
    assert fwd.step(announce=False)  # one upload: the most urgent row
    store.down = True
    assert fwd.step(announce=False)  # an upload failure
    st = spool_status(tmp_path / "spool")  # read-only, as `teleread gateway status` does
    assert st["pending"] == 7
    assert st["queue"]["pending_by_priority"] == {"urgent": 2, "routine": 5}
    assert st["queue"]["by_priority_and_state"]["urgent"] == {"uploaded": 1, "received": 1}
    assert st["queue"]["by_priority_and_state"]["routine"] == {"received": 5}
    assert "test store is down" in st["last_error"]["error"]
    assert st["oldest_unsent"]["age_seconds"] >= 0
    assert st["oldest_urgent_unsent_age_seconds"] is not None
    assert st["spool_bytes"] > 0
    c = st["counters"]
    assert (c["instances_received"], c["instances_stored"]) == (8, 6)
    assert (c["instances_duplicate"], c["instances_resent"]) == (1, 1)
    assert (c["uploads"], c["upload_failures"]) == (1, 1)
    assert c["bytes_uploaded"] > 0
    text = format_status(st)
    assert "urgent 2, routine 5" in text
    assert "duplicates 1, re-sent 1" in text
    spool.close()


class HangingStore(SwitchableStore):
    """A store whose put waits until the test lets it go (an upload on a stalled uplink)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.begun = threading.Event()
        self.go_on = threading.Event()

    def put(self, key: str, data: Any, **kw: Any) -> Any:
        self.begun.set()
        assert self.go_on.wait(30)
        return super().put(key, data, **kw)


def test_status_names_the_upload_under_way(tmp_path: Path) -> None:
    """An admin on a slow or stalled uplink sees what is going up and since when; an
    upload that failed is not shown as under way (it waits for its retry)."""
    spool = Spool(tmp_path / "spool")
    for ds in (make_ct(), make_dx()):
        inst, data, offset = received(ds)
        spool.store(inst, data, dataset_offset=offset)
    store = HangingStore(tmp_path / "store")
    fwd = Forwarder(spool, store, RecordingCounty(), announce_delay=1e6)  # type: ignore[arg-type]
    step = threading.Thread(target=fwd.step, kwargs={"announce": False})
    step.start()
    try:
        assert store.begun.wait(30)
        st = spool_status(tmp_path / "spool")
        (up,) = st["uploading"]
        assert up["priority"] == "urgent" and up["bytes"] > 0 and up["seconds"] >= 0
        assert "upload began" in format_status(st) and up["sop_instance_uid"] in format_status(st)
    finally:
        store.go_on.set()
        step.join(30)
    assert spool_status(tmp_path / "spool")["uploading"] == []  # up: no longer under way

    store.down = True  # the next one fails: waiting for its retry, not under way
    store.begun.clear()
    assert fwd.step(announce=False)
    assert spool_status(tmp_path / "spool")["uploading"] == []
    spool.close()


def test_spool_full_is_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=100)
    inst, data, offset = received(make_ct())
    with pytest.raises(SpoolFull):
        spool.store(inst, data, dataset_offset=offset)
    assert spool.outbox.counters()["instances_refused_spool_full"] == 1
    spool.close()


_LABEL = re.compile(r'(\w+)="([^"]*)"')


def _sample(text: str, name: str, labels: str = "") -> float:
    """The value of ``name{labels}`` (labels in any order) in an exposition."""
    want = dict(_LABEL.findall(labels))
    for m in re.finditer(rf"^teleread_gateway_{name}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        if dict(_LABEL.findall(m.group(1) or "")) == want:
            return float(m.group(2))
    raise AssertionError(f"{name}{labels} missing")


def test_metrics_endpoint(tmp_path: Path) -> None:
    spool, store, county = _fill(tmp_path)
    fwd = Forwarder(spool, store, county, announce_delay=0)  # type: ignore[arg-type]
    fwd.drain(10)
    server = start_metrics_server(tmp_path / "spool", port=0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=")
            text = r.read().decode()
    finally:
        server.stop()
    assert "# TYPE teleread_gateway_uploads_total counter" in text
    assert _sample(text, "uploads_total") == 7
    assert _sample(text, "instances_announced_total") == 6
    assert _sample(text, "instances_duplicate_total") == 1
    assert _sample(text, "instances_resent_total") == 1
    assert _sample(text, "instances_held_by_county_total") == 1
    assert _sample(text, "bytes_uploaded_total") > 0
    assert _sample(text, "pending_instances", '{priority="urgent"}') == 0
    assert _sample(text, "outbox_instances", '{priority="urgent",state="announced"}') == 2
    assert _sample(text, "outbox_instances", '{priority="routine",state="conflict"}') == 1
    assert _sample(text, "problem_instances") == 1
    assert _sample(text, "last_error_outstanding") == 0
    # spool depth: the conflict row's file is still held; free space on the spool's disk
    assert _sample(text, "spool_instances") == 1
    assert _sample(text, "spool_free_bytes") > 0
    # forward lag over the instances announced in the window: 2 urgent, 4 routine (the county
    # kept the first version of the re-sent one)
    for priority, n in (("urgent", 2), ("routine", 4)):
        for stage in ("upload", "announce"):
            labels = f'{{priority="{priority}",stage="{stage}"}}'
            assert _sample(text, "forward_lag_window_instances", labels) == n
            lag = [
                _sample(
                    text,
                    "forward_lag_seconds",
                    f'{{priority="{priority}",stage="{stage}",quantile="{q}"}}',
                )
                for q in ("0.5", "0.95", "1")
            ]
            assert 0 <= lag[0] <= lag[1] <= lag[2] < 60
    # every sample line is "name{labels} number"
    for line in text.splitlines():
        if not line.startswith("#"):
            assert re.fullmatch(r"teleread_gateway_[a-z_]+(\{[^}]*\})? [0-9.e+-]+", line), line
    spool.close()


def test_forward_lag_quantiles_and_window(tmp_path: Path) -> None:
    """Receipt-to-upload and -announce times from the outbox's timestamps, only for the
    instances received in the window."""
    spool, store, county = _fill(tmp_path)
    fwd = Forwarder(spool, store, county, announce_delay=0)  # type: ignore[arg-type]
    fwd.drain(10)
    now = time.time()
    rows = spool.outbox.query("SELECT id, priority_rank FROM outbox WHERE state = 'announced'")
    routine = [row_id for row_id, rank in rows if rank == 1]
    # routine rows: received 10, 20, 30, 40 s before they were uploaded; the last one long ago
    with sqlite3.connect(tmp_path / "spool" / "outbox.db") as db:  # as if it happened so
        for i, row_id in enumerate(routine):
            long_ago = 10_000 if i == 3 else 0
            db.execute(
                "UPDATE outbox SET received_ts = ?, uploaded_at = ?, announced_at = ? WHERE id = ?",
                (now - 10 * (i + 1) - long_ago, now - long_ago, now + 1, row_id),
            )
    db.close()
    lag = forward_lag(spool.outbox.query, now=now + 1, window=900)
    assert lag["seconds"]["routine"]["upload"] == [10.0, 20.0, 30.0]
    assert lag["seconds"]["routine"]["announce"] == [11.0, 21.0, 31.0]
    text = render(spool_status(spool), lag)
    assert _sample(text, "forward_lag_seconds", _lag("routine", "upload", "0.5")) == 20
    assert _sample(text, "forward_lag_seconds", _lag("routine", "upload", "1")) == 30
    assert _sample(text, "forward_lag_window_instances", '{priority="routine",stage="upload"}') == 3
    spool.close()


def _lag(priority: str, stage: str, q: str) -> str:
    return f'{{priority="{priority}",stage="{stage}",quantile="{q}"}}'


def test_render_prints_large_counters_exactly(tmp_path: Path) -> None:
    st = spool_status(tmp_path / "nothing-yet")
    st["counters"]["bytes_uploaded"] = 12_345_678_901
    st["spool_bytes"] = 1_234_567
    text = render(st)
    assert _sample(text, "bytes_uploaded_total") == 12_345_678_901  # exactly, in any notation
    assert _sample(text, "spool_bytes") == 1_234_567
    assert "forward_lag" not in text  # not asked for


class StatusCounty:
    """Records the status reports a gateway sends to the county."""

    def __init__(self) -> None:
        self.reports: list[dict[str, object]] = []

    def report_status(self, status: dict[str, object]) -> None:
        self.reports.append(status)


def test_the_county_hears_the_queue_and_the_last_upload_error(tmp_path: Path) -> None:
    """What gateway.heartbeat posts to ``/api/v1/gateway/status``: no UIDs, no paths."""
    spool, store, county = _fill(tmp_path)
    fwd = Forwarder(spool, store, county, announce_delay=1e6)  # type: ignore[arg-type]
    store.down = True
    assert fwd.step()  # an upload failure
    listener = StatusCounty()
    reporter = StatusReporter(listener, spool, seconds=60)  # type: ignore[arg-type]
    assert reporter.report_once()
    (sent,) = listener.reports
    assert (sent["pending_urgent"], sent["pending_routine"]) == (2, 5)
    assert "test store is down" in sent["last_error"]["error"]  # type: ignore[index]
    assert sent["upload_failures"] == 1
    assert isinstance(sent["oldest_unsent_age_seconds"], float)
    assert "1.2." not in str(sent) and str(tmp_path) not in str(sent)
    assert summary(spool_status(Spool(tmp_path / "empty")))["last_error"] is None


def test_error_comment_is_a_valid_lo() -> None:
    assert error_comment("SeriesInstanceUID missing") == "SeriesInstanceUID missing"
    long = error_comment("dataset not well formed: " + "x" * 100)
    assert len(long) == 64 and long.endswith("...")
    assert error_comment("a\\b 王\n") == "a?b ??"
