"""The durable spool: dedup, conflicts, limits, recovery, status; header reading."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from gateway.errors import InvalidInstance, SpoolFull
from gateway.instance import read_instance, spooled_header_json
from gateway.mpps import MppsStore
from gateway.ops import format_status, spool_status
from gateway.outbox import MISSING, RECEIVED
from gateway.part10 import PREAMBLE, StoreMeta, encode_meta
from gateway.received import ROUTINE_RANK, URGENT_RANK, ReceivedInstance, quick_instance
from gateway.spool import Spool
from gateway.spool_recovery import recover
from gateway.wellformed import PATIENT_TAGS, UID_TAGS, check_structure
from tests.dicom_factory import make_ct, make_dx, part10_bytes
from tests.integration.test_gateway_support import after_meta

SLOT = 256 * 1024  # make_ct's small images fit


def recovered(root: Path, **kw: Any) -> Spool:
    """A spool opened as the gateway process opens it: start-up recovery run."""
    spool = Spool(root, **kw)
    recover(spool)
    spool.open_slots()
    return spool


def received(
    ds: Dataset, *, called: str = "TELEREAD", calling: str = "CT_TS01"
) -> tuple[ReceivedInstance, bytes, int]:
    return received_bytes(part10_bytes(ds), ds, called=called, calling=calling)


def received_bytes(
    data: bytes, ds: Dataset, *, called: str = "TELEREAD", calling: str = "CT_TS01"
) -> tuple[ReceivedInstance, bytes, int]:
    group_len = int.from_bytes(data[140:144], "little")
    inst = read_instance(
        data,
        ds.file_meta,
        site="TS01",
        calling_ae=calling,
        called_ae=called,
        urgent_called_aes={"STROKE": "stroke", "CHESTPAIN": "chest_pain"},
    )
    return inst, data, 144 + group_len


def test_read_instance_decodes_and_triages() -> None:
    ct, _, _ = received(make_ct(charset="GB18030"))
    assert ct.payload["patient_name"] == "王^小明"
    assert ct.payload["study_description"] == "头颅CT平扫 急性脑卒中"
    assert ct.category == "stroke" and ct.priority_rank == URGENT_RANK
    assert ct.payload["urgent_hint"]["priority"] == "stat"
    assert ct.payload["object_key"].endswith(f"/{ct.sop_instance_uid}.dcm")
    assert "dicom_json" not in ct.payload  # the forwarder adds it when announcing
    dx, _, _ = received(make_dx())
    assert dx.priority_rank == ROUTINE_RANK and dx.category is None
    flagged, _, _ = received(make_dx(), called="STROKE")
    assert flagged.category == "stroke" and flagged.priority_rank == URGENT_RANK


def test_header_json_without_bulk_data(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    path.write_bytes(part10_bytes(make_ct()))
    header = spooled_header_json(path, "王^小明")
    assert header is not None
    assert header["00100010"]["Value"][0]["Alphabetic"] == "王^小明"
    assert "7FE00010" not in header and header["00080060"]["Value"] == ["CT"]
    assert spooled_header_json(tmp_path / "nothing.dcm", "") is None


def test_read_instance_misdeclared_charset() -> None:
    ds = make_ct(charset="GB18030", study_description="头颅CT平扫")
    data = part10_bytes(ds)
    assert data.count(b"GB18030 ") == 1
    # GB18030 bytes declared as the default repertoire, as township scanners do
    inst, _, _ = received_bytes(data.replace(b"GB18030 ", b"ISO_IR 6"), ds)
    assert inst.payload["patient_name"] == "王^小明"
    assert inst.payload["charset_notes"]


def test_read_instance_refuses_missing_uids() -> None:
    ds = make_ct()
    del ds.SeriesInstanceUID
    with pytest.raises(InvalidInstance):
        received(ds)


def test_store_dedup_resend_and_status(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    ds = make_ct()
    inst, data, offset = received(ds)
    outcome, row = spool.store(inst, data, dataset_offset=offset)
    assert outcome == "stored"
    head = spool.outbox.next_to_upload(1e12)
    assert head is not None and not head.sha256  # the forwarder computes the file's
    assert (spool.objects / f"{head.dataset_sha256}.dcm").read_bytes() == data
    assert head.dataset_sha256 == hashlib.sha256(data[offset:]).hexdigest()
    # the same dataset from another calling AE (other file meta) is still a duplicate
    inst2, data2, offset2 = received(ds, calling="CT_OTHER")
    assert spool.store(inst2, data2, dataset_offset=offset2) == ("duplicate", row)
    ds.StudyDescription = "changed"
    inst3, data3, offset3 = received(ds)
    outcome, resent_row = spool.store(inst3, data3, dataset_offset=offset3)
    assert outcome == "resent"  # queued too, under its own key beside the first
    rows = {r[0]: r[1:] for r in spool.outbox.query("SELECT id, state, object_key FROM outbox")}
    first_key = rows[row][1]
    sha3 = hashlib.sha256(data3[offset3:]).hexdigest()
    assert rows == {
        row: (RECEIVED, first_key),
        resent_row: (RECEIVED, first_key.removesuffix(".dcm") + f"_{sha3[:16]}.dcm"),
    }
    [second] = [r for r in spool.outbox.due_uploads(1e12, 10) if r.id == resent_row]
    assert second.announcement()["object_key"] == rows[resent_row][1]
    assert spool.store(inst3, data3, dataset_offset=offset3) == ("duplicate", resent_row)
    status = spool_status(spool)
    assert status["pending"] == 2
    assert status["queue"]["pending_by_priority"] == {"urgent": 1, "routine": 1}  # re-triaged
    assert status["problems"] == []
    assert status["counters"]["instances_resent"] == 1
    assert status["spool_bytes"] == len(data) + len(data3)
    assert "pending: 2" in format_status(status)
    # by path: read-only, safe next to a running gateway (no recovery run)
    assert spool_status(tmp_path)["queue"] == status["queue"]
    assert spool_status(tmp_path / "nowhere")["pending"] == 0
    assert not (tmp_path / "nowhere").exists()
    spool.close()


def test_spool_full(tmp_path: Path) -> None:
    inst, data, offset = received(make_ct())
    spool = Spool(tmp_path, max_bytes=len(data) - 1)
    with pytest.raises(SpoolFull):
        spool.store(inst, data, dataset_offset=offset)
    spool.close()
    spool = Spool(tmp_path, min_free_bytes=2**62)
    with pytest.raises(SpoolFull):
        spool.store(inst, data, dataset_offset=offset)
    spool.close()


def test_recovery_drops_orphans_and_flags_missing(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    a = received(make_ct())
    b = received(make_ct())
    spool.store(a[0], a[1], dataset_offset=a[2])
    spool.store(b[0], b[1], dataset_offset=b[2])
    spool.close()
    orphan = tmp_path / "objects" / "deadbeef.dcm"
    orphan.write_bytes(b"x")
    (tmp_path / "objects" / ".tmp-1234").write_bytes(b"partial")
    rows = sorted(Path(tmp_path / "objects").glob("[0-9a-f]*.dcm"))
    victim = next(p for p in rows if p != orphan)
    os.unlink(victim)
    spool = recovered(tmp_path)
    assert not orphan.exists()
    assert not (tmp_path / "objects" / ".tmp-1234").exists()
    states = sorted(s for (s,) in spool.outbox.query("SELECT state FROM outbox"))
    assert states == [MISSING, RECEIVED]
    left = list((tmp_path / "objects").glob("*.dcm"))
    assert len(left) == 1 and spool.held_bytes == left[0].stat().st_size
    spool.close()


def as_received_by_gateway(ds: Dataset, *, called: str) -> tuple[ReceivedInstance, bytes, int]:
    """What ``handle_store`` spools: the gateway's own file meta with the spool information."""
    meta = StoreMeta(ds.SOPClassUID, ds.SOPInstanceUID, ds.file_meta.TransferSyntaxUID)
    category = {"STROKE": "stroke"}.get(called)
    prefix = PREAMBLE + encode_meta(
        meta,
        calling_ae="CT_TS01",
        called_ae=called,
        spool_info={"site": "TS01", "category": category},
    )
    data = prefix + after_meta(part10_bytes(ds))
    inst = read_instance(
        data,
        meta,
        site="TS01",
        calling_ae="CT_TS01",
        called_ae=called,
        urgent_called_aes={"STROKE": "stroke"},
    )
    return inst, data, len(prefix)


