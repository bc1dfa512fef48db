"""No squatting: a township reusing another site's study UID, and an instance of another
patient in an existing study, end up as conflicts an admin sees and decides; the original
study stays untouched and complete. dcmtk's storescu as the modalities, the real
`teleread serve` (gateway, object store, county API)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from tests.acceptance.conftest import Pipeline
from tests.acceptance.test_end_to_end import storescu, wait_for
from tests.dicom_factory import make_ct, part10_bytes

pytestmark = pytest.mark.dcmtk


def _write(folder: Path, datasets: list[Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for ds in datasets:
        (folder / f"{ds.SOPInstanceUID}.dcm").write_bytes(part10_bytes(ds))
    return folder


def test_squatted_study_uid_and_another_patient_are_held_for_an_admin(
    shared_pipeline: Pipeline, tmp_path: Path
) -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    patient = {"patient_id": "TS01-0042", "patient_name": "王^小明"}
    stroke = [
        make_ct(study_uid, series_uid=series_uid, instance_number=i, **patient) for i in (1, 2, 3)
    ]
    sent = storescu(shared_pipeline, "CT_TS01", _write(tmp_path / "stroke", stroke))
    assert sent.returncode == 0, sent.stderr
    reader, admin = shared_pipeline.client("dr_li"), shared_pipeline.client("admin")

    def study(uid: str) -> dict[str, Any]:
        r = reader.get(f"/api/v1/studies/{uid}")
        return r.json() if r.status_code == 200 else {}

    wait_for(lambda: study(study_uid).get("num_instances") == 3, timeout=60)
    before = study(study_uid)

    # TS02's CT reuses the UID; TS01's CT sends another patient into the same series
    squat_series = generate_uid()
    squats = [
        make_ct(
            study_uid,
            series_uid=squat_series,
            patient_id="TS02-0007",
            patient_name="李^四",
            instance_number=i,
        )
        for i in (1, 2)
    ]
    squat = squats[0]
    stray = make_ct(
        study_uid,
        series_uid=series_uid,
        patient_id="TS01-0999",
        patient_name="王^小明",
        instance_number=4,
    )
    said = {}
    for ae, folder, sent_ds in (("CT_TS02", "squat", squats), ("CT_TS01", "stray", [stray])):
        sent = storescu(shared_pipeline, ae, _write(tmp_path / folder, sent_ds))
        assert sent.returncode == 0, sent.stderr
        said[ae] = (sent.stdout + sent.stderr).count("Received Store Response (Warning")
    # the gateway saw TS01 send that study UID first: TS02's CT hears a warning, not success;
    # and it received the study's first instances: another patient is a warning too
    assert said == {"CT_TS02": 2, "CT_TS01": 1}, said

    def conflicts() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = admin.get("/api/v1/ingest-conflicts").json()
        return rows if len(rows) == 3 else None

    rows = {(c["kind"], c["sop_instance_uid"]): c for c in wait_for(conflicts, timeout=60)}
    squatted = rows["study_other_site", squat.SOPInstanceUID]
    mismatch = rows["patient_mismatch", stray.SOPInstanceUID]
    assert ("study_other_site", squats[1].SOPInstanceUID) in rows
    assert (squatted["site"], squatted["existing_site"]) == ("TS02", "TS01")
    assert squatted["sop_instance_uid"] == squat.SOPInstanceUID
    # a held stroke CT is on no worklist until decided: the admin sees that it is urgent
    assert (squatted["priority"], squatted["category"]) == ("stat", "stroke")
    assert (squatted["patient_id"], squatted["existing_patient_id"]) == ("TS02-0007", "TS01-0042")
    assert (mismatch["site"], mismatch["sop_instance_uid"]) == ("TS01", stray.SOPInstanceUID)
    assert (mismatch["patient_id"], mismatch["existing_patient_id"]) == ("TS01-0999", "TS01-0042")
    # the objects stay in storage
    for c in (squatted, mismatch):
        assert (shared_pipeline.data_dir / "objects" / c["object_key"]).exists(), c["object_key"]

    # the original study is untouched and complete, and on the worklist
    wait_for(lambda: study(study_uid).get("status") == "ready", timeout=60)
    after = study(study_uid)
    for name in ("num_instances", "site", "patient_id", "patient_name", "series", "priority"):
        assert after[name] == before[name], name
    assert after["num_instances"] == 3 and after["priority"] == "stat"
    listed = reader.get("/api/v1/worklist").json()
    assert study_uid in {i["study_instance_uid"] for i in listed}

    # the gateway lists both as conflicts, with what the county said
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "teleread.cli",
            "gateway",
            "status",
            "--spool-dir",
            str(shared_pipeline.data_dir / "spool"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"conflict: {squat.SOPInstanceUID} from CT_TS02" in status
    assert "county held it as a conflict: study_other_site" in status
    assert f"conflict: {stray.SOPInstanceUID} from CT_TS01" in status

    # the audit trail has both
    audited = admin.get("/api/v1/audit", params={"action": "ingest_conflict_held"}).json()
    assert {e["detail"]["sop_instance_uid"] for e in audited} == {
        *(ds.SOPInstanceUID for ds in squats),
        stray.SOPInstanceUID,
    }

    # one decision files TS02's clash (both instances) as a study of its own, at TS02
    r = admin.post(
        f"/api/v1/ingest-conflicts/{squatted['id']}/resolve", json={"resolution": "separate_study"}
    )
    assert r.status_code == 200, r.text
    decided = r.json()
    assert [c["sop_instance_uid"] for c in decided] == [ds.SOPInstanceUID for ds in squats]
    new_uid = decided[0]["resolved_study_uid"]
    assert {c["resolved_study_uid"] for c in decided} == {new_uid}
    refiled = study(new_uid)
    assert (refiled["site"], refiled["num_instances"], refiled["patient_id"]) == (
        "TS02",
        2,
        "TS02-0007",
    )
    nurse_ts01, nurse_ts02 = (
        shared_pipeline.client("nurse_ts01"),
        shared_pipeline.client("nurse_ts02"),
    )
    assert nurse_ts02.get(f"/api/v1/studies/{new_uid}").status_code == 200
    assert nurse_ts01.get(f"/api/v1/studies/{new_uid}").status_code == 404
    got = reader.get(f"/api/v1/studies/{new_uid}/instances/{squat.SOPInstanceUID}")
    assert got.status_code == 200
    assert study(study_uid)["num_instances"] == 3
    assert [c["kind"] for c in admin.get("/api/v1/ingest-conflicts").json()] == ["patient_mismatch"]
