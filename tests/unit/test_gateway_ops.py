"""``teleread gateway status`` figures and the Prometheus metrics endpoint, on a real spool
(read-only, as another process would see it) served over real loopback HTTP."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway.errors import SpoolFull
from gateway.forwarder import Forwarder
from gateway.metrics import CONTENT_TYPE, start_metrics_server
from gateway.ops import format_status, spool_status
from gateway.spool import Spool
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
    spool.store(inst2, data2, dataset_offset=offset2)  # conflict
    return spool, store, county


def test_status_counts_queue_errors_and_counters(tmp_path: Path) -> None:
    spool, store, county = _fill(tmp_path)
    fwd = Forwarder(spool, store, county, announce_delay=1e6)  # type: ignore[arg-type]
    assert fwd.step()  # one upload: the most urgent row
    store.down = True
    assert fwd.step()  # an upload failure
    st = spool_status(tmp_path / "spool")  # read-only, as `teleread gateway status` does
    assert st["pending"] == 6
    assert st["queue"]["pending_by_priority"] == {"urgent": 2, "routine": 4}
    assert st["queue"]["by_priority_and_state"]["urgent"] == {"uploaded": 1, "received": 1}
    assert st["queue"]["by_priority_and_state"]["routine"] == {"received": 4, "conflict": 1}
    assert "test store is down" in st["last_error"]["error"]
    assert st["oldest_unsent"]["age_seconds"] >= 0
    assert st["oldest_urgent_unsent_age_seconds"] is not None
    assert st["spool_bytes"] > 0
    c = st["counters"]
    assert (c["instances_received"], c["instances_stored"]) == (8, 6)
    assert (c["instances_duplicate"], c["instances_conflict"]) == (1, 1)
    assert (c["uploads"], c["upload_failures"]) == (1, 1)
    assert c["bytes_uploaded"] > 0
    text = format_status(st)
    assert "urgent 2, routine 4" in text
    assert "duplicates 1, conflicts 1" in text
    assert "conflict:" in text
    spool.close()


def test_spool_full_is_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=100)
    inst, data, offset = received(make_ct())
    with pytest.raises(SpoolFull):
        spool.store(inst, data, dataset_offset=offset)
    assert spool.counters()["instances_refused_spool_full"] == 1
    spool.close()


def _sample(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^teleread_gateway_{name}{re.escape(labels)} (\S+)$", text, re.M)
    assert m, f"{name}{labels} missing"
    return float(m.group(1))


def test_metrics_endpoint(tmp_path: Path) -> None:
    spool, store, county = _fill(tmp_path)
    fwd = Forwarder(spool, store, county, announce_delay=0)  # type: ignore[arg-type]
    fwd.drain(10)
    server = start_metrics_server(tmp_path / "spool", port=0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"] == CONTENT_TYPE
            text = r.read().decode()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5)
        assert err.value.code == 404
    finally:
        server.stop()
    assert "# TYPE teleread_gateway_uploads_total counter" in text
    assert _sample(text, "uploads_total") == 6
    assert _sample(text, "instances_announced_total") == 6
    assert _sample(text, "instances_duplicate_total") == 1
    assert _sample(text, "instances_conflict_total") == 1
    assert _sample(text, "bytes_uploaded_total") > 0
    assert _sample(text, "pending_instances", '{priority="urgent"}') == 0
    assert _sample(text, "outbox_instances", '{priority="urgent",state="announced"}') == 2
    assert _sample(text, "outbox_instances", '{priority="routine",state="conflict"}') == 1
    assert _sample(text, "problem_instances") == 1
    assert _sample(text, "last_error_outstanding") == 0
    # every sample line is "name{labels} number"
    for line in text.splitlines():
        if not line.startswith("#"):
            assert re.fullmatch(r"teleread_gateway_[a-z_]+(\{[^}]*\})? [0-9.e+-]+", line), line
    spool.close()