def test_recovery_rebuilds_rows_lost_with_an_unsynced_commit(tmp_path: Path) -> None:
    """The outbox commit is not fsynced (the spool file is): a row lost to a power cut comes
    back from its file, with the same fields; an orphan duplicating a kept row goes."""
    spool = Spool(tmp_path)
    kept = as_received_by_gateway(make_ct(), called="TELEREAD")
    lost = as_received_by_gateway(make_ct(), called="STROKE")
    spool.store(kept[0], kept[1], dataset_offset=kept[2])
    spool.store(lost[0], lost[1], dataset_offset=lost[2])
    cols = (
        "sop_instance_uid, series_instance_uid, study_instance_uid, sop_class_uid, site, "
        "calling_ae, called_ae, object_key, path, size, sha256, dataset_sha256, priority_rank, "
        "category, state, payload"
    )
    before = {r[0]: r for r in spool.outbox.query(f"SELECT {cols} FROM outbox")}
    spool.close()
    with sqlite3.connect(tmp_path / "outbox.db") as db:  # as a power cut loses the commit
        db.execute("DELETE FROM outbox WHERE sop_instance_uid = ?", (lost[0].sop_instance_uid,))
    # a second copy of the kept instance under another name (as a crash mid-dedup leaves)
    (spool.objects / ("0" * 64 + ".dcm")).write_bytes(kept[1])
    spool = recovered(tmp_path)
    after = {r[0]: r for r in spool.outbox.query(f"SELECT {cols} FROM outbox")}
    assert after == before
    assert after[lost[0].sop_instance_uid][12] == URGENT_RANK
    assert not (spool.objects / ("0" * 64 + ".dcm")).exists()
    assert spool.held_bytes == len(kept[1]) + len(lost[1])
    spool.close()


