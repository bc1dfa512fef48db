"""The forwarder: urgent first, backoff through outages, integrity, restart, bandwidth cap.
Real spool and real FilesystemStore; the county API is an in-process recorder here (the
integration tests use a real HTTP one)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from gateway.errors import CountyRejected, CountyUnavailable
from gateway.forwarder import Forwarder
from gateway.ops import format_status, spool_status
from gateway.outbox import ANNOUNCED, CONFLICT, MISSING, UPLOADED
from gateway.part10 import StoreMeta
from gateway.received import ROUTINE_RANK, URGENT_RANK, quick_instance
from gateway.spool import Spool
from gateway.upload import TokenBucket
from storage.recompressed import original_of
from tests.dicom_factory import make_ct, make_dx, part10_bytes
from tests.integration.test_gateway_support import SwitchableStore, after_meta
from tests.unit.test_gateway_spool import received


class RecordingCounty:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.down = False
        self.reject: set[str] = set()
        self.hold: dict[str, str] = {}  # SOP Instance UID -> the conflict kind the county holds
        self.keep_first: set[str] = set()  # SOP Instance UIDs whose re-sends are not served

    def announce(
        self, *, site: str, calling_ae: str, called_ae: str, instances: list[dict[str, Any]]
    ) -> dict[str, Any]:
        if self.down:
            raise CountyUnavailable("county down")
        if any(i["sop_instance_uid"] in self.reject for i in instances):
            raise CountyRejected("unknown site", status_code=422)
        self.calls.append({"site": site, "instances": instances})
        held = [
            {
                "conflict_id": n,
                "kind": self.hold[i["sop_instance_uid"]],
                "study_instance_uid": "",
                "sop_instance_uid": i["sop_instance_uid"],
            }
            for n, i in enumerate(instances, start=1)
            if i["sop_instance_uid"] in self.hold
        ]
        resends = [
            {
                "sop_instance_uid": i["sop_instance_uid"],
                "study_instance_uid": i["study_instance_uid"],
                "object_key": i["object_key"],
                "outcome": "kept_first",
                "version_id": 1,
            }
            for i in instances
            if i["sop_instance_uid"] in self.keep_first
            and not i["object_key"].endswith(f"/{i['sop_instance_uid']}.dcm")
        ]
        return {
            "accepted": len(instances) - len(held) - len(resends),
            "duplicates": 0,
            "conflicts": held,
            "resends": resends,
        }

    @property
    def sops(self) -> list[str]:
        return [i["sop_instance_uid"] for c in self.calls for i in c["instances"]]


def _forwarder(
    spool: Spool, store: SwitchableStore, county: RecordingCounty, **kw: Any
) -> Forwarder:
    kw.setdefault("announce_delay", 0.0)
    kw.setdefault("backoff_initial", 0.05)
    kw.setdefault("backoff_max", 0.2)
    return Forwarder(spool, store, county, **kw)  # type: ignore[arg-type]


def _put(spool: Spool, ds: Dataset, **kw: Any) -> str:
    inst, data, offset = received(ds, **kw)
    spool.store(inst, data, dataset_offset=offset)
    return inst.sop_instance_uid


def _states(spool: Spool) -> dict[str, str]:
    return dict(spool.outbox.query("SELECT sop_instance_uid, state FROM outbox"))


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Spool, SwitchableStore, RecordingCounty]:
    return Spool(tmp_path / "spool"), SwitchableStore(tmp_path / "store"), RecordingCounty()


def test_urgent_overtakes_routine_backlog(
    parts: tuple[Spool, SwitchableStore, RecordingCounty],
) -> None:
    spool, store, county = parts
    fw = _forwarder(spool, store, county)
    routine = [_put(spool, make_dx(study_description="胸部正位 体检")) for _ in range(6)]
    store.down = True
    assert fw.step()  # the upload fails: the whole upload path pauses
    assert fw.upload_blocked_until > time.time()
    (err,) = spool.outbox.query("SELECT last_error FROM outbox WHERE last_error IS NOT NULL")
    assert "StoreUnavailable" in err[0]
    stroke_study = make_ct().StudyInstanceUID
    urgent = [_put(spool, make_ct(stroke_study, instance_number=i)) for i in range(3)]
    store.down = False
    fw.upload_blocked_until = 0.0
    fw.drain()
    uploaded = [k.rsplit("/", 1)[1].removesuffix(".dcm") for k in store.put_keys]
    assert uploaded == urgent + routine
    assert county.sops[:3] == urgent
    assert set(_states(spool).values()) == {ANNOUNCED}
    assert not list(spool.objects.glob("*.dcm"))


class OverlapStore(SwitchableStore):
    """Its first two puts return only once both are under way (or fail after 30 s: a
    ceiling for a loaded CI machine, not a wait: one loaded run ran out the 10 s it had)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.started: list[str] = []
        self.together = threading.Barrier(2, timeout=30)

    def put(self, key: str, data: Any, **kw: Any) -> Any:
        self.started.append(key)
        if len(self.started) <= 2:
            self.together.wait()
        return super().put(key, data, **kw)


