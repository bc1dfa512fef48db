"""Synthetic demo studies: a stroke head CT, a chest-pain aortic CTA, a routine chest DR and a
routine thoracic-spine CT, written as valid Part-10 files with Chinese text in the character
sets township machines really send (GB18030, UTF-8).

Everything is deterministic for a seed: UIDs come from ``generate_uid`` with seed-derived
entropy and the pixel noise from ``numpy.random.default_rng(seed)``. The dataset builders
(``ct_image``, ``dx_image``, ``write_part10``) are public so tests can make tiny files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from teleread.phantoms import (
    FloatGrid,
    chest_ct_slice,
    chest_radiograph,
    grid,
    head_slice,
    hu_to_stored,
)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
IMPLEMENTATION_VERSION = "TELEREAD_DEMO"
MANUFACTURER = "TeleRead Demo"


def demo_uid(seed: int, *parts: object) -> str:
    """A deterministic UID for (seed, parts), under pydicom's root for generated UIDs."""
    source = "|".join(["teleread-demo", str(seed), *(str(p) for p in parts)])
    return str(generate_uid(entropy_srcs=[source]))


@dataclass(frozen=True)
class StudyInfo:
    """Patient and study level attributes shared by every instance of a study."""

    study_uid: str
    charset: str
    patient_name: str
    patient_id: str
    patient_sex: str
    patient_birth_date: str
    patient_age: str
    description: str
    accession: str
    study_date: str
    study_time: str
    study_id: str = "1"
    institution: str = "某某镇卫生院"
    station: str = "TS01"
    referring_physician: str = ""
    requested_procedure: str = ""
    reason: str = ""
    body_part: str = ""
    protocol: str = ""


@dataclass(frozen=True)
class SeriesInfo:
    series_uid: str
    number: int
    description: str
    modality: str
    frame_of_reference_uid: str = ""


@dataclass
class DemoStudy:
    """What ``write_demo_studies`` wrote for one study."""

    key: str
    study_uid: str
    expected_category: str | None
    modality: str
    description: str
    charset: str
    patient_name: str
    directory: Path
    files: list[Path] = field(default_factory=list)