def _quick(data: bytes, ds: Dataset) -> ReceivedInstance | None:
    offset = 144 + int.from_bytes(data[140:144], "little")
    meta = StoreMeta(ds.SOPClassUID, ds.SOPInstanceUID, ds.file_meta.TransferSyntaxUID)
    return quick_instance(
        memoryview(data)[offset:],
        meta,
        site="TS01",
        calling_ae="CT_TS01",
        called_ae="STROKE",
        urgent_called_aes={"STROKE": "stroke"},
    )


@pytest.mark.parametrize("implicit", [False, True])
def test_quick_instance_agrees_with_the_full_read(implicit: bool) -> None:
    ds = make_ct()
    seq_item = Dataset()
    seq_item.CodeValue = "T-A0100"
    seq_item.CodingSchemeDesignator = "SRT"
    ds.AnatomicRegionSequence = [seq_item]  # walked as an undefined-length sequence too
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    data = part10_bytes(ds)
    quick = _quick(data, ds)
    full = read_instance(
        data,
        ds.file_meta,
        site="TS01",
        calling_ae="CT_TS01",
        called_ae="STROKE",
        urgent_called_aes={"STROKE": "stroke"},
    )
    assert quick is not None and not quick.indexed and full.indexed
    for name in (
        "sop_class_uid",
        "sop_instance_uid",
        "series_instance_uid",
        "study_instance_uid",
        "object_key",
        "category",
        "priority_rank",
        "patient_id",
        "patient_name",
    ):
        assert getattr(quick, name) == getattr(full, name), name
    assert quick.patient_name == str(ds.PatientName) and quick.patient_id == ds.PatientID


def test_quick_instance_leaves_doubtful_datasets_to_the_full_read() -> None:
    ds = make_ct()
    data = part10_bytes(ds)
    offset = 144 + int.from_bytes(data[140:144], "little")
    # not a complete element sequence: refused before the response (gateway.wellformed)
    garbage = data[:offset] + b"\x08\x00\x18\x00UI\xff\x7f" + b"\x01" * 40
    for broken in (data[:-10], data[: offset + 20], garbage):
        with pytest.raises(InvalidInstance):
            _quick(broken, ds)
    other = make_ct()  # the request names another SOP instance
    assert _quick(data, other) is None
    no_study = make_ct()
    del no_study.StudyInstanceUID
    assert _quick(part10_bytes(no_study), no_study) is None