def test_two_uploads_in_flight_most_urgent_first(tmp_path: Path) -> None:
    spool, store, county = (
        Spool(tmp_path / "spool"),
        OverlapStore(tmp_path / "store"),
        RecordingCounty(),
    )
    routine = [_put(spool, make_dx(rows=64, cols=64)) for _ in range(3)]
    stroke_study = make_ct().StudyInstanceUID
    urgent = [_put(spool, make_ct(stroke_study, instance_number=i)) for i in range(2)]
    fw = _forwarder(spool, store, county, recompress="none")
    assert fw.upload_concurrency == 2  # the default
    fw.start()
    try:
        deadline = time.monotonic() + 60
        while len(county.sops) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        fw.stop()
    started = [k.rsplit("/", 1)[1].removesuffix(".dcm") for k in store.started]
    assert set(started[:2]) == set(urgent)  # both went up together, before the routine ones
    assert sorted(started[2:]) == sorted(routine)  # each once: the first two did not fail
    assert set(_states(spool).values()) == {ANNOUNCED}


def test_backoff_grows_then_drains(parts: tuple[Spool, SwitchableStore, RecordingCounty]) -> None:
    spool, store, county = parts
    fw = _forwarder(spool, store, county)
    sops = [_put(spool, make_dx()) for _ in range(3)]
    store.down = True
    waits = []
    for _ in range(4):
        time.sleep(max(0.0, fw.upload_blocked_until - time.time()))
        fw.step()
        waits.append(fw.upload_blocked_until - time.time())
    assert waits[-1] > waits[0] * 1.2  # exponential, capped at 0.2 s with jitter
    assert max(waits) <= 0.2
    (attempts,) = spool.outbox.query("SELECT MAX(attempts) FROM outbox")
    assert attempts[0] == 4
    store.down = False
    time.sleep(max(0.0, fw.upload_blocked_until - time.time()))
    fw.drain()
    assert sorted(county.sops) == sorted(sops)
    for sop in sops:
        key = next(k for k in store.put_keys if sop in k)
        assert store.stat(key).sha256 is not None


def test_county_outage_keeps_uploading(
    parts: tuple[Spool, SwitchableStore, RecordingCounty],
) -> None:
    spool, store, county = parts
    fw = _forwarder(spool, store, county)
    sops = [_put(spool, make_dx()) for _ in range(4)]
    county.down = True
    for _ in range(10):
        fw.step()
    assert len(store.put_keys) == 4
    assert set(_states(spool).values()) == {UPLOADED}
    county.down = False
    time.sleep(max(0.0, fw.announce_blocked_until - time.time()))
    fw.drain()
    assert sorted(county.sops) == sorted(sops)


def test_urgent_announcements_retry_on_the_shortest_schedule(
    parts: tuple[Spool, SwitchableStore, RecordingCounty],
) -> None:
    """Every county URL down for a while: the routine back-off grows towards a minute, but a
    stroke study is tried again within about ``backoff_initial``, and once the county answers
    it, the routine rows follow without waiting out their back-off."""
    spool, store, county = parts
    clock = [time.time()]
    fw = _forwarder(
        spool, store, county, backoff_initial=1.0, backoff_max=60.0, clock=lambda: clock[0]
    )
    routine = [_put(spool, make_dx(study_description="胸部正位 体检")) for _ in range(2)]
    clock[0] = time.time() + 1  # the rows are due
    county.down = True
    for _ in range(12):  # uploaded, then announced and refused again and again
        clock[0] = max(clock[0], fw.announce_blocked_until) + 0.01
        fw.step()
    assert fw.announce_blocked_until - clock[0] >= 16  # 2**5 s or more, with jitter
    county.down = False
    clock[0] += 1.5
    while fw.step():  # the county is back, but routine rows wait out their back-off
        pass
    assert county.sops == []
    routine_resumes_at = fw.announce_blocked_until
    stroke = [_put(spool, make_ct(instance_number=i)) for i in range(2)]
    clock[0] += 1.5  # past the shortest schedule, far from the routine back-off
    while fw.step():
        pass
    assert county.sops[0] == stroke[0]
    assert set(county.sops) == set(stroke) | set(routine)  # the rest followed
    assert clock[0] < routine_resumes_at - 10  # without waiting out the routine back-off


