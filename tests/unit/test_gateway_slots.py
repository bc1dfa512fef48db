"""The spool's slot files (gateway.slots): write, recover, torn writes, recycling, fallback."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from gateway import slots
from gateway.outbox import ANNOUNCED, COLUMNS, RECEIVED, OutboxRow
from gateway.spool import Spool
from tests.dicom_factory import make_ct
from tests.unit.test_gateway_spool import as_received_by_gateway, received, recovered

SLOT = 256 * 1024  # make_ct's small images fit


def slot_spool(root: Path, count: int = 2, size: int = SLOT) -> Spool:
    spool = Spool(root, slot_count=count, slot_size=size)
    spool.open_slots()
    spool.fill_slots()
    return spool


def forget_rows(root: Path) -> None:
    with sqlite3.connect(root / "outbox.db") as db:
        db.execute("DELETE FROM outbox")


def rows(spool: Spool) -> list[tuple[str, str, str]]:
    return [
        (str(p), str(s), str(u))
        for p, s, u in spool.outbox.query(
            "SELECT path, state, sop_instance_uid FROM outbox ORDER BY id"
        )
    ]


def test_store_into_slot_and_read_back(tmp_path: Path) -> None:
    spool = slot_spool(tmp_path)
    ds = make_ct()
    inst, data, offset = received(ds)
    assert spool.store(inst, data, dataset_offset=offset)[0] == "stored"
    row = spool.outbox.next_to_upload(1e12)
    assert row is not None
    assert row.path.startswith("slots/") and row.size == len(data)
    assert spool.read_bytes(row) == data and spool.holds(row)
    with spool.open(row) as f:
        assert f.read() == data
    assert os.path.getsize(tmp_path / row.path) == SLOT  # overwritten in place
    record = slots.read_record(tmp_path / row.path)
    assert record is not None and record.data == data and record.dataset_offset == offset
    assert not list(spool.objects.iterdir())
    # a duplicate does not keep the slot it was written to
    inst2, data2, offset2 = received(ds, calling="CT_OTHER")
    assert spool.store(inst2, data2, dataset_offset=offset2)[0] == "duplicate"
    assert spool.free_slots() == 1
    spool.close()


def test_too_big_or_no_free_slot_falls_back_to_files(tmp_path: Path) -> None:
    spool = slot_spool(tmp_path, count=1, size=slots.HEADER + 1024)  # too small for make_ct
    inst, data, offset = received(make_ct())
    spool.store(inst, data, dataset_offset=offset)
    assert rows(spool)[0][0].startswith("objects/")
    spool.close()
    spool = slot_spool(tmp_path / "b", count=1)
    for _ in range(2):
        inst, data, offset = received(make_ct())
        spool.store(inst, data, dataset_offset=offset)
    paths = [p for p, _, _ in rows(spool)]
    assert paths[0].startswith("slots/") and paths[1].startswith("objects/")
    got = [OutboxRow(*r) for r in spool.outbox.query("SELECT " + COLUMNS + " FROM outbox")]
    assert [spool.read_bytes(r)[:132] for r in got] == [data[:132]] * 2
    spool.close()


def test_lost_row_is_rebuilt_from_its_slot(tmp_path: Path) -> None:
    spool = slot_spool(tmp_path)
    inst, data, offset = as_received_by_gateway(make_ct(), called="STROKE")
    spool.store(inst, data, dataset_offset=offset)
    before = spool.outbox.query("SELECT * FROM outbox")
    ((path, _, uid),) = rows(spool)
    spool.close()
    forget_rows(tmp_path)  # a power cut took the (synchronous=NORMAL) commit
    spool = recovered(tmp_path, slot_count=2, slot_size=SLOT)
    assert rows(spool) == [(path, RECEIVED, uid)]
    after = spool.outbox.query("SELECT * FROM outbox")
    assert after[0][1:] == before[0][1:]  # the same fields (receipt time included)
    row = spool.outbox.next_to_upload(1e12)
    assert row is not None
    assert spool.read_bytes(row) == data
    # the slot stays held: the next instance takes the other one
    inst2, data2, offset2 = received(make_ct())
    spool.store(inst2, data2, dataset_offset=offset2)
    assert rows(spool)[1][0].startswith("slots/") and rows(spool)[1][0] != path
    spool.close()


def test_torn_write_is_not_a_record(tmp_path: Path) -> None:
    spool = slot_spool(tmp_path)
    inst, data, offset = as_received_by_gateway(make_ct(), called="TELEREAD")
    spool.store(inst, data, dataset_offset=offset)
    ((path, _, _),) = rows(spool)
    spool.close()
    forget_rows(tmp_path)
    with open(tmp_path / path, "r+b") as f:  # the write got only partly to the disk
        f.seek(slots.HEADER + len(data) - 100)
        f.write(bytes(100))
    assert slots.read_record(tmp_path / path) is None
    spool = recovered(tmp_path, slot_count=2, slot_size=SLOT)
    assert rows(spool) == []
    assert spool.free_slots() == 2
    spool.close()


def test_announced_slot_is_recycled(tmp_path: Path) -> None:
    spool = slot_spool(tmp_path, count=1)
    inst, data, offset = received(make_ct())
    spool.store(inst, data, dataset_offset=offset)
    row = spool.outbox.next_to_upload(1e12)
    assert row is not None
    spool.outbox.mark_uploaded(row.id, time.time())
    spool.mark_announced([row], time.time())
    assert slots.read_record(tmp_path / row.path) is None
    deadline = time.monotonic() + 10
    while spool.free_slots() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    inst2, data2, offset2 = received(make_ct())
    spool.store(inst2, data2, dataset_offset=offset2)
    assert rows(spool)[1][0] == row.path  # the same slot, again
    spool.close()
    spool = recovered(tmp_path)  # recovery: one held row, its record intact
    assert [s for _, s, _ in rows(spool)] == [ANNOUNCED, RECEIVED]
    spool.close()


def test_crash_between_announce_and_recycle(tmp_path: Path) -> None:
    spool = slot_spool(tmp_path)
    inst, data, offset = as_received_by_gateway(make_ct(), called="TELEREAD")
    spool.store(inst, data, dataset_offset=offset)
    row = spool.outbox.next_to_upload(1e12)
    assert row is not None
    spool.outbox.mark_uploaded(row.id, time.time())
    spool.outbox.mark_announced([row], time.time())  # committed; killed before the slot was freed
    spool.close()
    assert slots.read_record(tmp_path / row.path) is not None
    spool = recovered(tmp_path, slot_count=2, slot_size=SLOT)
    assert [s for _, s, _ in rows(spool)] == [ANNOUNCED]  # never announced again
    assert slots.read_record(tmp_path / row.path) is None
    assert spool.free_slots() == 2
    spool.close()


def test_two_pools_take_two_directories(tmp_path: Path) -> None:
    a = slots.SlotPool(tmp_path, count=1, size=SLOT, start=False)
    b = slots.SlotPool(tmp_path, count=1, size=SLOT, start=False)
    assert a.dir != b.dir
    a.close()
    c = slots.SlotPool(tmp_path, count=1, size=SLOT, start=False)
    assert c.dir == a.dir
    b.close()
    c.close()
