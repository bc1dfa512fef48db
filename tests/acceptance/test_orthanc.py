"""Orthanc both ways, with Debian's Orthanc as the township's other DICOM nodes: an Orthanc
(the site's CT archive, AE ``CT_TS01``) pushes a study to the gateway by C-STORE, stored
byte-identical; the signed report's SR goes back by C-STORE to a second Orthanc configured as
the site's PACS (``teleread sites set-pacs``) on signing, retried while that PACS is
down, and is stored there once it is back. The real `teleread serve` (gateway, object store,
county API)."""

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

from teleread.embedded import DataDir, database_url
from tests.acceptance.conftest import Pipeline, free_port, running_pipeline
from tests.acceptance.test_end_to_end import wait_for
from tests.dicom_factory import make_ct, part10_bytes
from tests.integration.test_gateway_support import after_meta
from worklist import accounts
from worklist.db import make_engine, make_sessionmaker

pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(shutil.which("Orthanc") is None, reason="Orthanc not installed"),
]


class Orthanc:
    """An Orthanc on loopback ports, stopped and started again on the same ports and
    storage (``client``: REST on its HTTP port)."""

    def __init__(self, folder: Path, aet: str, modalities: dict[str, list[Any]]) -> None:
        folder.mkdir(parents=True)
        self.folder = folder
        self.dicom_port, http_port = free_port(), free_port()
        config = {
            "Name": aet,
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "DicomAet": aet,
            "DicomPort": self.dicom_port,
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
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.folder / "orthanc.log").open("ab") as log:
            self.proc = proc = subprocess.Popen(
                [str(shutil.which("Orthanc")), str(self.folder / "orthanc.json")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TCP_NODELAY": "1"},  # Debian's dcmtk leaves Nagle on
            )

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"Orthanc exited:\n{(self.folder / 'orthanc.log').read_text()}")
            try:
                return self.client.get("/system").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=30, interval=0.2)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@contextmanager
def orthanc(folder: Path, aet: str, modalities: dict[str, list[Any]]) -> Iterator[Orthanc]:
    node = Orthanc(folder, aet, modalities)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        node.client.close()


def set_pacs(pipeline: Pipeline, site: str, destination: str) -> None:
    """What ``teleread sites set-pacs`` does (tests/unit/test_gateway_sites.py runs that),
    without starting a second interpreter."""
    engine = make_engine(database_url(DataDir(pipeline.data_dir), None))
    try:
        with make_sessionmaker(engine).begin() as session:
            accounts.set_site_destination(session=session, code=site, destination=destination)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def township(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Pipeline, Orthanc, Orthanc]]:
    """(the pipeline, the CT archive Orthanc, the PACS Orthanc)."""
    root = tmp_path_factory.mktemp("orthanc")
    with orthanc(root / "pacs", "PACS_TS01", {}) as pacs:
        # a failed send is tried again after 1 s, 2 s, 4 s ... (5 s, 10 s ... by default)
        env = {"TELEREAD_API_SR_SEND_RETRY_SECONDS": "1"}
        with running_pipeline(tmp_path_factory, env=env) as pipeline:
            set_pacs(pipeline, "TS01", f"PACS_TS01@127.0.0.1:{pacs.dicom_port}")
            gateway = ["TELEREAD", "127.0.0.1", pipeline.dicom_port]
            with orthanc(root / "archive", "CT_TS01", {"teleread": gateway}) as archive:
                yield pipeline, archive, pacs


def test_orthanc_pushes_a_study_and_the_signed_sr_reaches_the_site_pacs(
    township: tuple[Pipeline, Orthanc, Orthanc],
) -> None:
    pipeline, archive_node, pacs_node = township
    archive, pacs = archive_node.client, pacs_node.client
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

    # the PACS is down when the report is signed: the send fails, is retried with back-off
    # (the report says so), and the SR arrives once the PACS is back
    pacs_node.stop()
    assert reader.post(f"/api/v1/worklist/{study_uid}/claim").status_code == 200
    report = {"findings": "双肺纹理清晰。", "impression": "胸部CT平扫未见异常。"}
    assert reader.put(f"{detail}/report", json=report).status_code == 200
    signed = reader.post(
        f"{detail}/report/sign",
        json={"status": "final", "no_critical_result_reason": "未见危急征象"},
    )
    assert signed.status_code == 200, signed.text

    def send_state() -> dict[str, Any]:
        state: dict[str, Any] = reader.get(f"{detail}/report").json()["sr_send"]
        return state

    wait_for(lambda: send_state()["attempts"] >= 1 and send_state()["last_error"], timeout=30)
    failing = send_state()
    assert failing["status"] == "pending" and "did not accept" in failing["last_error"]
    pacs_node.start()
    wait_for(lambda: send_state()["status"] == "sent", timeout=60, interval=0.5)
    sop = send_state()["sop_instance_uid"]

    found = pacs.post("/tools/find", json={"Level": "Instance", "Query": {"SOPInstanceUID": sop}})
    [instance_id] = found.json()
    tags = pacs.get(f"/instances/{instance_id}/simplified-tags").json()
    assert (tags["StudyInstanceUID"], tags["Modality"]) == (study_uid, "SR")
    assert "胸部CT平扫未见异常" in pacs.get(f"/instances/{instance_id}/file").content.decode(
        "utf-8", errors="replace"
    )