def test_refused_row_does_not_block_the_batch(
    parts: tuple[Spool, SwitchableStore, RecordingCounty],
) -> None:
    spool, store, county = parts
    fw = _forwarder(spool, store, county, announce_delay=10.0)
    sops = [_put(spool, make_dx()) for _ in range(4)]
    county.reject = {sops[1]}
    fw.drain(timeout=1.0)
    assert sorted(county.sops) == sorted(s for s in sops if s != sops[1])
    state, error, attempts = spool.outbox.query(
        "SELECT state, last_error, attempts FROM outbox WHERE sop_instance_uid = ?", (sops[1],)
    )[0]
    assert state == UPLOADED and "unknown site" in error and attempts >= 1


def test_an_instance_the_county_holds_is_a_conflict_here_too(
    parts: tuple[Spool, SwitchableStore, RecordingCounty],
) -> None:
    spool, store, county = parts
    sops = [_put(spool, make_dx()) for _ in range(3)]
    county.hold = {sops[1]: "study_other_site"}
    _forwarder(spool, store, county).drain(timeout=2.0)
    states = _states(spool)
    assert [states[s] for s in sops] == [ANNOUNCED, CONFLICT, ANNOUNCED]
    status = spool_status(spool)
    [problem] = status["problems"]
    assert problem["sop_instance_uid"] == sops[1]
    assert "study_other_site" in problem["error"]
    assert status["counters"]["instances_held_by_county"] == 1
    text = format_status(status)
    assert f"conflict: {sops[1]}" in text and "held by the county as conflicts 1" in text
    [(path,)] = spool.outbox.query("SELECT path FROM outbox WHERE state = ?", (CONFLICT,))
    assert spool.read_at(path)  # the file is kept here


def test_existing_object_with_other_bytes_goes_up_beside_it(
    parts: tuple[Spool, SwitchableStore, RecordingCounty],
) -> None:
    """Other bytes under the key (a re-send whose first version's row was pruned): this
    version is uploaded under its version key, the first stays as it is; the county decides
    which it serves, and one it does not serve is kept here as a conflict."""
    spool, store, county = parts
    ds = make_dx()
    sop = _put(spool, ds)
    key = f"TS01/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{sop}.dcm"
    other = make_dx(ds.StudyInstanceUID, series_uid=ds.SeriesInstanceUID, sop_uid=sop)
    other.StudyDescription = "different"
    store.put(key, part10_bytes(other))
    county.keep_first = {sop}
    _forwarder(spool, store, county).drain(timeout=2.0)
    assert after_meta(store.get(key)) == after_meta(part10_bytes(other))  # untouched
    [announced] = county.calls[0]["instances"]
    [(row_key, dataset_sha, error)] = spool.outbox.query(
        "SELECT object_key, dataset_sha256, last_error FROM outbox WHERE sop_instance_uid = ?",
        (sop,),
    )
    assert (
        row_key == announced["object_key"] == key.removesuffix(".dcm") + f"_{dataset_sha[:16]}.dcm"
    )
    assert after_meta(original_of(store.get(row_key))) == after_meta(part10_bytes(ds))
    assert _states(spool)[sop] == CONFLICT and "kept_first" in error


def test_object_already_stored_is_not_put_again(
    parts: tuple[Spool, SwitchableStore, RecordingCounty],
) -> None:
    spool, store, county = parts
    sop = _put(spool, make_dx())
    row = spool.outbox.next_to_upload(time.time())
    assert row is not None
    held = spool.path_of(row).read_bytes()
    store.put(row.object_key, held, sha256=hashlib.sha256(held).hexdigest())  # crash after put
    store.put_keys.clear()
    _forwarder(spool, store, county).drain()
    assert store.put_keys == [] and county.sops == [sop]


