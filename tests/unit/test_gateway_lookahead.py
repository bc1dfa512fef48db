"""Recompression ahead of the upload: the next rows in upload order (urgent first) are
compressed by their own thread and handed to the forwarder, whose stored objects rebuild the
received files bit for bit; rows not done ahead are compressed by the forwarder itself."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.forwarder import Forwarder
from gateway.lookahead import NOT_READY, RecompressAhead
from gateway.outbox import ANNOUNCED
from gateway.recompress import Recompressed
from gateway.spool import Spool
from storage.recompressed import original_of, read_note
from tests.dicom_factory import make_ct, make_dx
from tests.integration.test_gateway_support import SwitchableStore
from tests.unit.test_gateway_forwarder import RecordingCounty
from tests.unit.test_gateway_spool import received


def _spool_with(tmp_path: Path) -> tuple[Spool, dict[str, bytes], list[int], list[int]]:
    """Three routine radiographs, then two slices of a stroke CT received after them."""
    spool = Spool(tmp_path / "spool")
    sent = {}
    for ds in [make_dx(rows=256, cols=256) for _ in range(3)] + [
        make_ct(rows=128, cols=128, instance_number=i + 1) for i in range(2)
    ]:
        inst, data, offset = received(ds)
        spool.store(inst, data, dataset_offset=offset)
        sent[inst.sop_instance_uid] = data
    rows = spool.outbox.query("SELECT id, priority_rank FROM outbox ORDER BY id")
    urgent = [int(i) for i, rank in rows if rank == 0]
    routine = [int(i) for i, rank in rows if rank != 0]
    assert len(urgent) == 2 and len(routine) == 3
    return spool, sent, urgent, routine


def test_the_next_rows_are_compressed_ahead_urgent_first(tmp_path: Path) -> None:
    spool, sent, urgent, routine = _spool_with(tmp_path)
    ahead = RecompressAhead(spool, "jpegls", depth=2, clock=time.time)
    assert ahead.step() and ahead.step()
    assert not ahead.step()  # the next two (the stroke slices) are done: nothing more now
    by_id = dict(spool.outbox.query("SELECT id, sop_instance_uid FROM outbox"))
    for row_id in urgent:
        result = ahead.take(row_id)
        assert isinstance(result, Recompressed)
        assert original_of(result.data) == sent[by_id[row_id]]
    assert ahead.take(routine[0]) is NOT_READY  # not reached: the forwarder does it itself
    assert ahead.take(urgent[0]) is NOT_READY  # handed over once
    # the stroke slices stay the next due rows while their uploads run: not compressed again
    assert not ahead.step()
    spool.close()


def test_forwarder_with_its_lookahead_thread_stores_rebuildable_objects(tmp_path: Path) -> None:
    spool, sent, _, _ = _spool_with(tmp_path)
    store = SwitchableStore(tmp_path / "store")
    county = RecordingCounty()
    fw = Forwarder(spool, store, county, announce_delay=0)  # type: ignore[arg-type]
    assert fw.recompress == "jpegls"  # the default
    fw.start()
    try:
        deadline = time.monotonic() + 30
        while len(county.sops) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        fw.stop()
    states = dict(spool.outbox.query("SELECT sop_instance_uid, state FROM outbox"))
    assert set(states.values()) == {ANNOUNCED}
    keys = dict(spool.outbox.query("SELECT sop_instance_uid, object_key FROM outbox"))
    for sop, data in sent.items():
        stored = store.get(keys[sop])
        assert read_note(stored) is not None, sop  # all of these shrink
        assert len(stored) < len(data)
        assert original_of(stored) == data
    assert spool.outbox.counters()["bytes_saved_recompression"] > 0
    spool.close()
