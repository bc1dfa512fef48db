"""Synthetic demo studies: valid Part-10 files, real GB18030/UTF-8 bytes, deterministic."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian

from teleread.demo import DemoStudy, write_demo_studies
from teleread.dicom_builders import CT_IMAGE_STORAGE, DX_PRESENTATION_STORAGE
from worklist.triage import triage_dataset

SMALL = {"ct_slices": 8, "ct_size": 128, "dx_size": 128}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> list[DemoStudy]:
    return write_demo_studies(tmp_path_factory.mktemp("demo"), seed=3, **SMALL)


def by_key(studies: list[DemoStudy], prefix: str) -> DemoStudy:
    return next(s for s in studies if s.key.startswith(prefix))


def test_four_cases_with_expected_categories(demo: list[DemoStudy]) -> None:
    assert [(s.modality, s.expected_category) for s in demo] == [
        ("CT", "stroke"),
        ("CT", "chest_pain"),
        ("DX", None),
        ("CT", None),
    ]
    assert [len(s.files) for s in demo] == [8, 4, 1, 2]
    assert len({s.study_uid for s in demo}) == 4
    for s in demo:
        assert s.files and all(f.parent == s.directory for f in s.files)


def test_every_file_is_valid_part10(demo: list[DemoStudy]) -> None:
    sop_uids: set[str] = set()
    for study in demo:
        series_uids = set()
        for path in study.files:
            raw = path.read_bytes()
            assert raw[128:132] == b"DICM"
            ds = dcmread(path)
            meta = ds.file_meta
            assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
            assert "FileMetaInformationGroupLength" in meta
            for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
                assert UID(uid).is_valid, uid
            assert ds.StudyInstanceUID == study.study_uid
            assert ds.Modality == study.modality
            assert ds.StudyDescription == study.description
            assert ds.AccessionNumber and ds.PatientID and ds.PatientSex in ("M", "F")
            assert ds.PatientBirthDate and ds.StudyDate and ds.StudyTime
            series_uids.add(ds.SeriesInstanceUID)
            sop_uids.add(ds.SOPInstanceUID)
            assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
            if study.modality == "CT":
                assert ds.SOPClassUID == CT_IMAGE_STORAGE
                assert ds.Rows == ds.Columns == 128
                assert ds.pixel_array.dtype == np.int16
                assert (ds.RescaleIntercept, ds.RescaleSlope) == (-1024, 1)
                assert len(ds.ImagePositionPatient) == 3 and len(ds.PixelSpacing) == 2
                assert ds.ImageOrientationPatient == [1, 0, 0, 0, 1, 0]
                assert float(ds.SliceThickness) > 0
            else:
                assert ds.SOPClassUID == DX_PRESENTATION_STORAGE
                assert ds.PresentationIntentType == "FOR PRESENTATION"
                assert ds.PhotometricInterpretation == "MONOCHROME2"
                assert ds.pixel_array.dtype == np.uint16
        assert len(series_uids) == 1
    assert len(sop_uids) == sum(len(s.files) for s in demo)


def test_stroke_text_is_really_gb18030(demo: list[DemoStudy]) -> None:
    stroke = by_key(demo, "01")
    path = stroke.files[0]
    raw = path.read_bytes()
    name = "王^小明".encode("gb18030")
    assert name in raw and "王^小明".encode() not in raw
    for text in ("头颅CT平扫 急性脑卒中", "突发左侧肢体无力2小时 卒中绿色通道", "某某镇卫生院"):
        assert text.encode("gb18030") in raw

    ds = dcmread(path, stop_before_pixels=True)
    assert ds.SpecificCharacterSet == "GB18030"
    raw_name = ds.get_item("PatientName").value  # not yet decoded by pydicom
    assert isinstance(raw_name, bytes)
    assert raw_name.rstrip(b" ") == name
    assert raw_name.decode("gb18030").rstrip() == "王^小明"
    assert str(ds.PatientName) == "王^小明"
    assert ds.PatientName.family_name == "王" and ds.PatientName.given_name == "小明"
    request = ds.RequestAttributesSequence[0]
    assert request.ReasonForTheRequestedProcedure == "突发左侧肢体无力2小时 卒中绿色通道"
    assert (ds.ProtocolName, ds.BodyPartExamined) == ("HEAD STROKE", "HEAD")
    assert (ds.WindowCenter, ds.WindowWidth) == (40, 80)


def test_chest_pain_cta_is_utf8_and_dr_is_gb18030(demo: list[DemoStudy]) -> None:
    cta = by_key(demo, "02").files[0]
    ds = dcmread(cta, stop_before_pixels=True)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert "主动脉CTA 胸痛 撕裂样胸背痛".encode() in cta.read_bytes()
    assert ds.StudyDescription == "主动脉CTA 胸痛 撕裂样胸背痛"

    dr = by_key(demo, "03").files[0]
    ds = dcmread(dr, stop_before_pixels=True)
    assert ds.SpecificCharacterSet == "GB18030"
    assert "胸部正位 体检".encode("gb18030") in dr.read_bytes()


def test_head_phantom_has_skull_brain_and_bleed(demo: list[DemoStudy]) -> None:
    stroke = by_key(demo, "01")
    ds = dcmread(stroke.files[3])  # t = 3/7: ventricles and bleed level
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert hu.min() < -900  # air
    assert (hu > 900).mean() > 0.01  # skull
    centre = hu[54:74, 54:74]
    assert 15 < float(np.median(centre)) < 45  # brain
    # the bleed is on the patient's right = image left of centre
    assert (hu[:, :64] > 55).sum() > 50
    assert (hu[:, 64:][(hu[:, 64:] > 55) & (hu[:, 64:] < 200)]).size < 10


def test_expected_categories_agree_with_triage(demo: list[DemoStudy]) -> None:
    for study in demo:
        result = triage_dataset(dcmread(study.files[0], stop_before_pixels=True))
        assert result.category == study.expected_category, (study.key, result)
        assert (result.priority == "stat") == (study.expected_category is not None)


def test_same_seed_same_bytes_other_seed_other_uids(tmp_path: Path) -> None:
    a = write_demo_studies(tmp_path / "a", seed=11, **SMALL)
    b = write_demo_studies(tmp_path / "b", seed=11, **SMALL)
    c = write_demo_studies(tmp_path / "c", seed=12, **SMALL)
    for sa, sb in zip(a, b, strict=True):
        assert sa.study_uid == sb.study_uid
        for fa, fb in zip(sa.files, sb.files, strict=True):
            assert fa.read_bytes() == fb.read_bytes()
    assert not {s.study_uid for s in a} & {s.study_uid for s in c}


def test_default_size_is_fast(tmp_path: Path) -> None:
    started = time.perf_counter()
    studies = write_demo_studies(tmp_path, seed=0)
    elapsed = time.perf_counter() - started
    stroke = studies[0]
    assert len(stroke.files) == 40
    ds = dcmread(stroke.files[20], stop_before_pixels=True)
    assert (ds.Rows, ds.Columns) == (512, 512)
    assert stroke.files[0].stat().st_size > 512 * 512 * 2
    assert elapsed < 10, f"demo studies took {elapsed:.2f} s"  # about 0.6 s here


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_dciodvfy_finds_no_errors(demo: list[DemoStudy]) -> None:
    for study in demo:
        out = subprocess.run(
            ["dciodvfy", str(study.files[0])], capture_output=True, text=True, check=False
        )
        report = out.stdout + out.stderr
        assert "Error" not in report and "Warning" not in report, (study.key, report)
