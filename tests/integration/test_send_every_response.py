"""`teleread send` counts every C-STORE response over thousands of instances.

pynetdicom's own ``send_c_store`` loses about one response in a thousand (more under load)
to its reactor thread, then waits out the DIMSE timeout and aborts the association; this
sends enough tiny instances through one association to dcmtk's ``storescp`` to show it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from teleread.send import SUCCESS, send_paths
from tests.processes import free_port

INSTANCES = 2000
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(shutil.which("storescp") is None, reason="dcmtk's storescp is missing"),
]


def tiny_instances(folder: Path, count: int) -> None:
    """``count`` Part-10 files of a few hundred bytes, one template with its SOP Instance
    UID's last component (fixed width) rewritten per file."""
    root = generate_uid()[:50]
    first = 10**6  # a fixed-width component: 7 digits, no leading zero
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SECONDARY_CAPTURE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = f"{root}.{first}"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    template = folder / "template.dcm"
    ds.save_as(template, enforce_file_format=True)
    data = template.read_bytes()
    template.unlink()
    marker = f"{root}.{first}".encode()
    assert data.count(marker) == 2  # the file meta's copy and the dataset's
    for number in range(count):
        uid = f"{root}.{first + number}".encode()
        (folder / f"{number:05d}.dcm").write_bytes(data.replace(marker, uid))


def test_every_response_of_thousands_is_counted(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    tiny_instances(folder, INSTANCES)
    port = free_port()
    storescp = subprocess.Popen(
        ["storescp", "--ignore", "-aet", "SINK", str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        result = None
        while result is None or (result.errors and time.monotonic() < deadline):
            time.sleep(0.1)  # until storescp listens
            result = send_paths(
                [folder],
                host="127.0.0.1",
                port=port,
                called_aet="SINK",
                calling_aet="CT_TS01",
                dimse_timeout=10,
            )
    finally:
        storescp.terminate()
        storescp.wait(10)
    assert result.failed == 0, result.summary()[:2000]
    assert result.sent == INSTANCES and result.associations == 1
    assert all(f.status == SUCCESS for f in result.files)