def test_restart_resumes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    store, county = SwitchableStore(tmp_path / "store"), RecordingCounty()
    sops = [_put(spool, make_dx()) for _ in range(3)]
    fw = _forwarder(spool, store, county)
    fw.step()  # one uploaded, not yet announced
    spool.close()
    spool = Spool(tmp_path / "spool")
    _forwarder(spool, store, county).drain()
    assert sorted(county.sops) == sorted(sops)
    assert set(_states(spool).values()) == {ANNOUNCED}


def test_forwarder_thread_and_bandwidth_cap(
    parts: tuple[Spool, SwitchableStore, RecordingCounty],
) -> None:
    spool, store, county = parts
    sops = [_put(spool, make_dx(rows=128, cols=128)) for _ in range(3)]
    total = sum(int(r[0]) for r in spool.outbox.query("SELECT size FROM outbox"))
    rate = total // 2  # the bucket starts with one second's worth: ~1 s more for the rest
    # sent as received, so the bytes through the cap are the sizes above
    fw = _forwarder(spool, store, county, bandwidth_limit=rate, recompress="none")
    started = time.monotonic()
    fw.start()
    try:
        deadline = time.monotonic() + 10
        while len(county.sops) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        fw.stop()
    elapsed = time.monotonic() - started
    assert sorted(county.sops) == sorted(sops)
    assert 0.8 <= elapsed < 5


def test_token_bucket_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(1000, clock=lambda: now[0])
    start = time.monotonic()
    bucket.consume(1000)  # the burst
    bucket.consume(100)  # 0.1 s short
    assert time.monotonic() - start >= 0.09


def test_spool_file_changed_since_receipt_is_not_uploaded(
    parts: tuple[Spool, SwitchableStore, RecordingCounty],
) -> None:
    """The acceptor hashes the dataset only; the forwarder checks the file against it before
    taking the whole file's sha256 and uploading."""
    spool, store, county = parts
    sop = _put(spool, make_dx())
    row = spool.outbox.next_to_upload(time.time())
    assert row is not None and not row.sha256
    path = spool.path_of(row)
    held = bytearray(path.read_bytes())
    held[-1] ^= 0xFF
    path.write_bytes(bytes(held))
    _forwarder(spool, store, county).drain(timeout=2.0)
    assert _states(spool)[sop] == MISSING
    assert store.put_keys == [] and county.sops == []


def test_headers_read_after_the_response_set_the_priority(
    parts: tuple[Spool, SwitchableStore, RecordingCounty],
) -> None:
    """A row stored with its UIDs only (``quick_instance``, as the C-STORE handler does) is
    not uploaded until its header is read; reading it applies the triage (here: stroke text
    sent to a routine AE title); an index-only forwarder switches to forwarding in place."""
    spool, store, county = parts
    ds = make_ct(study_description="头颅CT平扫 急性脑卒中")
    _put_quick(spool, ds, time.time())
    assert spool.outbox.next_to_upload(time.time()) is None  # not before its header is read
    fw = _forwarder(spool, store, county)
    fw.start(index_only=True)
    try:
        end = time.monotonic() + 10
        while spool.outbox.to_index(1) and time.monotonic() < end:
            time.sleep(0.02)
        row = spool.outbox.next_to_upload(time.time())
        assert row is not None and row.priority_rank == URGENT_RANK and row.sha256
        assert json.loads(row.payload)["urgent_hint"]["category"] == "stroke"
        assert store.put_keys == []
        fw.start()  # the same thread, now forwarding
        while _states(spool)[ds.SOPInstanceUID] != ANNOUNCED and time.monotonic() < end:
            time.sleep(0.02)
        assert county.sops == [ds.SOPInstanceUID]
        assert sum(t.name == "gateway-forwarder" for t in threading.enumerate()) == 1
    finally:
        fw.stop()


