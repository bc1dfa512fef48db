"""tests.dicom_factory: tiny valid datasets for other tests."""

from __future__ import annotations

import shutil
import subprocess
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.dicom_factory import make_ct, make_dx, part10_bytes, write


def test_make_ct_round_trips_with_gb18030_bytes(tmp_path: Path) -> None:
    ds = make_ct("1.2.3.4", study_description="头颅CT平扫", reason="卒中绿色通道")
    path = write(ds, tmp_path / "sub" / "ct.dcm")
    raw = path.read_bytes()
    assert "王^小明".encode("gb18030") in raw and "卒中绿色通道".encode("gb18030") in raw
    back = dcmread(path)
    assert back.StudyInstanceUID == "1.2.3.4"
    assert str(back.PatientName) == "王^小明"
    assert back.RequestAttributesSequence[0].ReasonForTheRequestedProcedure == "卒中绿色通道"
    assert back.pixel_array.shape == (64, 64)
    assert part10_bytes(ds) == raw


def test_make_dx_options_and_overrides() -> None:
    ds = make_dx(
        charset="ISO_IR 192",
        rows=40,
        cols=30,
        sop_uid="1.2.3.9",
        StationName="DR01",
        InstitutionName=None,
    )
    back = dcmread(BytesIO(part10_bytes(ds)))
    assert back.Modality == "DX" and back.SpecificCharacterSet == "ISO_IR 192"
    assert back.pixel_array.shape == (40, 30)
    assert back.StationName == "DR01" and "InstitutionName" not in back
    assert back.file_meta.MediaStorageSOPInstanceUID == "1.2.3.9"


def test_overriding_sop_uid_keeps_file_meta_in_step() -> None:
    ds = make_ct(SOPInstanceUID="1.2.3.77")
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.77"
    assert make_ct().SOPInstanceUID != make_ct().SOPInstanceUID


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_factory_files_pass_dciodvfy(tmp_path: Path) -> None:
    for ds in (make_ct(), make_dx()):
        path = write(ds, tmp_path / f"{ds.Modality}.dcm")
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        assert "Error" not in out.stdout + out.stderr, out.stderr