def _base(
    study: StudyInfo, series: SeriesInfo, sop_class: str, sop_uid: str, instance_number: int
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = study.charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = study.study_time
    ds.AccessionNumber = study.accession
    ds.Modality = series.modality
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = f"Synthetic {series.modality}"
    ds.DeviceSerialNumber = "0001"
    ds.SoftwareVersions = "1.0"
    ds.InstitutionName = study.institution
    ds.StationName = study.station
    ds.ReferringPhysicianName = study.referring_physician
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    ds.PatientAge = study.patient_age
    if study.body_part:
        ds.BodyPartExamined = study.body_part
    if study.protocol:
        ds.ProtocolName = study.protocol
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance_number
    if study.requested_procedure or study.reason:
        item = Dataset()
        item.RequestedProcedureID = study.accession
        item.ScheduledProcedureStepID = study.accession
        if study.requested_procedure:
            item.RequestedProcedureDescription = study.requested_procedure
        if study.reason:
            item.ReasonForTheRequestedProcedure = study.reason
        ds.RequestAttributesSequence = Sequence([item])
    return ds


def _pixels(ds: Dataset, pixels: np.ndarray, bits_stored: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(pixels).astype("<" + pixels.dtype.str[1:]).tobytes()
    ds["PixelData"].VR = "OW"


def ct_image(
    study: StudyInfo,
    series: SeriesInfo,
    *,
    sop_uid: str,
    instance_number: int,
    stored: np.ndarray,
    spacing_mm: float,
    thickness_mm: float,
    z_mm: float,
    window: tuple[int, int] = (40, 80),
    kernel: str = "STANDARD",
) -> Dataset:
    """One axial CT slice; ``stored`` is int16 with HU = stored - 1024."""
    ds = _base(study, series, CT_IMAGE_STORAGE, sop_uid, instance_number)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = series.frame_of_reference_uid or demo_uid(0, series.series_uid)
    ds.PositionReferenceIndicator = ""
    ds.ScanOptions = "HELICAL"
    ds.KVP = 120
    ds.XRayTubeCurrent = 250
    ds.ExposureTime = 1000
    ds.ConvolutionKernel = kernel
    ds.SliceThickness = thickness_mm
    ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    rows, cols = stored.shape
    x0, y0 = (round(-spacing_mm * (n - 1) / 2, 4) for n in (cols, rows))
    ds.ImagePositionPatient = [x0, y0, z_mm]
    ds.SliceLocation = z_mm
    _pixels(ds, stored, 16)
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = window
    return ds


def dx_image(
    study: StudyInfo,
    series: SeriesInfo,
    *,
    sop_uid: str,
    pixels: np.ndarray,
    pixel_spacing_mm: float,
    instance_number: int = 1,
) -> Dataset:
    """A PA chest radiograph, Digital X-Ray Image Storage - For Presentation (12-bit)."""
    ds = _base(study, series, DX_PRESENTATION_STORAGE, sop_uid, instance_number)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageLaterality = "U"
    ds.ViewPosition = "PA"
    ds.PositionerType = "COLUMN"
    view = Dataset()
    view.CodeValue = "399348003"
    view.CodingSchemeDesignator = "SCT"
    view.CodeMeaning = "postero-anterior"
    ds.ViewCodeSequence = Sequence([view])
    region = Dataset()
    region.CodeValue = "43799004"
    region.CodingSchemeDesignator = "SCT"
    region.CodeMeaning = "Chest"
    ds.AnatomicRegionSequence = Sequence([region])
    ds.AcquisitionContextSequence = Sequence([])
    ds.DetectorType = "SCINTILLATOR"
    ds.ImagerPixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.KVP = 125
    ds.ExposureInuAs = 2000
    ds.DistanceSourceToDetector = 1800
    _pixels(ds, pixels, 12)
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    return ds


def write_part10(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a Part-10 file (preamble, file meta with group length, dataset)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# --- the demo studies ------------------------------------------------------------------------


def _write_ct_series(
    outdir: Path,
    study: StudyInfo,
    series: SeriesInfo,
    *,
    seed: int,
    slices: int,
    size: int,
    fov_mm: float,
    thickness_mm: float,
    phantom: Callable[[FloatGrid, FloatGrid, float], np.ndarray],
    window: tuple[int, int],
    rng: np.random.Generator,
) -> list[Path]:
    spacing = round(fov_mm / size, 4)
    x, y = grid(size, size, spacing)
    files = []
    for i in range(slices):
        t = i / max(1, slices - 1)
        hu = phantom(x, y, t)
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * 4.0
        stored = hu_to_stored(hu)
        sop_uid = demo_uid(seed, study.accession, series.number, i)
        ds = ct_image(
            study,
            series,
            sop_uid=sop_uid,
            instance_number=i + 1,
            stored=stored,
            spacing_mm=spacing,
            thickness_mm=thickness_mm,
            z_mm=round(i * thickness_mm, 2),
            window=window,
        )
        files.append(write_part10(ds, outdir / f"CT{i + 1:04d}.dcm"))
    return files


def _study(seed: int, n: int, **kw: str) -> StudyInfo:
    accession = f"A{seed % 100000:05d}{n:02d}"
    kw.setdefault("patient_id", f"P{seed % 100000:05d}{n:02d}")
    return StudyInfo(
        study_uid=demo_uid(seed, accession, "study"), accession=accession, study_id=str(n), **kw
    )


def _series(
    seed: int, study: StudyInfo, number: int, description: str, modality: str
) -> SeriesInfo:
    return SeriesInfo(
        series_uid=demo_uid(seed, study.accession, "series", number),
        number=number,
        description=description,
        modality=modality,
        frame_of_reference_uid=demo_uid(seed, study.accession, "for", number),
    )


def write_demo_studies(
    outdir: Path, *, seed: int = 0, ct_slices: int = 40, ct_size: int = 512, dx_size: int = 1024
) -> list[DemoStudy]:
    """Write the four demo studies under ``outdir`` (one folder each) and describe them."""
    outdir = Path(outdir)
    rng = np.random.default_rng(seed)
    date = "20261125"
    studies: list[DemoStudy] = []

    def record(
        key: str, info: StudyInfo, category: str | None, modality: str, files: list[Path]
    ) -> None:
        studies.append(
            DemoStudy(
                key=key,
                study_uid=info.study_uid,
                expected_category=category,
                modality=modality,
                description=info.description,
                charset=info.charset,
                patient_name=info.patient_name,
                directory=outdir / key,
                files=files,
            )
        )

    stroke = _study(
        seed,
        1,
        charset="GB18030",
        patient_name="王^小明",
        patient_sex="M",
        patient_birth_date="19580312",
        patient_age="068Y",
        description="头颅CT平扫 急性脑卒中",
        study_date=date,
        study_time="083015",
        requested_procedure="头颅CT平扫",
        reason="突发左侧肢体无力2小时 卒中绿色通道",
        body_part="HEAD",
        protocol="HEAD STROKE",
        referring_physician="赵^医生",
    )
    files = _write_ct_series(
        outdir / "01_stroke_head_ct",
        stroke,
        _series(seed, stroke, 2, "头颅 5mm 平扫", "CT"),
        seed=seed,
        slices=ct_slices,
        size=ct_size,
        fov_mm=250.0,
        thickness_mm=5.0,
        phantom=lambda x, y, t: head_slice(x, y, t, bleed=True),
        window=(40, 80),
        rng=rng,
    )
    record("01_stroke_head_ct", stroke, "stroke", "CT", files)

    cta = _study(
        seed,
        2,
        charset="ISO_IR 192",
        patient_name="李^建国",
        patient_sex="M",
        patient_birth_date="19650704",
        patient_age="061Y",
        description="主动脉CTA 胸痛 撕裂样胸背痛",
        study_date=date,
        study_time="091200",
        requested_procedure="胸腹主动脉CTA",
        reason="突发撕裂样胸背痛1小时 胸痛中心",
        body_part="CHEST",
        protocol="AORTA CTA",
    )
    files = _write_ct_series(
        outdir / "02_chest_pain_cta",
        cta,
        _series(seed, cta, 3, "CTA 1.25mm", "CT"),
        seed=seed,
        slices=max(1, ct_slices // 2),
        size=ct_size,
        fov_mm=360.0,
        thickness_mm=1.25,
        phantom=lambda x, y, t: chest_ct_slice(x, y, t, contrast=True),
        window=(300, 700),
        rng=rng,
    )
    record("02_chest_pain_cta", cta, "chest_pain", "CT", files)

    dr = _study(
        seed,
        3,
        charset="GB18030",
        patient_name="张^丽",
        patient_sex="F",
        patient_birth_date="19790920",
        patient_age="047Y",
        description="胸部正位 体检",
        study_date=date,
        study_time="100512",
        requested_procedure="胸部正位片",
        reason="健康体检",
        body_part="CHEST",
        protocol="CHEST PA",
    )
    dr_series = _series(seed, dr, 1, "胸部 后前位", "DX")
    ds = dx_image(
        dr,
        dr_series,
        sop_uid=demo_uid(seed, dr.accession, 1, 0),
        pixels=chest_radiograph(dx_size, dx_size, rng),
        pixel_spacing_mm=round(430.0 / dx_size, 4),
    )
    record(
        "03_routine_chest_dr",
        dr,
        None,
        "DX",
        [write_part10(ds, outdir / "03_routine_chest_dr" / "DX0001.dcm")],
    )

    spine = _study(
        seed,
        4,
        charset="GB18030",
        patient_name="陈^志强",
        patient_sex="M",
        patient_birth_date="19700101",
        patient_age="056Y",
        description="胸椎CT 复查",
        study_date=date,
        study_time="103340",
        requested_procedure="胸椎CT平扫",
        reason="胸椎压缩性骨折术后复查",
        body_part="TSPINE",
        protocol="T-SPINE",
    )
    files = _write_ct_series(
        outdir / "04_routine_tspine_ct",
        spine,
        _series(seed, spine, 2, "胸椎 骨窗", "CT"),
        seed=seed,
        slices=max(1, ct_slices // 4),
        size=ct_size,
        fov_mm=360.0,
        thickness_mm=2.0,
        phantom=lambda x, y, t: chest_ct_slice(x, y, t, contrast=False),
        window=(500, 2000),
        rng=rng,
    )
    record("04_routine_tspine_ct", spine, None, "CT", files)
    return studies
