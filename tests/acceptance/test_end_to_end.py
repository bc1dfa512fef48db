"""CT/DR -> gateway -> object store -> worklist -> report -> clinic, with dcmtk's storescu
as the modality and the real `teleread serve` process."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from storage.recompressed import original_of, read_note
from teleread.demo import write_demo_studies
from tests.acceptance.conftest import Pipeline

pytestmark = pytest.mark.dcmtk

TELEREAD = [sys.executable, "-m", "teleread.cli"]


def storescu(pipeline: Pipeline, calling_ae: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "storescu",
            "-aet",
            calling_ae,
            "-aec",
            "TELEREAD",
            "+sd",
            "+r",
            "-v",
            "127.0.0.1",
            str(pipeline.dicom_port),
            str(path),
        ],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def dataset_bytes(part10: bytes) -> bytes:
    """The bytes after the file meta group (its group length tells where that ends)."""
    assert part10[128:132] == b"DICM"
    tag_group, tag_elem = struct.unpack("<HH", part10[132:136])
    assert (tag_group, tag_elem) == (0x0002, 0x0000), "file meta without group length"
    (group_length,) = struct.unpack("<I", part10[140:144])
    return part10[144 + group_length :]


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(interval)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("demo")
    studies = write_demo_studies(out, seed=7, ct_slices=12, ct_size=256)
    by_kind: dict[str, Any] = {}
    for s in studies:
        if s.expected_category == "stroke":
            by_kind.setdefault("stroke", s)
        elif s.modality in ("DX", "CR") and s.expected_category is None:
            by_kind.setdefault("dr", s)
    assert {"stroke", "dr"} <= by_kind.keys()
    return by_kind


def test_stroke_ct_goes_first_and_is_reported_to_its_clinic(
    shared_pipeline: Pipeline, demo: dict[str, Any]
) -> None:
    stroke, dr = demo["stroke"], demo["dr"]
    # the routine DR first, so the stroke CT is the newer arrival and still must come first
    sent_dr = storescu(shared_pipeline, "DR_TS01", dr.directory)
    assert sent_dr.returncode == 0, sent_dr.stderr
    sent_ct = storescu(shared_pipeline, "CT_TS01", stroke.directory)
    assert sent_ct.returncode == 0, sent_ct.stderr

    radiologist = shared_pipeline.client("dr_li")

    def worklist_has_both() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = radiologist.get("/api/v1/worklist").json()
        uids = {i["study_instance_uid"] for i in items}
        return items if {stroke.study_uid, dr.study_uid} <= uids else None

    items = wait_for(worklist_has_both)
    # the county is shared with other modules' studies: the stroke is above the DR and
    # has only urgent studies (if any) above it
    order = [i["study_instance_uid"] for i in items]
    top = order.index(stroke.study_uid)
    assert top < order.index(dr.study_uid)
    assert all(i["priority"] == "stat" for i in items[:top]), items[:top]
    first = items[top]
    assert first["study_instance_uid"] == stroke.study_uid
    assert first["priority"] == "stat"
    assert first["category"] == "stroke"
    assert first["triage_reasons"], "an urgent flag must say why"
    assert first["site"] == "TS01"
    routine = next(i for i in items if i["study_instance_uid"] == dr.study_uid)
    assert routine["priority"] == "routine" and routine["category"] is None

    # every instance arrives, stored losslessly recompressed (the default), and the file sent
    # rebuilds from it byte for byte behind the gateway's file meta
    def all_ct_in() -> bool:
        detail = radiologist.get(f"/api/v1/studies/{stroke.study_uid}").json()
        return bool(detail.get("num_instances") == len(stroke.files))

    wait_for(all_ct_in)
    detail = radiologist.get(f"/api/v1/studies/{stroke.study_uid}").json()
    assert detail["patient_name"].startswith("王")
    objects = shared_pipeline.data_dir / "objects"
    for path in stroke.files:
        sent = Path(path).read_bytes()
        matches = list(objects.rglob(f"*/{_sop_uid(sent)}.dcm"))
        assert len(matches) == 1
        stored = matches[0].read_bytes()
        note = read_note(stored)
        assert note is not None and len(stored) < len(sent) / 2
        assert dataset_bytes(original_of(stored)) == dataset_bytes(sent)
        # the API hands out the file as received, rebuilt and checked
        got = radiologist.get(f"/api/v1/studies/{stroke.study_uid}/instances/{_sop_uid(sent)}")
        assert got.status_code == 200
        assert hashlib.sha256(got.content).hexdigest() == note["original_sha256"]
        assert got.headers["etag"] == f'"{note["original_sha256"]}"'
        assert dataset_bytes(got.content) == dataset_bytes(sent)

    # claims: one reader at a time
    other = shared_pipeline.client("dr_wang")
    assert radiologist.post(f"/api/v1/worklist/{stroke.study_uid}/claim").status_code == 200
    assert other.post(f"/api/v1/worklist/{stroke.study_uid}/claim").status_code == 409
    impression = "右侧基底节区急性脑出血，约12ml。"
    r = radiologist.put(
        f"/api/v1/studies/{stroke.study_uid}/report",
        json={"findings": "右侧基底节区见高密度影。", "impression": impression},
    )
    assert r.status_code == 200, r.text
    assert other.put(
        f"/api/v1/studies/{stroke.study_uid}/report",
        json={"findings": "x", "impression": "y"},
    ).status_code in (403, 409)
    r = radiologist.post(
        f"/api/v1/studies/{stroke.study_uid}/report/sign",
        json={"status": "final", "no_critical_result_reason": "急诊医生在场，已当面告知"},
    )
    assert r.status_code == 200, r.text

    # the site's clinic gets it; the other site's clinic cannot see the study at all
    nurse = shared_pipeline.client("nurse_ts01")
    report = nurse.get(f"/api/v1/studies/{stroke.study_uid}/report")
    assert report.status_code == 200
    assert report.json()["impression"] == impression
    assert report.json()["status"] == "final"
    listed = nurse.get("/api/v1/reports").json()
    assert listed[0]["study_instance_uid"] == stroke.study_uid
    stranger = shared_pipeline.client("nurse_ts02")
    assert stranger.get(f"/api/v1/studies/{stroke.study_uid}/report").status_code == 404
    assert stranger.get(f"/api/v1/studies/{stroke.study_uid}").status_code == 404
    assert stranger.get("/api/v1/reports").json() == []


def test_unknown_calling_ae_is_rejected_until_its_site_is_added(
    shared_pipeline: Pipeline, demo: dict[str, Any]
) -> None:
    """A site added with `teleread sites add` while serve runs with acceptor processes is
    accepted within a second: the change is pushed to them, not polled."""
    status = subprocess.run(
        [*TELEREAD, "gateway", "status", "--spool-dir", str(shared_pipeline.data_dir / "spool")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "receiving: 2 acceptor processes" in status
    assert "fast path: fast" in status
    dr = demo["dr"]
    assert not _echo(shared_pipeline, "DR_TS09")
    refused = storescu(shared_pipeline, "DR_TS09", dr.directory)
    assert "Association Rejected" in refused.stderr + refused.stdout

    added = shared_pipeline.teleread(
        "sites", "add", "TS09", "--name", "九号镇卫生院", "--ae", "DR_TS09"
    )
    assert added.returncode == 0, added.stderr
    at = time.monotonic()
    assert _echo(shared_pipeline, "DR_TS09")
    assert time.monotonic() - at < 1.0
    assert "told the sites changed" in shared_pipeline.log_path.read_text(errors="replace")


def _echo(pipeline: Pipeline, calling_ae: str) -> bool:
    done = subprocess.run(
        ["echoscu", "-aet", calling_ae, "-aec", "TELEREAD", "127.0.0.1", str(pipeline.dicom_port)],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0


def _sop_uid(part10: bytes) -> str:
    from io import BytesIO

    from pydicom import dcmread

    return str(dcmread(BytesIO(part10), stop_before_pixels=True).SOPInstanceUID)
