"""A modality's corrected re-send (same SOP Instance UID, a fixed patient name) after the
study was read: with the default overwrite policy the correction is served (worklist, study,
DICOMweb metadata and the instance itself), the first version stays retrievable by an admin,
and the signed report is flagged, not changed. dcmtk's storescu as the modality, the real
`teleread serve` (gateway, object store, county API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from tests.acceptance.conftest import Pipeline
from tests.acceptance.test_end_to_end import storescu, wait_for
from tests.dicom_factory import make_ct, part10_bytes
from tests.integration.test_gateway_support import after_meta

pytestmark = pytest.mark.dcmtk


def _send(pipeline: Pipeline, folder: Path, datasets: list[Any]) -> list[bytes]:
    folder.mkdir(parents=True)
    files = []
    for ds in datasets:
        data = part10_bytes(ds)
        (folder / f"{ds.SOPInstanceUID}.dcm").write_bytes(data)
        files.append(data)
    sent = storescu(pipeline, "CT_TS01", folder)
    assert sent.returncode == 0, sent.stderr
    return files


def test_a_corrected_resend_is_served_and_the_first_kept_for_the_admin(
    shared_pipeline: Pipeline, tmp_path: Path
) -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    slices = [
        make_ct(
            study_uid,
            series_uid=series_uid,
            instance_number=i,
            patient_id="TS01-0100",
            patient_name="王^小明",
            study_description="胸部CT平扫",
        )
        for i in (1, 2)
    ]
    first, _ = _send(shared_pipeline, tmp_path / "first", slices)
    reader, admin = shared_pipeline.client("dr_li"), shared_pipeline.client("admin")
    detail = f"/api/v1/studies/{study_uid}"
    wait_for(lambda: reader.get(detail).json().get("num_instances") == 2, timeout=60)
    assert reader.post(f"/api/v1/worklist/{study_uid}/claim").status_code == 200
    report = {"findings": "双肺纹理清晰。", "impression": "胸部CT平扫未见异常。"}
    assert reader.put(f"{detail}/report", json=report).status_code == 200
    signed = reader.post(
        f"{detail}/report/sign",
        json={"status": "final", "no_critical_result_reason": "未见危急征象"},
    )
    assert signed.status_code == 200, signed.text

    corrected = slices[0]
    corrected.PatientName = "王^晓明"  # the registrar's typo, fixed at the modality
    [resent] = _send(shared_pipeline, tmp_path / "resent", [corrected])

    def updated() -> dict[str, Any] | None:
        body: dict[str, Any] = reader.get(detail).json()
        return body if body.get("updated_after_report_at") else None

    study = wait_for(updated, timeout=60)
    assert study["patient_name"] == "王晓明" and study["num_instances"] == 2
    assert reader.get(f"{detail}/report").json()["findings"] == report["findings"]  # unchanged
    sop = corrected.SOPInstanceUID
    wado = f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop}"
    [meta] = reader.get(f"{wado}/metadata").json()
    assert meta["00100010"]["Value"][0]["Alphabetic"] == "王^晓明"
    served = reader.get(f"{detail}/instances/{sop}")
    assert served.status_code == 200 and after_meta(served.content) == after_meta(resent)

    # the first version: listed and retrievable by an admin only
    assert reader.get(f"{detail}/versions").status_code == 403
    [kept] = admin.get(f"{detail}/versions").json()
    assert (kept["sop_instance_uid"], kept["status"]) == (sop, "superseded")
    assert "patient_name" in kept["changed"] and kept["calling_ae"] == "CT_TS01"
    old = admin.get(f"{detail}/versions/{kept['id']}")
    assert old.status_code == 200 and after_meta(old.content) == after_meta(first)
    actions = {e["action"] for e in admin.get(f"/api/v1/audit?object_id={study_uid}").json()}
    assert {"instance_replaced", "instance_version_retrieved"} <= actions