def test_an_urgent_study_is_shown_from_its_first_instance_and_complete_with_its_last(
    parts: tuple[Spool, SwitchableStore, RecordingCounty],
) -> None:
    spool, store, county = parts
    routine = [_put(spool, make_dx()) for _ in range(2)]
    study = make_ct().StudyInstanceUID
    urgent = [_put(spool, make_ct(study, instance_number=i + 1)) for i in range(3)]
    fw = _forwarder(spool, store, county, announce_delay=60.0)  # no waiting it out here
    assert fw.step()  # the first stroke slice goes up first ...
    assert fw.step()  # ... and is announced at once, not in 60 s
    assert county.sops == urgent[:1]
    assert fw.step() and fw.step()  # the next two go up, batched for the delay ...
    assert county.sops == urgent[:1]
    assert fw.step()  # ... until routine uploads come next: the study is complete now
    assert county.sops == urgent
    assert fw.step() and fw.step()  # routine ones wait for their batch
    states = _states(spool)
    assert [states[s] for s in routine] == [UPLOADED, UPLOADED]
    assert county.sops == urgent


def test_a_second_urgent_study_shows_at_once_and_the_first_completes_first(
    parts: tuple[Spool, SwitchableStore, RecordingCounty],
) -> None:
    """Two strokes at once: the second one's first slice goes ahead of the first one's queued
    slices (both on the worklist at once), then the first study whole, then the second (not
    interleaved in arrival order, which would finish both late)."""
    spool, store, county = parts
    first, second = make_ct().StudyInstanceUID, make_ct().StudyInstanceUID
    a = [_put(spool, make_ct(first, instance_number=1))]
    fw = _forwarder(spool, store, county, announce_delay=60.0)
    assert fw.step() and fw.step()  # the first stroke's first slice: up and shown
    assert county.sops == a
    a += [_put(spool, make_ct(first, instance_number=n)) for n in (2, 3)]
    b = [_put(spool, make_ct(second, instance_number=1))]
    a.append(_put(spool, make_ct(first, instance_number=4)))
    b.append(_put(spool, make_ct(second, instance_number=2)))
    assert fw.step() and fw.step()  # the second stroke's first slice: up and shown ...
    assert county.sops == [a[0], b[0]]  # ... before the first one's queued slices
    assert fw.step() and fw.step() and fw.step()  # the first stroke's rest, batched ...
    assert county.sops == [a[0], b[0]]
    assert fw.step()  # ... until the other study's uploads come next: complete now
    assert county.sops == [a[0], b[0], *a[1:]] and len(store.put_keys) == 5
    fw.drain()
    uploaded = [k.rsplit("/", 1)[1].removesuffix(".dcm") for k in store.put_keys]
    assert uploaded == [a[0], b[0], *a[1:], b[1]]
    assert county.sops == [a[0], b[0], *a[1:], b[1]]
    assert set(_states(spool).values()) == {ANNOUNCED}
    # each upload's start is recorded (queue wait and transfer told apart)
    spans = spool.outbox.query("SELECT upload_started_at, uploaded_at FROM outbox")
    assert all(started is not None and started <= done for started, done in spans)


def _put_quick(spool: Spool, ds: Dataset, now: float) -> str:
    """Stored as the C-STORE handler does: UIDs only, the header read later."""
    data = part10_bytes(ds)
    offset = 144 + int.from_bytes(data[140:144], "little")
    meta = StoreMeta(ds.SOPClassUID, ds.SOPInstanceUID, ds.file_meta.TransferSyntaxUID)
    inst = quick_instance(
        memoryview(data)[offset:],
        meta,
        site="TS01",
        calling_ae="CT_TS01",
        called_ae="TELEREAD",
        urgent_called_aes={},
    )
    assert inst is not None and inst.priority_rank == ROUTINE_RANK  # not triaged yet
    spool.store(inst, data, dataset_offset=offset, now=now)
    return inst.sop_instance_uid


def test_a_stroke_triaged_in_the_picking_step_is_picked_before_routine(
    parts: tuple[Spool, SwitchableStore, RecordingCounty],
) -> None:
    """A stroke slice received just after the step looked at the clock, behind more new rows
    than one header-reading round takes: the step reads them all, sees the stroke due and
    picks it before the routine rows."""
    spool, store, county = parts
    t0 = time.time()
    for n in range(24):
        _put_quick(spool, make_dx(rows=32, cols=32), now=t0 - 1 + n / 100)
    stroke = _put_quick(spool, make_ct(study_description="头颅CT平扫 急性脑卒中"), now=t0 + 1)
    readings = iter([t0])  # the step's first look at the clock, then later
    fw = _forwarder(spool, store, county, clock=lambda: next(readings, t0 + 2))
    assert fw.step()
    assert [k.rsplit("/", 1)[1] for k in store.put_keys] == [f"{stroke}.dcm"]
