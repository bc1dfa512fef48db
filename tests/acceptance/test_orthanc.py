"""Orthanc both ways, with Debian's Orthanc as the township's other DICOM nodes: an Orthanc
(the site's CT archive, AE ``CT_TS01``) pushes a study to the gateway by C-STORE, stored
byte-identical; the signed report's SR goes back by C-STORE to a second Orthanc configured as
the site's PACS (``TELEREAD_API_SR_DESTINATIONS``) and is stored there. The real `teleread
serve` (gateway, object store, county API)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.acceptance.conftest import Pipeline, free_port, running_pipeline
from tests.acceptance.test_end_to_end import wait_for
from tests.dicom_factory import make_ct, part10_bytes
from tests.integration.test_gateway_support import after_meta

pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(shutil.which("Orthanc") is None, reason="Orthanc not installed"),
]


@contextmanager
def orthanc(folder: Path, aet: str, modalities: dict[str, list[Any]]) -> Iterator[httpx.Client]:
    """An Orthanc on loopback ports (REST client on its HTTP port; ``.dicom_port`` set)."""
    folder.mkdir(parents=True)
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": aet,
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,  # it has no bind address: keep it to loopback use
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomModalities": modalities,
        "Plugins": [],
        "SaveJobs": False,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    with (folder / "orthanc.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(shutil.which("Orthanc")), str(folder / "orthanc.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},  # Debian's dcmtk otherwise leaves Nagle on
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
    client.dicom_port = dicom_port  # type: ignore[attr-defined]
    try:

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"Orthanc exited:\n{(folder / 'orthanc.log').read_text()}")
            try:
                return client.get("/system").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=30, interval=0.2)
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def township(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Pipeline, httpx.Client, httpx.Client]]:
    """(the pipeline, the CT archive Orthanc, the PACS Orthanc)."""
    root = tmp_path_factory.mktemp("orthanc")
    with orthanc(root / "pacs", "PACS_TS01", {}) as pacs:
        destination = {"TS01": f"PACS_TS01@127.0.0.1:{pacs.dicom_port}"}  # type: ignore[attr-defined]
        env = {"TELEREAD_API_SR_DESTINATIONS": json.dumps(destination)}
        with running_pipeline(tmp_path_factory, env=env) as pipeline:
            gateway = ["TELEREAD", "127.0.0.1", pipeline.dicom_port]
            with orthanc(root / "archive", "CT_TS01", {"teleread": gateway}) as archive:
                yield pipeline, archive, pacs


def test_orthanc_pushes_a_study_and_the_signed_sr_reaches_the_site_pacs(
    township: tuple[Pipeline, httpx.Client, httpx.Client],
) -> None:
    pipeline, archive, pacs = township
    study_uid, series_uid = generate_uid(), generate_uid()
    slices = [
        make_ct(
            study_uid,
            series_uid=series_uid,
            instance_number=i,
            study_description="胸部CT平扫",
            patient_id="TS01-0200",
        )
        for i in (1, 2, 3)
    ]
    files = {ds.SOPInstanceUID: part10_bytes(ds) for ds in slices}
    for data in files.values():
        assert archive.post("/instances", content=data).status_code == 200
    [orthanc_study] = archive.get("/studies").json()
    pushed = archive.post("/modalities/teleread/store", content=orthanc_study, timeout=60)
    assert pushed.status_code == 200, pushed.text

    reader = pipeline.client("dr_li")
    detail = f"/api/v1/studies/{study_uid}"
    wait_for(lambda: reader.get(detail).json().get("num_instances") == 3, timeout=60)
    assert reader.get(detail).json()["calling_ae"] == "CT_TS01"
    for sop, data in files.items():
        got = reader.get(f"{detail}/instances/{sop}")
        assert got.status_code == 200 and after_meta(got.content) == after_meta(data), sop

    assert reader.post(f"/api/v1/worklist/{study_uid}/claim").status_code == 200
    report = {"findings": "双肺纹理清晰。", "impression": "胸部CT平扫未见异常。"}
    assert reader.put(f"{detail}/report", json=report).status_code == 200
    signed = reader.post(
        f"{detail}/report/sign",
        json={"status": "final", "no_critical_result_reason": "未见危急征象"},
    )
    assert signed.status_code == 200, signed.text
    sr = reader.post(f"{detail}/report/sr?send=true")
    assert sr.status_code == 201, sr.text
    assert sr.json()["sent"] is True, sr.json()
    sop = sr.json()["sop_instance_uid"]

    found = pacs.post("/tools/find", json={"Level": "Instance", "Query": {"SOPInstanceUID": sop}})
    [instance_id] = found.json()
    tags = pacs.get(f"/instances/{instance_id}/simplified-tags").json()
    assert (tags["StudyInstanceUID"], tags["Modality"]) == (study_uid, "SR")
    assert "胸部CT平扫未见异常" in pacs.get(f"/instances/{instance_id}/file").content.decode(
        "utf-8", errors="replace"
    )