def _swap_first_two_elements(dataset: bytes) -> bytes:
    """Explicit VR LE: the dataset with its first two (short) elements swapped."""
    first = 8 + int.from_bytes(dataset[6:8], "little")
    second = first + 8 + int.from_bytes(dataset[first + 6 : first + 8], "little")
    return dataset[first:second] + dataset[:first] + dataset[second:]


def test_one_pass_checks_the_structure_and_collects_the_uids() -> None:
    ds = make_ct()
    data = part10_bytes(ds)
    offset = 144 + int.from_bytes(data[140:144], "little")
    dataset = data[offset:]
    syntax = ds.file_meta.TransferSyntaxUID
    uids: dict[int, bytes] = {}
    assert check_structure(dataset, syntax, uids) is True
    assert {tag: uids[tag].rstrip(b"\0").decode() for tag in UID_TAGS} == {
        0x00080016: ds.SOPClassUID,
        0x00080018: ds.SOPInstanceUID,
        0x0020000D: ds.StudyInstanceUID,
        0x0020000E: ds.SeriesInstanceUID,
    }
    # and the patient's, raw (decoded with the Specific Character Set by quick_instance)
    assert set(uids) == set(UID_TAGS) | set(PATIENT_TAGS)
    assert uids[0x00100020].rstrip(b" ") == ds.PatientID.encode()
    # elements out of order: well formed, but not plain: pydicom decides before the response
    swapped = _swap_first_two_elements(dataset)
    assert check_structure(swapped, syntax) is False
    assert _quick(data[:offset] + swapped, ds) is None
    # after the pixel data nothing is read before the response: order is not looked at there
    trailing = dataset + b"\x08\x00\x16\x00UI\x02\x001\x00"
    assert check_structure(trailing, syntax) is True


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_native_pixel_data_shorter_than_the_image_is_refused(syntax: str) -> None:
    """Well formed, but 2 bytes short of Rows x Columns x 16 bits: no viewer can show it."""
    ds = make_ct(rows=8, cols=8)
    ds.file_meta.TransferSyntaxUID = syntax
    whole = after_meta(part10_bytes(ds))
    assert check_structure(whole, syntax) is True
    ds.PixelData = ds.PixelData[:-2]
    with pytest.raises(InvalidInstance, match=r"Pixel Data has 126 bytes, .* need 128"):
        check_structure(after_meta(part10_bytes(ds)), syntax)
    ds.PixelData += b"\0\0"
    ds.add_new(0x00280008, "LO", "1A")  # as an IS, pydicom would not write it
    with pytest.raises(InvalidInstance, match="NumberOfFrames '1A' is not a number"):
        check_structure(after_meta(part10_bytes(ds)), syntax)


def test_the_spool_is_readable_by_its_user_only(tmp_path: Path) -> None:
    """Names, IDs and images: the spool directory 0700, every file in it 0600."""
    root = tmp_path / "spool"
    root.mkdir(mode=0o755)  # even when it was made open
    spool = Spool(root, slot_count=2, slot_size=SLOT)
    spool.open_slots()
    spool.fill_slots()
    small, big = received(make_ct()), received(make_ct(rows=512, cols=512))
    spool.store(small[0], small[1], dataset_offset=small[2])  # a slot
    spool.store(big[0], big[1], dataset_offset=big[2])  # too big for a slot: a file
    mpps = MppsStore(root / "mpps.db")
    spool.close()
    mpps.close()
    modes = {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}
    assert any(name.startswith("objects/") and name.endswith(".dcm") for name in modes)
    assert any(name.startswith("slots/0/") for name in modes)
    assert "outbox.db" in modes and "mpps.db" in modes
    loose = {name: oct(mode) for name, mode in modes.items() if mode & 0o077}
    assert loose == {}
